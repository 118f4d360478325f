"""The one way mgd-emu writes a file, and the lock that gives a trace one writer.

Every output (plot, VCD, GTKWave file, golden vectors, manifest, checkpoint,
a study's results, and the trace's creation) is written by `output()`:

1. refused if it is (or would replace) any input of the same command
   (`refuse_inputs`: the same path or the same file through a link), or a
   trace another run is writing (`refuse_live_trace`: its lock is held);
2. written to a temporary name in the same folder (`.NAME.tmp-PID-` and a random suffix);
3. renamed over NAME only when the writing succeeded (fsync'd first), so a
   reader sees the old file or the whole new one, never a part;
4. removed when the writing failed for any reason (disk full, a signal, an
   error), so nothing truncated is left behind.

A trace is written in place after its creation (readers follow it live), so
it has a lock instead: `TraceLock` holds an exclusive `flock` on `PATH.lock`
for the whole run and writes the holder's pid, host and command into it. A
second writer is refused naming that process. The kernel drops the lock when
its process dies, however it dies (SIGKILL included), so a lock left by a
killed run is stale, recognised as such and taken over.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import sys
import tempfile
from pathlib import Path

from .errors import critical, describe


class OutputError(ValueError):
    """An output that must not or cannot be written; the message names it."""


def _key(path: Path):
    """What identifies a file: (device, inode) when it exists, else its absolute path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.abspath(os.path.realpath(path)))


def same_file(a, b) -> bool:
    """Whether two paths name one file: the same path, or the same file through a link."""
    return _key(Path(a)) == _key(Path(b)) or os.path.realpath(a) == os.path.realpath(b)


def refuse_inputs(out, inputs, option: str = "-o") -> None:
    """OutputError if `out` is one of `inputs` (same path, same file through a
    link, or a folder output that holds an input as a file it would write)."""
    out = Path(out)
    for given in inputs or ():
        if given is None:
            continue
        given = Path(given)
        if same_file(out, given):
            raise OutputError(f"{option} {out}: is an input of this command ({given}); "
                              "it would be overwritten: give another path")


def refuse_live_trace(out, option: str = "-o") -> None:
    """LockedError if `out` is a trace a live run is writing (its lock held)."""
    holder = writer_alive(out)
    if holder:
        raise LockedError(f"{option} {out}: is a trace being written by a run ({holder}); "
                          "it would be replaced: give another path")


def temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{os.urandom(3).hex()}"


@contextlib.contextmanager
def output(path, inputs=(), option: str = "-o", mode: str | None = None, encoding: str = "utf-8",
           newline: str | None = None):
    """Write `path` safely (see the module docstring).

    mode None: yields the temporary Path (for writers that take a file name);
    "w"/"wb": yields an open file on it (text: `encoding` and `newline` as
    open() takes them). On success the temporary file is
    fsync'd and renamed to `path`; on any failure it is removed and the error
    goes on (an OSError as OutputError naming `path`)."""
    path = Path(path)
    refuse_inputs(path, inputs, option)
    refuse_live_trace(path, option)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot be written ({describe(exc)})") from None
    tmp = temp_name(path)
    fp = None
    try:
        try:
            if mode is None:
                yield tmp
            else:
                binary = "b" in mode
                fp = open(tmp, mode, encoding=None if binary else encoding, newline=None if binary else newline)
                with fp:
                    yield fp
            with critical():
                _fsync(tmp)
                os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"{option} {path}: cannot be written ({describe(exc)}); "
                              "nothing was written there") from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def write_text(path, text: str, inputs=(), option: str = "-o") -> Path:
    with output(path, inputs, option, mode="w") as fp:
        fp.write(text)
    return Path(path)


def _fsync(path: Path) -> None:
    if not path.exists():
        raise OSError(2, "the writer produced no file", str(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(path, inputs=(), option: str = "-o", folder: bool = False) -> Path:
    """Refuse, before any work is done, an output that cannot be written or
    that is an input. Nothing is left behind: a temporary file is created in
    the nearest existing folder and removed."""
    path = Path(path)
    if not str(path):
        raise OutputError(f"{option}: the path is empty")
    refuse_inputs(path, inputs, option)
    if not folder:
        refuse_live_trace(path, option)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file; this output is a folder of files")
    if not folder and path.is_dir():
        raise OutputError(f"{option} {path}: is a directory; give a file name")
    where = path if folder else path.parent
    existing = where
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=existing, prefix=".mgd-emu-write-test-")
        os.close(fd)
        os.unlink(tmp)  # the output is written beside its final name and renamed: the folder must be writable
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot be written ({describe(exc)})") from None
    return path


# ------------------------------------------------------------------ the lock

def lock_path(path) -> Path:
    path = Path(path)
    return path.parent / f"{path.name}.lock"


class LockedError(OutputError):
    """Another live process writes this file."""


class TraceLock:
    """An exclusive lock on writing `path`, held until `release()`.

    The lock file `PATH.lock` says who holds it (pid, host, start time,
    command). A process that dies loses its flock, so its leftover file is
    stale: the next writer takes it over and says so (`stale_holder`)."""

    def __init__(self, path, option: str = "--trace"):
        self.path = Path(path)
        self.file = lock_path(self.path)
        self.fd = None
        self.stale_holder = None
        for _ in range(10):
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"{option} {self.path}: cannot create its lock file {self.file} "
                                  f"({describe(exc)})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_fd(fd)
                os.close(fd)
                raise LockedError(f"{option} {self.path}: is being written by another run "
                                  f"({holder or 'a process that has not yet said who it is'}; "
                                  f"lock {self.file}); wait for it, stop it, or choose another path") from None
            # The file may have been removed (and a new one made) between our
            # open and our flock by the holder releasing: then lock again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = _read_fd(fd)
            if old:
                self.stale_holder = old
            info = (f"pid {os.getpid()} on {socket.gethostname()} since "
                    f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}: "
                    f"{' '.join(['mgd-emu', *sys.argv[1:]])[:300]}")
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode("utf-8", "replace") + b"\n", 0)
            self.fd = fd
            return
        raise OutputError(f"{option} {self.path}: its lock file {self.file} keeps changing; "
                          "another run is starting on it")

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            os.unlink(self.file)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _read_fd(fd) -> str:
    try:
        return os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def writer_alive(path) -> str | None:
    """Who is writing the trace at `path` now (the lock's text), or None when
    no live process holds its lock. Creates nothing."""
    file = lock_path(path)
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_fd(fd) or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
