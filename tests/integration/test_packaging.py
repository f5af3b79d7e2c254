"""What pip installs: the sdist and the wheel carry the demo page's sylkrtc.js, built by npm when the package is built
(it is never committed), and a build without npm says what to install. Each build starts from a clean copy of the
checkout (the files git tracks or would track: no built bundle, no node_modules), through the PEP 517 hooks that pip
and `python -m build` call."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = "sylk/gateway/web/sylkrtc.js"
HOOK = "import sys; from setuptools import build_meta; print(getattr(build_meta, sys.argv[1])(sys.argv[2]))"


def clean_copy(dest: Path) -> Path:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout and git, to copy only the files git tracks or would track")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True, timeout=30).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():  # not a file deleted but not yet committed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def build(hook: str, source: Path, out: Path, path: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one build hook in `source` with `path` as PATH (what decides whether npm is found)."""
    return subprocess.run([sys.executable, "-c", HOOK, hook, str(out)], cwd=source, env={**os.environ, "PATH": path},
                          capture_output=True, text=True, timeout=timeout)


def built(result: subprocess.CompletedProcess[str], out: Path) -> Path:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / result.stdout.splitlines()[-1]


def test_sdist_and_wheel_carry_sylkrtc_js(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is missing, so the bundle cannot be built: `make js` installs Debian's nodejs and npm")
    source, out, no_npm = clean_copy(tmp_path / "checkout"), tmp_path / "dist", tmp_path / "empty"
    no_npm.mkdir()
    sdist = built(build("build_sdist", source, out, os.environ["PATH"], timeout=240), out)
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        assert f"{top}/{BUNDLE}" in archive.getnames()
        archive.extractall(tmp_path / "unpacked", filter="data")
    # The wheel is built from the sdist, as pip and `python -m build` do: its bundle is used as it is, without npm.
    wheel = built(build("build_wheel", tmp_path / "unpacked" / top, out, str(no_npm), timeout=120), out)
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(BUNDLE).startswith(b"// sylkrtc.js: built by esbuild")
        # twistd finds the gateway only through this plugin file.
        assert "twisted/plugins/sylkgateway.py" in archive.namelist()


def test_a_build_without_npm_says_what_to_install(tmp_path: Path) -> None:
    source, no_npm = clean_copy(tmp_path / "checkout"), tmp_path / "empty"
    no_npm.mkdir()
    result = build("build_wheel", source, tmp_path / "dist", str(no_npm), timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "needs Node.js 18 or newer with npm. `npm` is not on PATH" in output, output[-3000:]
    assert "apt-get install nodejs npm" in output
