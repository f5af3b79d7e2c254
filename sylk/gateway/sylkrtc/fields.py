"""A small declarative schema for sylkRTC messages, in the spirit of SylkServer's jsonobjects.

A `Model` subclass lists its fields as class attributes; `Model.parse(message)` checks a decoded JSON object against
them and returns an instance, or raises `ValidationError` with a message that names the field. Unknown keys are
ignored, as in SylkServer, so newer clients can add fields.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar, Mapping


class ValidationError(ValueError):
    """A message does not match its schema; the text is sent to the client as the error reason."""


_MISSING = object()


class Field:
    """One field of a model. Subclasses override `convert` to check and normalise a value."""

    def __init__(self, *, optional: bool = False, default: Any = None) -> None:
        self.optional = optional
        self.default = default
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def convert(self, value: Any) -> Any:
        return value


class String(Field):
    def __init__(self, *, max_length: int = 1024, allow_empty: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.allow_empty = allow_empty

    def convert(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError(f"must be a string, not {_json_type(value)}")
        if not value and not self.allow_empty:
            raise ValidationError("must not be empty")
        if len(value) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters long")
        return value


class Boolean(Field):
    def convert(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"must be true or false, not {_json_type(value)}")
        return value


class Integer(Field):
    def __init__(self, *, low: int, high: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.low, self.high = low, high

    def convert(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError(f"must be a whole number, not {_json_type(value)}")
        if not self.low <= value <= self.high:
            raise ValidationError(f"must be from {self.low} to {self.high}")
        return value


class Choice(String):
    """One of a few words."""

    def __init__(self, values: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(max_length=max(map(len, values)), **kwargs)
        self.values = values

    def convert(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.values:
            raise ValidationError(f"must be one of {', '.join(self.values)}")
        return value


class ContentType(String):
    """A MIME type, `type/subtype` with optional parameters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=128, **kwargs)

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        if not re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;[^\r\n]*)?", value):
            raise ValidationError("must be a MIME type such as text/plain")
        return value


class Tones(String):
    """DTMF tones: 0-9, *, #, A-D (case-insensitive; normalised to upper case)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=64, **kwargs)

    def convert(self, value: Any) -> str:
        value = super().convert(value).upper()
        if not re.fullmatch(r"[0-9*#A-D]+", value):
            raise ValidationError("must be DTMF tones: 0-9, *, #, A-D")
        return value


class HA1(String):
    """An MD5 digest of user:realm:password as 32 hex digits; the password itself never reaches the gateway."""

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        if not re.fullmatch(r"[0-9a-fA-F]{32}", value):
            raise ValidationError("must be an HA1 digest (32 hexadecimal digits), not a plain password")
        return value.lower()


class AOR(String):
    """A SIP address of record: `user@domain`, optionally with a `sip:` or `sips:` scheme; normalised to `user@domain`."""

    _USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+")
    _DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
                         r"|\[[0-9A-Fa-f:.]+\]")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=512, **kwargs)

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        bare = re.sub(r"^sips?:", "", value, flags=re.IGNORECASE)
        user, at, domain = bare.rpartition("@")
        if not at or not self._USER.fullmatch(user) or not self._DOMAIN.fullmatch(domain) or \
                (domain.startswith("[") and not _is_ipv6(domain[1:-1])):
            raise ValidationError(f"must be a SIP address like user@domain, not {value!r:.80}")
        return f"{user}@{domain.lower()}"


class Candidates(Field):
    """ICE candidates as browsers produce them: [{candidate, sdpMid, sdpMLineIndex}], normalised to dicts with just
    those keys (other keys, such as usernameFragment, are dropped). An empty list means end of candidates."""

    def __init__(self, *, max_items: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_items = max_items

    def convert(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise ValidationError(f"must be an array, not {_json_type(value)}")
        if len(value) > self.max_items:
            raise ValidationError(f"must have at most {self.max_items} items")
        return [self._candidate(index, item) for index, item in enumerate(value)]

    @staticmethod
    def _candidate(index: int, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ValidationError(f"item {index} must be an object, not {_json_type(item)}")
        candidate, mid, line = item.get("candidate"), item.get("sdpMid"), item.get("sdpMLineIndex")
        if not isinstance(candidate, str) or len(candidate) > 1024:
            raise ValidationError(f"item {index} needs a 'candidate' string")
        if mid is not None and not (isinstance(mid, str) and len(mid) <= 64):
            raise ValidationError(f"item {index}: 'sdpMid' must be a string or null")
        if line is not None and not (isinstance(line, int) and not isinstance(line, bool) and 0 <= line < 1024):
            raise ValidationError(f"item {index}: 'sdpMLineIndex' must be a small number or null")
        if mid is None and line is None:
            raise ValidationError(f"item {index} needs 'sdpMid' or 'sdpMLineIndex'")
        return {"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": line}


class Headers(Field):
    """Custom SIP headers as sylkRTC-2 sends them: [{name, value}], normalised to {name: value}. Names are SIP
    tokens, values one line; the headers that make up the SIP dialog itself cannot be set."""

    _TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
    RESERVED = frozenset(name.lower() for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Length", "Content-Type",
        "Route", "Record-Route", "Authorization", "Proxy-Authorization", "Expires", "Allow", "Supported",
        "Require", "User-Agent"))

    def convert(self, value: Any) -> dict[str, str]:
        if not isinstance(value, list):
            raise ValidationError(f"must be an array, not {_json_type(value)}")
        if len(value) > 16:
            raise ValidationError("must have at most 16 headers")
        headers: dict[str, str] = {}
        for index, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) else None
            text = item.get("value") if isinstance(item, dict) else None
            if not isinstance(name, str) or not self._TOKEN.fullmatch(name) or len(name) > 64:
                raise ValidationError(f"item {index} needs a header 'name' (a SIP token)")
            if name.lower() in self.RESERVED:
                raise ValidationError(f"item {index}: {name} cannot be set")
            if not isinstance(text, str) or len(text) > 255 or "\r" in text or "\n" in text:
                raise ValidationError(f"item {index} needs a one-line 'value' of at most 255 characters")
            headers[name] = text
        return headers


class StringList(Field):
    """A short list of distinct non-empty strings."""

    def convert(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) and 0 < len(item) <= 64 for item in value):
            raise ValidationError("must be an array of non-empty strings")
        if len(value) > 16 or len(set(value)) != len(value):
            raise ValidationError("must have at most 16 items, each once")
        return tuple(value)


class Model:
    """Base of requests and events: fields declared as class attributes, values as instance attributes."""

    _fields: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inherited = {}
        for base in reversed(cls.__mro__[1:]):
            inherited.update(getattr(base, "_fields", {}))
        inherited.update({name: value for name, value in vars(cls).items() if isinstance(value, Field)})
        cls._fields = inherited

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no fields {sorted(unknown)}")
        for name, spec in self._fields.items():
            setattr(self, name, values.get(name, spec.default))

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> Any:
        values = {}
        for name, spec in cls._fields.items():
            raw = message.get(name, _MISSING)
            if raw is _MISSING or (raw is None and spec.optional):
                if not spec.optional:
                    raise ValidationError(f"missing mandatory field {name!r}")
                continue
            try:
                values[name] = spec.convert(raw)
            except ValidationError as e:
                raise ValidationError(f"invalid field {name!r}: {e}") from None
        return cls(**values)

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.values() == self.values()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.values().items() if k != "password")
        return f"{type(self).__name__}({shown})"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__)
