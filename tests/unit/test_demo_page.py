"""What the demo page (sylk/gateway/web/demo.js) takes from its URL: never the password, and `?ws=` only on the
page's own origin; which account a window starts with; what index.html shows before any call. demo.js runs in node
with just enough of a DOM to read the form afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

DEMO_JS = Path(__file__).resolve().parents[2] / "sylk" / "gateway" / "web" / "demo.js"

# Loads demo.js (which prefills the form at once) with the page at process.argv[2] and the window's sessionStorage
# holding process.argv[3] (a JSON object, or "off" for storage that throws, as when it is disabled); prints the form
# as JSON.
HARNESS = """
const anything = new Proxy(function () {}, {
    get: (target, key) => key === Symbol.iterator ? function* () {} : key === Symbol.toPrimitive ? () => '' : anything,
    apply: () => anything,
    set: () => true,
});
function fakeElement() {
    return new Proxy({ value: '', appended: [] }, {
        get: (target, key) => key in target ? target[key]
            : key === 'append' ? (...items) => target.appended.push(...items) : anything,
        set: (target, key, value) => { target[key] = value; return true; },
    });
}
const elements = new Map();
globalThis.document = {
    getElementById: (id) => elements.get(id) ?? elements.set(id, fakeElement()).get(id),
    createElement: () => fakeElement(),
    querySelectorAll: () => [],
};
globalThis.window = { addEventListener: () => {} };
const stored = process.argv[3] === 'off' ? null : new Map(Object.entries(JSON.parse(process.argv[3])));
globalThis.sessionStorage = {
    getItem: (key) => { if (!stored) throw new Error('SecurityError'); return stored.get(key) ?? null; },
    setItem: (key, value) => { if (!stored) throw new Error('SecurityError'); stored.set(key, value); },
};
globalThis.location = new URL(process.argv[2]);
await import('./demo.js');
const $ = (id) => document.getElementById(id);
console.log(JSON.stringify({
    ws: $('ws-url').value, password: $('password').value, account: $('account').value,
    log: $('log').appended.map((item) => item.textContent),
}));
"""


@pytest.fixture(scope="module")
def page_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None:
        pytest.fail("node is missing: `make js` installs Debian's nodejs and npm (Node.js 18 or newer is needed)")
    folder = tmp_path_factory.mktemp("demo")
    shutil.copy(DEMO_JS, folder / "demo.js")
    (folder / "sylkrtc.js").write_text("export function connect() { throw new Error('not in this test'); }\n")
    (folder / "harness.mjs").write_text(HARNESS)
    # The .js files are modules, as the page loads them (<script type="module">); Node before 20.19 (Debian 12's
    # is 18.20) takes a .js file for CommonJS unless its package.json says otherwise.
    (folder / "package.json").write_text('{"type": "module"}\n')
    return folder


def open_page(folder: Path, url: str, session: dict[str, str] | None = None) -> dict[str, Any]:
    """The form of the page at `url` in a window whose sessionStorage holds `session` (None: storage disabled)."""
    storage = "off" if session is None else json.dumps(session)
    result = subprocess.run(["node", "harness.mjs", url, storage], cwd=folder, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("page, ws", [
    ("http://gw.example.com:10888/webrtcgateway/?ws=ws://gw.example.com:10888/other/ws",
     "ws://gw.example.com:10888/other/ws"),
    ("http://gw.example.com/webrtcgateway/?ws=ws://GW.example.com:80/webrtcgateway/ws",
     "ws://gw.example.com/webrtcgateway/ws"),  # the default port and case do not matter
    ("https://gw.example.com/webrtcgateway/?ws=wss://gw.example.com/webrtcgateway/ws",
     "wss://gw.example.com/webrtcgateway/ws"),
    ("http://[::1]:10888/webrtcgateway/?ws=ws://[::1]:10888/webrtcgateway/ws", "ws://[::1]:10888/webrtcgateway/ws"),
])
def test_a_websocket_url_on_the_pages_origin_is_taken(page_folder: Path, page: str, ws: str) -> None:
    form = open_page(page_folder, page, {})
    assert form["ws"] == ws
    assert not any("ignored" in line for line in form["log"])


@pytest.mark.parametrize("page, ws", [
    ("http://gw.example.com:10888/webrtcgateway/", "ws://evil.example.net/ws"),  # another host
    ("http://gw.example.com:10888/webrtcgateway/", "ws://gw.example.com:10889/webrtcgateway/ws"),  # another port
    ("http://gw.example.com:10888/webrtcgateway/", "wss://gw.example.com:10888/webrtcgateway/ws"),  # another scheme
    ("https://gw.example.com/webrtcgateway/", "ws://gw.example.com:443/webrtcgateway/ws"),
    ("http://gw.example.com:10888/webrtcgateway/", "ws://gw.example.com:10888@evil.example.net/ws"),
    ("http://gw.example.com:10888/webrtcgateway/", "http://gw.example.com:10888/webrtcgateway/ws"),
    ("http://gw.example.com:10888/webrtcgateway/", "not a url"),
])
def test_any_other_websocket_url_is_ignored_and_said_so(page_folder: Path, page: str, ws: str) -> None:
    form = open_page(page_folder, f"{page}?ws={ws}", {})
    origin = page.split("/webrtcgateway/")[0]
    assert form["ws"] == f"{origin.replace('http', 'ws', 1)}/webrtcgateway/ws"  # the page's own endpoint
    assert any(f"ignored ?ws={ws}" in line for line in form["log"])


@pytest.mark.parametrize("page, ws", [
    ("http://gw.example.com:10888/webrtcgateway/", "ws://gw.example.com:10888/webrtcgateway/ws"),
    ("https://gw.example.com/webrtcgateway/index.html?x=1#y", "wss://gw.example.com/webrtcgateway/ws"),
    # mounted elsewhere by a host web server (SylkServer, sylk/applications/sylkgateway)
    ("https://sylk.example.com/sylkgateway/", "wss://sylk.example.com/sylkgateway/ws"),
])
def test_the_default_websocket_is_ws_beside_the_page(page_folder: Path, page: str, ws: str) -> None:
    assert open_page(page_folder, page, {})["ws"] == ws


def test_the_password_is_never_taken_from_the_url(page_folder: Path) -> None:
    form = open_page(page_folder, "http://gw.example.com/webrtcgateway/?account=bob@sylk.test&password=bobpw", {})
    assert form["password"] == ""
    assert form["account"] == "bob@sylk.test"  # the other fields still are


PAGE = "http://127.0.0.1:10888/webrtcgateway/"
REMEMBERED = "sylkgateway-demo-account"  # demo.js's sessionStorage key


def test_a_new_window_starts_without_an_account(page_folder: Path) -> None:
    # not alice in every window: the second one would register alice again
    assert open_page(page_folder, PAGE, {})["account"] == ""


def test_a_window_keeps_its_own_account_across_reloads(page_folder: Path) -> None:
    assert open_page(page_folder, PAGE, {REMEMBERED: "bob@sylk.test"})["account"] == "bob@sylk.test"
    assert open_page(page_folder, f"{PAGE}?account=carol@sylk.test", {REMEMBERED: "bob@sylk.test"})["account"] \
        == "carol@sylk.test"  # the link wins


def test_the_page_works_without_storage(page_folder: Path) -> None:
    assert open_page(page_folder, PAGE, None)["account"] == ""


class Elements(HTMLParser):
    """The attributes of every element of a page that has an id, and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.by_id[str(attributes["id"])] = attributes

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_page_before_any_call() -> None:
    page = Elements((DEMO_JS.parent / "index.html").read_text())
    assert "hidden" in page.by_id["remote-video-box"] and "hidden" in page.by_id["local-video-box"]  # no black boxes
    assert "value" not in page.by_id["account"] and page.by_id["account"]["list"] == "demo-accounts"
    assert "placeholder" not in page.by_id["password"]  # no one account's password suggested for every window
    text = " ".join(" ".join(page.text).split())
    assert "Janus 1.1.2 does not report" in text  # why received RFC 4733 tones never show
