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


def any_character():  # type: ignore[no-untyped-def]
    """Hypothesis's strategy for every character, surrogates and unassigned code points included: `codec=None,
    exclude_categories=()` since Hypothesis 6.82, `blacklist_categories=()` before (Debian 12 has 6.67, which the
    Debian package's build-time tests use)."""
    from hypothesis import strategies as st
    try:
        return st.characters(codec=None, exclude_categories=())
    except TypeError:
        return st.characters(blacklist_categories=())
