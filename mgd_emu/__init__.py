"""mgd-emu: cycle-accurate emulation of chips that train themselves with
multiplexed gradient descent (MGD)."""
from importlib.metadata import PackageNotFoundError, version

from . import kernel_cache as _kernel_cache

_kernel_cache.install()  # before any kernel is decorated

from .fixedpoint import Format
from .spec import Chip, ChipError, load_chip, loads_chip

try:
    __version__ = version("mgd-emu")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"


def __getattr__(name):
    # The engine imports numba's compiler; load it only when asked for.
    if name == "Emulator":
        from .engine import Emulator

        return Emulator
    raise AttributeError(name)


__all__ = ["Chip", "ChipError", "Emulator", "Format", "load_chip", "loads_chip", "__version__"]
