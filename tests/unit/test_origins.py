"""Which pages may open a WebSocket: web_origins patterns against the browser's Origin header."""

import pytest

from sylk.gateway.websocket import origin_allowed


@pytest.mark.parametrize("origin, allowed, expected", [
    ("https://phone.example.com", ("https://phone.example.com",), True),
    ("https://phone.example.com:443", ("https://phone.example.com",), True),  # default ports do not matter
    ("https://phone.example.com", ("https://phone.example.com:443",), True),
    ("https://PHONE.example.com", ("https://phone.example.com",), True),
    ("http://127.0.0.1:8080", ("http://127.0.0.1:8080",), True),
    ("https://a.example.com", ("https://*.example.com",), True),
    ("https://a.example.com", ("*",), True),
    (None, ("https://phone.example.com",), True),  # not a browser: an Origin check protects browsers only
    ("https://phone.example.com:8443", ("https://phone.example.com",), False),
    ("http://phone.example.com", ("https://phone.example.com",), False),
    ("https://example.com.evil.net", ("https://*.example.com",), False),
    ("null", ("https://phone.example.com",), False),
    ("not a url", ("https://phone.example.com",), False),
    ("https://phone.example.com:99999", ("https://phone.example.com",), False),
    # IPv6 literals: brackets are part of the origin, not a set of characters.
    ("http://[::1]:8080", ("http://[::1]:8080",), True),
    ("http://[2001:DB8::1]", ("http://[2001:db8::1]:80",), True),
    ("https://[2001:db8::1]:8443", ("https://[2001:db8::*]:8443",), True),
    ("http://[::2]:8080", ("http://[::1]:8080",), False),
    ("http://1:8080", ("http://[12]:8080",), False),
])
def test_origin_allowed(origin, allowed, expected) -> None:
    assert origin_allowed(origin, allowed) is expected
