"""Backend-neutral SIP values passed across ISIPBackend."""

from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class SIPIdentity:
    """Who an account is in SIP: its address of record and digest credentials."""

    aor: str  # user@domain, already validated and normalised
    ha1: str  # md5(user:realm:password), used as the digest credential
    display_name: str | None = None
    user_agent: str | None = None
    incoming_header_prefixes: tuple[str, ...] = ()  # incoming headers whose names start so are passed up
    answers_reinvites: bool = True  # the browser answers the far end's re-INVITEs; else the backend accepts them

    @property
    def user(self) -> str:
        return self.aor.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.aor.rpartition("@")[2]


@dataclass(frozen=True)
class Originator:
    """Who is calling: a SIP address (bare, user@domain) and the display name they gave, if any."""

    uri: str
    display_name: str | None = None


@dataclass(frozen=True)
class Registration:
    """How to register: for how long (the route is the backend's setting, as it is for calls)."""

    ttl: int
    contact_params: tuple[tuple[str, str], ...] = ()  # added to the Contact (push parameters, RFC 8599)
