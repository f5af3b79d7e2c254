"""Janus's Admin API, for tests that must see what Janus holds: the gateway starts it with `[Janus] admin_api = yes`
on a Unix socket in its runtime folder, with the secret in a file beside it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from websockets.sync.client import unix_connect


class JanusAdmin:
    def __init__(self, runtime_dir: Path, member: str = "janus") -> None:
        """The Admin API of the Janus in `runtime_dir`/`member` (a pool's others: janus2, janus3, ...)."""
        self.folder = runtime_dir / member

    def request(self, kind: str, timeout: float = 5, **fields: Any) -> dict[str, Any]:
        secret = (self.folder / "admin_secret").read_text().strip()
        transaction = secrets.token_hex(8)
        with unix_connect(str(self.folder / "admin.sock"), subprotocols=["janus-admin-protocol"],
                          open_timeout=timeout, close_timeout=1) as admin:
            admin.send(json.dumps({"janus": kind, "transaction": transaction, "admin_secret": secret, **fields},
                                  separators=(",", ":")))
            while True:
                answer = json.loads(admin.recv(timeout=timeout))
                if answer.get("transaction") == transaction:
                    return answer

    def sessions(self) -> list[int]:
        return list(self.request("list_sessions").get("sessions") or [])

    def handles(self, session: int) -> list[int]:
        return list(self.request("list_handles", session_id=session).get("handles") or [])

    def identities(self) -> set[str]:
        """The SIP identities of every SIP-plugin handle in this Janus (sip:user@domain)."""
        found = set()
        for session in self.sessions():
            for handle in self.handles(session):
                info = self.request("handle_info", session_id=session, handle_id=handle).get("info") or {}
                identity = (info.get("plugin_specific") or {}).get("identity")
                if identity:
                    found.add(identity)
        return found
