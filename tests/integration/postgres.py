"""A throwaway PostgreSQL cluster (Debian's postgresql) for tests: initdb in a temporary folder, listening on a
Unix socket in that folder only (no TCP at all), run as the `postgres` user when the tests run as root (PostgreSQL
refuses root). Every wait is bounded, and stop() leaves nothing behind."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

STARTUP_TIMEOUT = 30


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is missing (Debian package postgresql; make test installs it)")
    return Path(found[-1]).parent


class PostgreSQL:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.folder = Path(tempfile.mkdtemp(prefix="sylkgateway-pg-"))  # short: the socket path must fit 107 bytes
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self._user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"host={self.folder} user=postgres dbname=postgres"

    def _run(self, *command: str, timeout: float = STARTUP_TIMEOUT) -> None:
        done = subprocess.run([*self._user, *command], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}{log}")

    def start(self) -> PostgreSQL:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t",
                  str(STARTUP_TIMEOUT), "-o", f"-c listen_addresses='' -k {self.folder} -F", "start",
                  timeout=STARTUP_TIMEOUT + 5)
        return self

    def reset(self) -> None:
        """An empty database: what a previous test left is dropped."""
        import psycopg2
        connection = psycopg2.connect(self.dsn)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("DROP SCHEMA public CASCADE")
                cursor.execute("CREATE SCHEMA public")
        finally:
            connection.close()

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "20",
                          "stop", timeout=25)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
