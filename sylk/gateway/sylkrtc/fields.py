"""A small declarative schema for sylkRTC messages, in the spirit of SylkServer's jsonobjects.

A `Model` subclass lists its fields as class attributes; `Model.parse(message)` checks a decoded JSON object against
them and returns an instance, or raises `ValidationError` with a message that names the field. Unknown keys are
ignored, as in SylkServer, so newer clients can add fields.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from datetime import datetime
from typing import Any, ClassVar, Generic, Mapping, Self, TypeVar, overload

T = TypeVar("T")


class ValidationError(ValueError):
    """A message does not match its schema; the text is sent to the client as the error reason."""


_MISSING = object()
# Fields never shown in logs: an account's HA1, a connection's resume token.
_SECRET_FIELDS = frozenset({"password", "token"})

# RFC 3261 token: what a header name is made of.
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Control characters (C0, DEL, C1), lone surrogates (not encodable as UTF-8: Janus refuses the whole JSON request),
# and the Unicode line and paragraph separators (line breaks for some parsers and displays).
_FORBIDDEN_CATEGORIES = frozenset(("Cc", "Cs", "Zl", "Zp"))


class Field(Generic[T]):
    """One field of a model. Subclasses override `convert` to check and normalise a value.

    On a model instance the attribute holds the value (of type T; None for an optional field left out), which
    shadows the field: `__get__` only tells type checkers so."""

    def __init__(self: Field[Any], *, optional: bool = False, default: Any = None) -> None:
        self.optional = optional
        self.default = default
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object, owner: type) -> Self | T:
        if instance is None:
            return self
        raise AttributeError(self.name)  # every model instance sets each of its fields

    def convert(self, value: Any) -> T:
        return value  # type: ignore[no-any-return]


class String(Field[str]):
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
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: JSON allows it, Janus's parser and UTF-8 do not
                raise ValidationError("must be valid Unicode text (no lone surrogates)") from None
        return value


class Boolean(Field[bool]):
    def convert(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"must be true or false, not {_json_type(value)}")
        return value


class Integer(Field[int]):
    def __init__(self, *, low: int, high: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.low, self.high = low, high

    def convert(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError(f"must be a whole number, not {_json_type(value)}")
        if not self.low <= value <= self.high:
            raise ValidationError(f"must be from {self.low} to {self.high}")
        return value


class Text(String):
    """Text that ends up inside a SIP header (a display name): no control characters, which could end the header
    and start another. Quotes and backslashes are allowed: the SIP backend escapes them."""

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        _check_no_controls(value)
        return value


class Timestamp(Text):
    """An ISO 8601 date and time (as the browser wrote it; it goes into a CPIM DateTime header and the history)."""

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError("must be an ISO 8601 date and time (2026-12-08T10:00:00Z)") from None
        return value


class UserAgent(String):
    """A SIP User-Agent: printable ASCII, which every SIP stack and log carries as it is; surrounding spaces are
    removed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=128, **kwargs)

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        if not re.fullmatch(r"[\x20-\x7e]*", value):
            raise ValidationError("must be printable ASCII (letters, digits, spaces and punctuation)")
        if not value.strip():
            raise ValidationError("must not be empty")
        return value.strip()


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


class Token(String):
    """A secret the client chose to claim its connection's state back (connection-keep): 22 to 128 characters of
    [A-Za-z0-9_-] (22 base64url characters carry 132 bits), not visibly made of a few characters repeated."""

    _FORM = re.compile(r"[A-Za-z0-9_-]{22,128}")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=128, **kwargs)

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        if not self._FORM.fullmatch(value):
            raise ValidationError("must be 22 to 128 characters of A-Z, a-z, 0-9, _ and - (at least 128 random bits)")
        if len(set(value)) < 10:
            raise ValidationError("must be random (at least 128 random bits), not a few characters repeated")
        return value


class HA1(String):
    """An MD5 digest of user:realm:password as 32 hex digits; the password itself never reaches the gateway."""

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        if not re.fullmatch(r"[0-9a-fA-F]{32}", value):
            raise ValidationError("must be an HA1 digest (32 hexadecimal digits), not a plain password")
        return value.lower()


