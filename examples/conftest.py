"""Hypothesis settings for the examples, as for the test suite: no deadlines
(kernels compile on first call), and a derandomized profile when CI is set."""
import os

from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
