"""Shared pytest configuration.

Hypothesis runs derandomized by default, so CI is repeatable: a failure found once is found
every time. `HYPOTHESIS_PROFILE=explore` draws fresh examples (and more of them) instead.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