class AOR(String):
    """A SIP address of record: `user@domain`, optionally with a `sip:` or `sips:` scheme; normalised to `user@domain`.

    The user part holds RFC 3261 user characters except `?` and `;`, which would start URI headers (`?Subject=`) or
    parameters (`;user=phone`) in the request URI, and escapes (`%XX`) except those of control characters. The
    domain is a host name whose last label begins with a letter (RFC 3261 toplabel), a dotted IPv4 address, or an
    IPv6 address in brackets, so that numbers such as `127.1` cannot pass for names."""

    _USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,/]|%[0-9A-Fa-f]{2})+")
    _CONTROL_ESCAPE = re.compile(r"%(?:[01][0-9A-Fa-f]|7[Ff])")
    _HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=512, **kwargs)

    def convert(self, value: Any) -> str:
        value = super().convert(value)
        bare = re.sub(r"^sips?:", "", value, flags=re.IGNORECASE)
        user, at, domain = bare.rpartition("@")
        for char, what in (("?", "URI headers"), (";", "URI parameters")):
            if char in user:
                raise ValidationError(f"the user part must not contain {char!r} ({what}): {value!r:.80}")
        if self._CONTROL_ESCAPE.search(user):
            raise ValidationError(f"the user part must not contain escaped control characters (%00-%1F, %7F): "
                                  f"{value!r:.80}")
        if not at or not self._USER.fullmatch(user) or not self._is_domain(domain):
            raise ValidationError(f"must be a SIP address like user@domain, not {value!r:.80}")
        return f"{user}@{domain.lower()}"

    @classmethod
    def _is_domain(cls, domain: str) -> bool:
        if domain.startswith("[") and domain.endswith("]"):
            return re.fullmatch(r"[0-9A-Fa-f:.]+", domain[1:-1]) is not None and _is_ip(domain[1:-1], 6)
        return cls._HOST.fullmatch(domain) is not None or _is_ip(domain, 4)


class Candidates(Field[list[dict[str, Any]]]):
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


class Headers(Field[dict[str, str]]):
    """Custom SIP headers as sylkRTC-2 sends them: [{name, value}], normalised to {name: value}.

    An allow-list, because a browser must not speak for the gateway: names starting with `X-` and a few headers
    that only describe the call (ALLOWED). Identity, routing and dialog headers, and every compact form, are
    refused. Values are one line of text without control characters (tabs neither: SIP may turn them into
    spaces); surrounding spaces are removed, as SIP parsers would. Janus 1.1.2 silently cuts each header line
    (with its CRLF) at 254 bytes and all of them together at 2047, so longer ones are refused rather than sent cut.
    """

    # Not Call-Info or Alert-Info: their parameters make many desk phones answer by themselves (answer-after=0,
    # info=alert-autoanswer), which would let a web page open someone's microphone.
    ALLOWED = ("Subject", "Priority", "Organization", "Accept-Language")
    MAX_HEADERS = 16
    MAX_NAME = 64
    MAX_LINE = 252  # bytes of `Name: value` (UTF-8): Janus's 254 with the CRLF
    MAX_TOTAL = 2000  # bytes of all `Name: value` lines with their CRLF (UTF-8), below Janus's 2047
    _ALLOWED = frozenset(name.lower() for name in ALLOWED)
    # Why the headers people try most are refused, for a clearer error than "not allowed".
    _IDENTITY = frozenset(name.lower() for name in (
        "From", "P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "Privacy", "Identity",
        "Identity-Info", "Referred-By", "Authorization", "Proxy-Authorization", "User-Agent"))
    _DIALOG = frozenset(name.lower() for name in (
        "To", "Call-ID", "CSeq", "Via", "Contact", "Route", "Record-Route", "Max-Forwards", "Replaces", "Join",
        "Refer-To", "Content-Length", "Content-Type", "Expires", "Allow", "Supported", "Require", "Proxy-Require",
        "Session-Expires", "Min-SE", "Event"))

    def convert(self, value: Any) -> dict[str, str]:
        if not isinstance(value, list):
            raise ValidationError(f"must be an array, not {_json_type(value)}")
        if len(value) > self.MAX_HEADERS:
            raise ValidationError(f"must have at most {self.MAX_HEADERS} headers")
        headers: dict[str, str] = {}
        for index, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) else None
            text = item.get("value") if isinstance(item, dict) else None
            if not isinstance(name, str) or not _TOKEN.fullmatch(name) or len(name) > self.MAX_NAME:
                raise ValidationError(f"item {index} needs a header 'name' (a SIP token of at most "
                                      f"{self.MAX_NAME} characters)")
            self._check_name(name)
            if name.lower() in map(str.lower, headers):
                raise ValidationError(f"header {name} is given twice (names are case-insensitive)")
            headers[name] = self._value(name, text)
        total = sum(len(f"{name}: {text}\r\n".encode()) for name, text in headers.items())
        if total > self.MAX_TOTAL:
            raise ValidationError(f"the headers together must be at most {self.MAX_TOTAL} bytes as 'Name: value' "
                                  f"lines (UTF-8, with line ends), not {total}")
        return headers

    def _check_name(self, name: str) -> None:
        lower = name.lower()
        if (lower.startswith("x-") and len(name) > 2) or lower in self._ALLOWED:
            return
        allowed = f"only X- headers and {', '.join(self.ALLOWED)} are allowed"
        if len(name) == 1:
            raise ValidationError(f"header {name} cannot be set: compact header forms are not allowed ({allowed})")
        if lower in self._IDENTITY:
            raise ValidationError(f"header {name} cannot be set: identity headers are the SIP proxy's and the "
                                  f"gateway's ({allowed})")
        if lower in self._DIALOG:
            raise ValidationError(f"header {name} cannot be set: it routes the request or makes up the dialog "
                                  f"({allowed})")
        raise ValidationError(f"header {name} cannot be set: {allowed}")

    def _value(self, name: str, text: Any) -> str:
        if not isinstance(text, str):
            raise ValidationError(f"header {name} needs a string 'value'")
        try:
            _check_no_controls(text)
        except ValidationError as e:
            raise ValidationError(f"header {name}: the value {e}") from None
        text = text.strip(" ")
        if len(f"{name}: {text}".encode()) > self.MAX_LINE:
            raise ValidationError(f"header {name} is too long: 'Name: value' must be at most {self.MAX_LINE} bytes "
                                  f"(UTF-8)")
        return text


