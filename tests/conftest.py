"""Test configuration: hypothesis without deadlines (kernels compile on
first call), and a bounded, reproducible CI profile."""
import os

from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
