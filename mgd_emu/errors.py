"""The one place where failures become what the user sees, and signals.

Every command of `mgd-emu` ends in one of these ways (README "Reliability"):

- 0: done;
- 2: one line `mgd-emu: error: ...` on stderr: a user mistake, or an OS or
  HDF5 error (disk full, permission, a damaged file) turned into one line by
  `describe` below, naming the file;
- 128 + N: stopped by signal N (130 SIGINT/Ctrl-C, 143 SIGTERM, 129 SIGHUP):
  one line on stderr saying which signal and what was kept; a trace being
  written is flushed and marked `complete = false`, `end_reason =
  "interrupted (SIGTERM)"`.

This module imports nothing but the standard library, so the command line can
install its signal handlers before it imports numpy, h5py or numba.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading

HANDLED_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP"))
                        if s is not None)


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) asked the process to stop.

    A KeyboardInterrupt, so code that cleans up after Ctrl-C cleans up after
    SIGTERM too. `status` is the exit status, 128 + the signal number."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(self.name)

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def status(self) -> int:
        return 128 + self.signum


def signal_name(exc: BaseException) -> str:
    """SIGTERM, SIGHUP, ... for Interrupted; SIGINT for a plain KeyboardInterrupt."""
    return exc.name if isinstance(exc, Interrupted) else "SIGINT"


def exit_status(exc: BaseException) -> int:
    return exc.status if isinstance(exc, Interrupted) else 128 + signal.SIGINT


# While a critical section runs (an append to a trace, its closing), a signal
# is only recorded; it is raised when the outermost section ends. So a signal
# never leaves a dataset resized but not written, nor a half-closed file.
_depth = 0
_depth_lock = threading.Lock()
_pending: list[int] = []
_stopping = False


def _handler(signum, frame):
    global _stopping
    if _depth > 0 or _stopping:
        # in a critical section: raised when it ends; already stopping: the
        # clean-up of the first signal is not cut short by a second one
        if not _stopping:
            _pending.append(signum)
        return
    _stopping = True
    raise Interrupted(signum)


_startup = False


def install_signal_handlers(defer: bool = False) -> None:
    """SIGINT, SIGTERM and SIGHUP raise `Interrupted` (main thread only).

    defer: hold them (recorded, not raised) until `end_startup()`: the
    command line installs its handlers as its module is imported, where no
    one could catch the exception, and ends the deferral inside the `try` of
    its main()."""
    global _depth, _startup
    for s in HANDLED_SIGNALS:
        try:
            signal.signal(s, _handler)
        except (ValueError, OSError):  # not the main thread, or not allowed here
            return
    if defer and not _startup:
        _startup = True
        _depth += 1


def end_startup() -> None:
    """End the deferral of install_signal_handlers(defer=True); a signal
    that came in the meantime is raised now."""
    global _depth, _startup
    if _startup:
        _startup = False
        _depth -= 1
        _raise_pending()


def _raise_pending():
    global _stopping
    # Raised in the main thread only: the critical sections of a trace
    # written behind the run end on the writer's thread, and the engine
    # raises what they deferred once that write is done (raise_deferred).
    # (A TraceWriter driven from a thread of the user's own likewise leaves
    # a deferred signal to the main thread's next section or raise_deferred.)
    if _depth == 0 and _pending and threading.current_thread() is threading.main_thread():
        signum = _pending[0]
        _pending.clear()
        _stopping = True
        raise Interrupted(signum)


def raise_deferred() -> None:
    """Raise a signal that arrived during a critical section which ended on
    another thread (in the main thread, once no section is open)."""
    _raise_pending()


@contextlib.contextmanager
def critical():
    """Defer signals (those handled by `_handler`) until the block ends."""
    global _depth
    with _depth_lock:   # the main thread and a trace writer's thread both open sections
        _depth += 1
    try:
        yield
    finally:
        with _depth_lock:
            _depth -= 1
        _raise_pending()


def one_line(text) -> str:
    """A message on one line: library errors (HDF5's in particular) carry newlines."""
    return " ".join(str(text).split())


# errno values a user can do something about, said plainly.
_PLAIN = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
          errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
          errno.EPERM: "operation not permitted", errno.ENOENT: "no such file or directory",
          errno.EISDIR: "is a directory", errno.ENOTDIR: "not a directory",
          errno.EFBIG: "file too large", errno.EIO: "input/output error"}


def hdf5_cause(exc) -> str:
    """HDF5's reason, on one line: its `error message` field when it has one
    (h5py's text also carries a time stamp and buffer addresses)."""
    import re

    text = one_line(exc)
    m = re.search(r"error message = '([^']*)'", text)
    if m:
        return m.group(1)
    m = re.search(r"\(([^()]*)\)\s*$", text)  # "Unable to ... (file signature not found)"
    return m.group(1) if m else text


def describe(exc: BaseException) -> str:
    """An OS or HDF5 error in a few words: 'no space left on the device'.
    (h5py raises OSError or RuntimeError, with the errno only in its text.)"""
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in _PLAIN:
            return _PLAIN[exc.errno]
        if exc.strerror:
            return exc.strerror.lower()
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = one_line(exc)
    low = text.lower()
    if "no space" in low or "enospc" in low or "errno = 28," in low:
        return _PLAIN[errno.ENOSPC]
    if "quota" in low or "errno = 122," in low:
        return _PLAIN[errno.EDQUOT]
    if isinstance(exc, (OSError, RuntimeError)):
        return hdf5_cause(exc)
    return text or type(exc).__name__


def disk_is_full(exc: BaseException) -> bool:
    return describe(exc) in (_PLAIN[errno.ENOSPC], _PLAIN[errno.EDQUOT])


def report(message: str) -> None:
    """Print `mgd-emu: MESSAGE` as one line on stderr, whatever the state of stderr."""
    try:
        sys.stderr.write(f"mgd-emu: {one_line(message)}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def exit_on_broken_pipe() -> int:
    """`mgd-emu show --registers | head`: stdout closed early is not an error."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass
    return 0