class JSONObject(Field[dict[str, Any]]):
    """A JSON object kept as it is (an address book entry): bounded by its size once encoded, and by depth (the
    JSON decoder already refused what nests deeper than Python's recursion limit)."""

    def __init__(self, *, max_bytes: int = 16 * 1024, max_depth: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def convert(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError(f"must be an object, not {_json_type(value)}")
        if _depth(value) > self.max_depth:
            raise ValidationError(f"nests deeper than {self.max_depth} levels")
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if size > self.max_bytes:
            raise ValidationError(f"is {size} bytes long (at most {self.max_bytes})")
        return value


def _depth(value: Any) -> int:
    """How deep objects and arrays nest in a decoded JSON value (iteratively: no recursion on client input)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class StringList(Field[tuple[str, ...]]):
    """A short list of distinct non-empty strings."""

    def convert(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) and 0 < len(item) <= 64 for item in value):
            raise ValidationError("must be an array of non-empty strings")
        if len(value) > 16 or len(set(value)) != len(value):
            raise ValidationError("must have at most 16 items, each once")
        return tuple(value)


class HeaderPrefixes(StringList):
    """Header name prefixes (`X-`): each made of the characters of header names (a SIP token)."""

    def convert(self, value: Any) -> tuple[str, ...]:
        prefixes = super().convert(value)
        for item in prefixes:
            if not _TOKEN.fullmatch(item):
                raise ValidationError(f"{item!r:.80} is not a header name prefix (letters, digits and "
                                      f"-.!%*_+`'~ only)")
        return prefixes


class Model:
    """Base of requests and events: fields declared as class attributes, values as instance attributes."""

    _fields: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inherited: dict[str, Field] = {}
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
        shown = ", ".join(f"{k}={v!r}" for k, v in self.values().items() if k not in _SECRET_FIELDS)
        return f"{type(self).__name__}({shown})"


def _is_ip(text: str, version: int) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == version


def _check_no_controls(text: str) -> None:
    for position, char in enumerate(text):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise ValidationError(f"must not contain control characters (U+{ord(char):04X} at position {position})")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__)
