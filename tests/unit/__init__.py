"""Unit tests. Hypothesis runs reproducibly here (derandomized, no example database: CI sees the same examples)
and keeps the cache it writes even then out of the checkout."""

import tempfile
from pathlib import Path

try:
    from hypothesis import settings
    from hypothesis.configuration import set_hypothesis_home_dir
except ImportError:  # only the property tests need it; they are skipped without it
    pass
else:
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "sylkgateway-hypothesis")
    settings.register_profile("sylkgateway", deadline=None, derandomize=True, database=None, print_blob=False)
    settings.load_profile("sylkgateway")
