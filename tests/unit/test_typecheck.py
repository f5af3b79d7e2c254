"""The package type-checks (mypy, configured in setup.cfg): run by `make test` like every other test."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

ROOT = Path(__file__).resolve().parents[2]


class TypeCheckTests(TestCase):
    def test_mypy_finds_nothing(self) -> None:
        if importlib.util.find_spec("mypy") is None or importlib.util.find_spec("mypy_zope") is None:
            raise SkipTest("mypy and mypy-zope are not installed (they are in the test extras)")
        result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache"),
                                 "-p", "sylk.gateway", "-p", "sylk.applications.sylkgateway"],
                                cwd=ROOT, capture_output=True, text=True, timeout=240)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
