#!/usr/bin/env python3
"""Subscriber accounts for the demo/test Kamailio registrar (demo/kamailio/kamailio.cfg).

Kamailio reads them from a db_text directory: a `version` file and a `subscriber` file. Only the HA1 digest,
md5(user:realm:password), is stored; the plaintext password column stays empty (NULL), and Kamailio is configured
with calculate_ha1=0 so it uses the HA1 column as is.

    python3 demo/kamailio/subscribers.py DBDIR REALM user:password [user:password ...]

Standard library only: this runs before the project's virtualenv exists.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

DEMO_DOMAIN = "sylk.test"
DEMO_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}

# Table versions Kamailio 5.6 expects (checked at startup by auth_db; usrloc keeps its data in memory).
_TABLE_VERSIONS = {"subscriber": 7, "location": 9}

# Column declarations of the db_text `subscriber` table. Columns that may be empty must be declared `null`.
_SUBSCRIBER_HEADER = "id(int,auto) username(string) domain(string) password(string,null) ha1(string) ha1b(string,null)"


def ha1(user: str, realm: str, password: str) -> str:
    """The digest HA1 of an account: md5 of `user:realm:password`, as lowercase hex."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode("utf-8")).hexdigest()


def _escape(value: str) -> str:
    # db_text separates fields with ':'; a literal ':' (or '\') inside a value has to be escaped.
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _check_name(kind: str, value: str) -> None:
    if not value or any(c in value for c in "\r\n") or value != value.strip():
        raise ValueError(f"bad {kind}: {value!r}")


def write_subscribers(db_dir: Path, realm: str, users: dict[str, str]) -> None:
    """Write the db_text `version` and `subscriber` files for `users` ({user: password}) into `db_dir`.

    The subscriber's domain is the realm (the demo uses one domain, and its realm is the domain name).
    """
    _check_name("realm", realm)
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    versions = ["table_name(string) table_version(int)"]
    versions += [f"{table}:{version}" for table, version in _TABLE_VERSIONS.items()]
    rows = [_SUBSCRIBER_HEADER]
    for number, (user, password) in enumerate(users.items(), start=1):
        _check_name("user name", user)
        if any(c in password for c in "\r\n"):
            raise ValueError(f"bad password for {user!r}")
        # ha1b is the variant some clients use with user@domain as the user name.
        fields = [str(number), _escape(user), _escape(realm), "",
                  ha1(user, realm, password), ha1(f"{user}@{realm}", realm, password)]
        rows.append(":".join(fields))
    (db_dir / "version").write_text("\n".join(versions) + "\n", encoding="utf-8")
    (db_dir / "subscriber").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _parse_user(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise ValueError(f"expected user:password, got {text!r}")
    return user, password


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(f"usage: {Path(sys.argv[0]).name} DBDIR REALM user:password [user:password ...]", file=sys.stderr)
        return 2
    db_dir, realm, specs = Path(argv[0]), argv[1], argv[2:]
    try:
        users = dict(_parse_user(spec) for spec in specs)
        write_subscribers(db_dir, realm, users)
    except (ValueError, OSError) as e:
        print(f"subscribers.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
