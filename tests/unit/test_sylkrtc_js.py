"""The sylkrtc.js unit tests (node --test, against the built bundle), run from pytest so one runner reports all."""

import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "js" / "sylkrtc"


def test_sylkrtc_js() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: `make js` installs Debian's nodejs and npm (Node.js 18 or newer is needed)")
    if not (JS / "node_modules").is_dir():
        pytest.fail("the JS build tools are not installed: run `make js`")
    result = subprocess.run([npm, "test", "--silent"], cwd=JS, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout
