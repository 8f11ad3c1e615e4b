"""Suite-wide test settings.

Hypothesis runs derandomized (the same examples on every run, no example database) so that `make test`
and CI give one answer for one commit: a property test must not pass or fail by the draw. Set
``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples (and keep any failure you find as an
explicit test, as tests/unit/test_intervals.py does for the BH tie).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
