"""Backend-neutral SIP values passed across ISIPBackend."""

from __future__ import annotations

from dataclasses import dataclass

from sylk.gateway.config import SIPProxy


@dataclass(frozen=True)
class SIPIdentity:
    """Who an account is in SIP: its address of record and digest credentials."""

    aor: str  # user@domain, already validated and normalised
    ha1: str  # md5(user:realm:password), used as the digest credential
    display_name: str | None = None
    user_agent: str | None = None

    @property
    def user(self) -> str:
        return self.aor.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.aor.rpartition("@")[2]


@dataclass(frozen=True)
class Registration:
    """How to register: for how long and by which route (None: the account's domain, located per RFC 3263)."""

    ttl: int
    route: SIPProxy | None = None
