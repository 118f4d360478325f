"""mgd-emu: cycle-accurate emulation of chips that train themselves with
multiplexed gradient descent (MGD)."""
import os as _os
import sys as _sys

if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "mgd-emu" or \
        getattr(_sys, "orig_argv", [])[1:3] == ["-m", "mgd_emu.cli"]:
    # The command line: SIGINT/SIGTERM/SIGHUP are held from before the heavy
    # imports below and raised once cli.main can catch them (mgd_emu.errors).
    from .errors import install_signal_handlers as _install_signal_handlers

    _install_signal_handlers(defer=True)

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from . import kernel_cache as _kernel_cache  # noqa: E402

_kernel_cache.install()  # before any kernel is decorated

from .fixedpoint import Format  # noqa: E402
from .spec import Chip, ChipError, load_chip, loads_chip  # noqa: E402

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
