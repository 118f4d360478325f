"""Traces: probed registers streamed to HDF5 as a run goes, and read back.

The file format ("mgd-emu-trace", version 1) is specified in
`traces/README.md`; this module writes and reads it. `TraceWriter` is a sink
for `Emulator.run(..., sink=writer)`: the engine hands it each chunk's
samples, the writer appends them and flushes the file, so an interrupted run
leaves a file that opens, says it is incomplete and holds every flushed cycle.
`open_trace(path)` returns a `Trace` that gives each signal as real values or
integer codes with its cycle axis, and rebuilds the chip.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import critical, describe, disk_is_full, hdf5_cause, one_line, signal_name
from .fixedpoint import Format
from .probes import Probe
from .spec import Chip

FORMAT_NAME = "mgd-emu-trace"
FORMAT_VERSION = 1
_CHUNK_BYTES = 1 << 16
# HDF5 1.10 file format (readable by HDF5 1.10 and later), not the newest: the
# oldest that supports single-writer/multiple-reader mode, which keeps the file
# consistent on disk at every flush, so a killed run leaves a readable file.
LIBVER = ("v110", "v110")

# The values of the root attribute `end_reason` (traces/README.md lists them).
END_RUNNING = "running"                     # the writer never closed: the process was killed
END_COMPLETED = "completed"                 # every requested cycle ran
END_STOPPED = "stopped early"               # the writer's context closed normally before that
END_INTERRUPTED = "interrupted (SIGINT)"    # Ctrl-C; SIGTERM and SIGHUP say their own name
END_FAILED = "failed: "                     # + "ExceptionType: message"
END_DISK_FULL = "failed: disk full"         # + ": what the OS said"


def interrupted(signame: str = "SIGINT") -> str:
    """end_reason of a run stopped by a signal."""
    return f"interrupted ({signame})"


def target_reached(accuracy: float) -> str:
    """end_reason of a run stopped at a target test accuracy (complete = true)."""
    return f"target accuracy {float(accuracy)!r} reached"


class TraceError(ValueError):
    """A trace that cannot be written or read; the message names the file."""


def code_dtype(fmt: Format | None):
    """The narrowest integer dtype that holds every code of `fmt` (None: float64)."""
    if fmt is None or not fmt.is_fixed:
        return np.dtype(np.float64)
    for bits in (8, 16, 32, 64):
        if fmt.width <= bits:
            return np.dtype(f"{'' if fmt.signed else 'u'}int{bits}")
    raise AssertionError("formats are at most 32 bits wide")


def _format_attrs(fmt: Format | None) -> dict:
    if fmt is None or not fmt.is_fixed:
        return dict(format_kind="float", signed=True, int_bits=-1, frac_bits=-1, width=64,
                    rounding="", overflow="", conversion=1.0, resolution=np.nan, storage="value")
    return dict(format_kind="fixed", signed=fmt.signed, int_bits=fmt.int_bits,
                frac_bits=fmt.frac_bits, width=fmt.width, rounding=fmt.rounding,
                overflow=fmt.overflow, conversion=fmt.lsb, resolution=fmt.lsb, storage="code")


# True once a trace could not be written (disk full, I/O error): HDF5 cannot
# close such a file cleanly, and its exit handlers would crash on it (SIGSEGV)
# at interpreter exit; the command line then ends the process with os._exit
# after its one line (cli.main). What the file holds is already on disk.
UNCLOSED = False
_KEEP: list = []


class TraceWriter:
    """Streams an emulator's probes into an HDF5 trace.

    Use as a context manager around the run: leaving it normally after
    `cycles_requested` cycles marks the trace complete; an exception
    (Ctrl-C included) leaves it marked incomplete, with what was flushed.
    """

    # The engine writes a chunk's samples on a thread of its own while the
    # next chunk runs (Emulator._write_behind): the calls below then come
    # from that thread, one at a time, in the order of the cycles.
    writes_behind = True

    def __init__(self, path, emu, cycles_requested: int, note: str = "", inputs=(),
                 option: str = "--trace"):
        """Create the trace at `path` and lock it for this process.

        The file is built under a temporary name beside `path` and renamed
        to `path` once its every group and attribute exist and it is in SWMR
        mode: the file at `path` is always a readable trace (or the previous
        file). `inputs`: files of the same command the trace must not replace.
        A second writer of the same path is refused (safe_io.TraceLock)."""
        from .safe_io import OutputError, TraceLock, refuse_inputs, temp_name

        self.path = Path(path)
        self.emu = emu
        self.start_cycle = emu.cycle
        self.cycles_requested = int(cycles_requested)
        self.closed = False
        self.failed = None
        self.f = None
        self._last = {}
        self._size = 0
        try:
            refuse_inputs(self.path, inputs, option)
            if self.path.is_dir():
                raise OutputError(f"{option} {self.path}: is a directory; give a file name")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock = TraceLock(self.path, option)
            self._reserve = _make_reserve(self.path)
        except OutputError as exc:
            raise TraceError(str(exc)) from None
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot be written ({describe(exc)})") from None
        tmp = temp_name(self.path)
        try:
            with critical():
                self.f = h5py.File(tmp, "w", libver=LIBVER)
                self._create(note)
                os.replace(tmp, self.path)
        except BaseException as exc:
            if self.f is not None:
                with _quiet():
                    self.f.close()
            with _quiet():
                tmp.unlink()
            self._free_reserve()
            self.lock.release()
            if isinstance(exc, (OSError, ValueError)) and not isinstance(exc, TraceError):
                raise TraceError(f"{self.path}: cannot be written ({describe(exc)})") from None
            raise

    def _create(self, note):
        emu = self.emu
        chip, task = emu.chip, emu.task
        a = self.f.attrs
        a["format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a["mgd_emu_version"] = __version__
        a["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        a["chip"] = chip.to_toml()
        a["chip_name"] = chip.name
        a["chip_source"] = str(chip.source)
        a["seed"] = emu.seed
        a["task"] = chip.task.name
        a["task_params"] = json.dumps(chip.task_params(), sort_keys=True)
        a["train_dataset"] = task.train.identity
        a["test_dataset"] = task.test.identity
        a["clock_hz"] = chip.timing.clock_hz
        a["start_cycle"] = self.start_cycle
        a["cycles_requested"] = self.cycles_requested
        a["cycles_completed"] = 0
        a["complete"] = False
        a["end_reason"] = END_RUNNING
        a["probes"] = json.dumps([p.text for p in emu.probes])
        a["note"] = note
        signals = self.f.create_group("signals")
        self._data, self._cycles, self._frac = {}, {}, {}
        for probe in emu.probes:
            self._create_signal(signals, probe)
        ev = self.f.create_group("events")
        names = list(emu.events)
        ev.attrs["registers"] = json.dumps(names)
        ev.attrs["meaning"] = "saturation and wrap events counted per register since reset, at each flush"
        self._ev_cycles = ev.create_dataset("cycles", (0,), np.int64, maxshape=(None,), chunks=(1024,))
        self._ev_counts = ev.create_dataset("counts", (0, len(names), 2), np.int64,
                                            maxshape=(None, len(names), 2), chunks=(64, len(names), 2),
                                            compression="gzip")
        evl = self.f.create_group("evaluation")
        evl.attrs["meaning"] = "unperturbed network on the test set: mean cost and accuracy"
        evl.attrs["dataset"] = task.test.identity
        self._eval = {k: evl.create_dataset(k, (0,), dt, maxshape=(None,), chunks=(1024,))
                      for k, dt in (("cycles", np.int64), ("cost", np.float64), ("accuracy", np.float64))}
        self._write_events(emu)
        self.f.swmr_mode = True  # every object exists: from here on, only appends
        self.f.flush()

    def _create_signal(self, signals, probe: Probe):
        reg, emu = probe.register, self.emu
        fmt = emu.register_format(reg.name)
        dtype = code_dtype(fmt) if reg.name != "sample_index" else np.dtype(np.int64)
        g = signals.create_group(reg.name)
        per_sample = max(int(np.prod(probe.shape)) * dtype.itemsize, 1)
        rows = int(max(1, min(65536, _CHUNK_BYTES // per_sample)))
        g.create_dataset("data", (0,) + probe.shape, dtype, maxshape=(None,) + probe.shape,
                         chunks=(rows,) + probe.shape, compression="gzip", shuffle=True)
        g.create_dataset("cycles", (0,), np.int64, maxshape=(None,), chunks=(max(rows, 1024),),
                         compression="gzip", shuffle=True)
        attrs = _format_attrs(fmt)
        if reg.name == "sample_index":
            attrs.update(storage="value", format_kind="index")
        g.attrs.update(attrs)
        g.attrs.update(register=reg.name, block=reg.block, description=reg.meaning, unit=reg.unit,
                       continuity="step", register_shape=np.array(reg.shape, dtype=np.int64),
                       index=probe.index, elements=probe.flat, every=probe.every,
                       window_start=probe.start, window_stop=-1 if probe.stop is None else probe.stop,
                       probe=probe.text)
        self._data[reg.name], self._cycles[reg.name] = g["data"], g["cycles"]
        self._frac[reg.name] = int(attrs["frac_bits"]) if attrs["storage"] == "code" else None

    # ------------------------------------------------------------- sink API
    def append(self, probe: Probe, cycles: np.ndarray, values: np.ndarray) -> None:
        """Append samples (values as the register holds them) of one probe."""
        with self._guard():
            self._append(probe, cycles, values)

    def _append(self, probe, cycles, values):
        data, cyc = self._data[probe.name], self._cycles[probe.name]
        # Samples already written are not written twice (a flush that a
        # signal or an error cut short is repeated by close()).
        last = self._last.get(probe.name, -1)
        if len(cycles) and cycles[0] <= last:
            keep = np.asarray(cycles) > last
            cycles, values = np.asarray(cycles)[keep], np.asarray(values)[keep]
        if not len(cycles):
            return
        frac = self._frac[probe.name]
        if frac is not None:   # the codes: exact, the values are on the format's grid
            scaled = np.multiply(values, 2.0 ** frac)
            values = np.rint(scaled, out=scaled).astype(data.dtype)
        else:
            values = values.astype(data.dtype)
        _extend(data, values)
        _extend(cyc, cycles)
        self._last[probe.name] = int(cycles[-1])

    def commit(self, end) -> None:
        """After each chunk: event counters, cycles completed, then flush to
        disk. end: the emulator, or its cycle and event counts at the end of
        the chunk (engine.ChunkEnd).

        The events' `cycles` row is appended last: a reader takes the last
        one as the end of the last complete flush (Trace, live reading)."""
        with self._guard():
            self.f.attrs["cycles_completed"] = end.cycle - self.start_cycle
            self._write_events(end)
            self.f.flush()
            self._check_space()

    def _check_space(self):
        """Stop before the disk is full, not when it is: after each flush, the
        free space must hold twice what the last flush added (and 256 kB),
        else the run stops here, with the file whole (end_reason "failed:
        disk full: ..."). A disk that fills faster is caught by _guard."""
        try:
            size = os.fstat(self.f.id.get_vfd_handle()).st_size
            st = os.statvfs(self.path.parent)
        except (OSError, ValueError, RuntimeError):
            return
        grown, self._size = max(size - self._size, 0), size
        free = st.f_bavail * st.f_frsize
        if free < 2 * grown + (256 << 10):
            raise OSError(28, "No space left on device (less than twice the last flush is free)")
    def evaluation(self, cycle: int, cost: float, accuracy: float) -> None:
        with self._guard():
            for key, v in (("cycles", cycle), ("cost", cost), ("accuracy", accuracy)):
                _extend(self._eval[key], np.array([v]))
            self.f.flush()

    @contextlib.contextmanager
    def _guard(self):
        """Signals wait until a write is whole; an OS or HDF5 error (disk full)
        becomes a TraceError naming the file, and the writer stops writing."""
        if self.failed is not None:
            raise TraceError(self.failed)
        with critical():
            try:
                yield
            except (OSError, RuntimeError, ValueError) as exc:
                why = describe(exc)
                self.failed = (f"{self.path}: writing the trace failed ({why}); it holds every "
                               "sample up to the last complete flush and is marked incomplete")
                self._failure_reason = (f"{END_DISK_FULL}: {why}" if disk_is_full(exc)
                                        else f"{END_FAILED}{type(exc).__name__}: {why}")
                # The space reserved at the start lets HDF5 write out what it
                # holds, so the file on disk is whole again (and closes).
                self._free_reserve()
                try:
                    self.f.flush()
                except Exception:  # noqa: BLE001 - it cannot: keep the objects, never free them
                    global UNCLOSED
                    UNCLOSED = True
                    _KEEP.append(self.__dict__)  # see UNCLOSED
                raise TraceError(self.failed) from None

    def _free_reserve(self):
        if getattr(self, "_reserve", None) is not None:
            with _quiet():
                self._reserve.unlink()
            self._reserve = None

    def _write_events(self, end):
        """The event counts and cycle of `end` (the emulator, or what it was at
        the end of a chunk: engine.ChunkEnd)."""
        counts = np.array([[s, w] for s, w in end.events.values()], dtype=np.int64)
        _extend(self._ev_counts, counts[None])
        _extend(self._ev_cycles, np.array([end.cycle], dtype=np.int64))

    def close(self, complete: bool, reason: str) -> None:
        """Mark the run complete (only after the last flush) or not, and close.

        Never raises for a file that cannot be written any more (disk full):
        it then keeps what the last successful flush left, marked incomplete
        (`end_reason` says why when it can still be written, else it stays
        "running"). Signals wait until the file is closed."""
        if self.closed:
            return
        self.closed = True
        with critical():
            try:
                if self.failed is None:
                    try:
                        self.emu.flush(self)
                    except TraceError:
                        pass
                if self.failed is not None:
                    complete, reason = False, self._failure_reason
                with _quiet():
                    self.f.attrs["end_reason"] = reason
                    self.f.attrs["complete"] = bool(complete)
                    self.f.flush()
                if not UNCLOSED:
                    with _quiet():
                        self.f.close()
            finally:
                self._free_reserve()
                self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            done = self.emu.cycle - self.start_cycle
            self.close(done >= self.cycles_requested,
                       END_COMPLETED if done >= self.cycles_requested else END_STOPPED)
        else:
            self.close(False, end_reason_of(exc))
        return False


def _extend(ds, values) -> None:
    """Append rows to a dataset; if writing them fails (disk full), shrink
    it back, so no row of fill values is ever left in the file."""
    n0 = ds.shape[0]
    ds.resize(n0 + len(values), axis=0)
    try:
        ds[n0:] = values
    except BaseException:
        with _quiet():
            ds.resize(n0, axis=0)
        raise


RESERVE_BYTES = 4 << 20


def _make_reserve(path: Path):
    """A file of min(4 MB, a quarter of the free space) beside the trace,
    removed when the disk fills up, so that HDF5 can still write out what it
    holds and close the trace whole. None when there is no room for it."""
    reserve = path.parent / f".{path.name}.reserve"
    try:
        st = os.statvfs(path.parent)
        size = int(max(64 << 10, min(RESERVE_BYTES, st.f_bavail * st.f_frsize // 4)))
        fd = os.open(reserve, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        return reserve
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            reserve.unlink()
        return None


def end_reason_of(exc: BaseException) -> str:
    """The end_reason of a run that an exception stopped."""
    if isinstance(exc, KeyboardInterrupt):
        return interrupted(signal_name(exc))
    return f"{END_FAILED}{type(exc).__name__}: {one_line(exc)}"


@contextlib.contextmanager
def _quiet():
    """Best effort: HDF5 errors on a file that cannot be written any more are ignored."""
    try:
        yield
    except Exception:  # noqa: BLE001 - cleaning up after a failure already reported
        pass


# ---------------------------------------------------------------- reading

class Signal:
    """One recorded signal: `cycles` [n], `data` [n, *shape] as stored
    (integer codes for fixed-point, float64 values otherwise), and its format.

    Nothing is read until asked for: `count`, `first_cycle`, `last_cycle`
    read a few numbers; `cycles`, `data`, `values` read the whole signal (and
    keep it); `read(start, stop, step)` and `decimated(max_samples)` read a
    part, so a tool that uses them works in bounded memory. n is the
    consistent prefix tracecheck found (equal lengths, whole flushes)."""

    def __init__(self, trace: "Trace", info):
        self._trace = trace
        self.name = info.name
        self.format = info.format if info.format is not None or info.attrs["format_kind"] != "float" \
            else Format("float")
        self.index = info.attrs["index"]
        self.register_shape = info.register_shape
        self.elements = info.elements
        self.description = info.attrs["description"]
        self.attrs = info.attrs
        self.shape = info.shape
        self.count = info.n
        self._cycles = self._data = None

    def read(self, start: int = 0, stop: int | None = None, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(cycles, data) of samples start:stop:step of the consistent prefix."""
        start, stop, step = slice(start, stop, step).indices(self.count)
        with self._trace._open() as f:
            g = f["signals"][self.name]
            return g["cycles"][start:stop:step], g["data"][start:stop:step]

    def read_cycles(self, start: int = 0, stop: int | None = None, step: int = 1) -> np.ndarray:
        """The cycle numbers of samples start:stop:step (8 bytes a sample)."""
        start, stop, step = slice(start, stop, step).indices(self.count)
        with self._trace._open() as f:
            return f["signals"][self.name]["cycles"][start:stop:step]

    def decimated(self, max_samples: int) -> "Signal":
        """A view of every k-th sample, k the smallest that leaves at most
        max_samples (the last sample always kept): memory bounded by max_samples."""
        k = max(1, -(-self.count // max(int(max_samples), 1)))
        view = Signal.__new__(Signal)
        view.__dict__.update(self.__dict__)
        if k == 1:
            return self
        c, d = self.read(0, None, k)
        if self.count and (self.count - 1) % k:
            c1, d1 = self.read(self.count - 1, self.count)
            c, d = np.concatenate([c, c1]), np.concatenate([d, d1])
        view._cycles, view._data, view.count = c, d, c.size
        view.decimation = k
        return view

    decimation = 1

    def _load(self):
        if self._cycles is None:
            self._cycles, self._data = self.read()

    @property
    def cycles(self) -> np.ndarray:
        self._load()
        return self._cycles

    @property
    def data(self) -> np.ndarray:
        self._load()
        return self._data

    @property
    def first_cycle(self) -> int | None:
        return int(self.read_cycles(0, 1)[0]) if self.count else None

    @property
    def last_cycle(self) -> int | None:
        return int(self.read_cycles(self.count - 1, self.count)[0]) if self.count else None

    @property
    def values(self) -> np.ndarray:
        """Real values: code x 2^-frac_bits for fixed-point signals."""
        if self.format is not None and self.format.is_fixed:
            return np.ldexp(self.data.astype(np.float64), -self.format.frac_bits)
        return self.data.astype(np.float64)

    @property
    def codes(self) -> np.ndarray:
        """Integer codes (fixed-point signals only)."""
        if self.format is None or not self.format.is_fixed:
            raise TraceError(f"{self.name} is not a fixed-point signal; it has no codes")
        return self.data.astype(np.int64)


class Trace:
    """A trace file, read: attributes, signals, evaluation, events, the chip.

    Opening checks the whole file (tracecheck.check) and reads only its
    attributes; signals are read when asked for. A trace being written
    (`live`: the process holding its lock) or left by a killed writer is read
    as an SWMR reader, up to its last complete flush."""

    def __init__(self, path):
        from .safe_io import writer_alive
        from .tracecheck import check

        self.path = Path(path)
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise TraceError(f"{self.path}: {describe(exc) if exc.errno != 2 else 'no such file'}") from None
        import stat as stat_mod

        if stat_mod.S_ISDIR(st.st_mode):
            raise TraceError(f"{self.path}: is a directory, not a trace file (traces are .h5 files)")
        if not stat_mod.S_ISREG(st.st_mode):
            raise TraceError(f"{self.path}: is not a regular file, so not an mgd-emu trace")
        self.live = writer_alive(self.path)
        # A live trace is read as an SWMR reader from the start: opened
        # plainly, HDF5 can find the writer's last flush partly on disk and
        # refuse it as truncated (the SWMR reader skips that check).
        self._swmr = bool(self.live)
        try:
            with self._open() as f:
                c = check(f, self.path)
        except TraceError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise TraceError(f"{self.path}: cannot be read as an mgd-emu trace ({describe(exc)})") from None
        self._checked = c
        self.attrs = c.attrs
        self.cut = c.cut
        self._chip = c.chip
        self._data_chip = None   # the chip checked with its data file, once asked for (data_chip)
        self._signals = {name: Signal(self, info) for name, info in c.signals.items()}
        with self._open() as f:
            ev, evl = f["events"], f["evaluation"]
            n = c.n_events
            self._events = (c.event_names, ev["cycles"][n - 1:n], ev["counts"][n - 1:n])
            m = c.n_evaluations
            self.evaluation = tuple(evl[k][:m] for k in ("cycles", "cost", "accuracy"))

    @contextlib.contextmanager
    def _open(self):
        try:
            if not self._swmr:
                try:
                    f = h5py.File(self.path, "r", locking=False)
                except OSError as exc:
                    if "already open for write" not in str(exc) and "swmr" not in str(exc).lower():
                        raise TraceError(f"{self.path}: not an HDF5 file, so not an mgd-emu trace "
                                         f"({hdf5_cause(exc)})") from None
                    # still being written, or its writer was killed: an SWMR reader
                    self._swmr = True
            if self._swmr:
                f = h5py.File(self.path, "r", locking=False, swmr=True)
        except TraceError:
            raise
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot be read ({describe(exc)})") from None
        with f:
            yield f

    # ------------------------------------------------------------ contents
    @property
    def complete(self) -> bool:
        return bool(self.attrs["complete"])

    @property
    def seed(self) -> int:
        return int(self.attrs["seed"])

    @property
    def cycles_completed(self) -> int:
        """Cycles run up to the last complete flush."""
        return min(int(self.attrs["cycles_completed"]), self.cut - int(self.attrs["start_cycle"])) \
            if self.live else int(self.attrs["cycles_completed"])

    @property
    def status(self) -> str:
        """complete / live (being written by ...) / INCOMPLETE (end_reason)."""
        if self.live:
            return f"LIVE (being written by {self.live}), read up to cycle {self.cut:,}"
        if self.complete:
            return "complete"
        reason = self.attrs["end_reason"]
        if reason == END_RUNNING:
            reason += "; its writer is gone (killed), so it stops at its last flush"
        return f"INCOMPLETE ({reason})"

    @property
    def signals(self) -> list[str]:
        return list(self._signals)

    def signal(self, name: str) -> Signal:
        if name not in self._signals:
            raise TraceError(f"{self.path}: no signal {name!r} (recorded: {', '.join(self._signals) or 'none'})")
        return self._signals[name]

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.signal(name)
        return s.cycles, s.values

    def codes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.signal(name)
        return s.cycles, s.codes

    @property
    def events(self) -> dict[str, tuple[int, int]]:
        """(saturations, wraps) per register at the last flush."""
        names, _, counts = self._events
        if len(counts) == 0:
            return {n: (0, 0) for n in names}
        return {n: (int(c[0]), int(c[1])) for n, c in zip(names, counts[-1])}

    @property
    def chip(self) -> Chip:
        """The fully resolved chip description the run used (for a chip that
        learns from a data file, checked without it: see data_chip)."""
        return self._chip

    def data_chip(self, what: str) -> Chip:
        """The chip, for `what` needs the task's data too (rebuilding the run, an
        exact gradient): a chip that learns from a data file is checked with
        that file, which must hold the data the run learned (the trace's
        train_dataset); TraceError in one line otherwise."""
        if self._chip.task.name != "file":
            return self._chip
        if self._data_chip is None:
            from .datafile import DataFileError
            from .spec import ChipError, loads_chip
            from .tasks import make_task

            try:
                chip = loads_chip(self.attrs["chip"], f"{self.path}:chip")
                identity = make_task(chip.task.name, **chip.task_params()).train.identity
            except (ChipError, DataFileError) as exc:
                raise TraceError(f"{self.path}: {what} needs the data file the run learned from "
                                 f"({getattr(exc, 'message', exc)})") from None
            if identity != self.attrs["train_dataset"]:
                raise TraceError(f"{self.path}: {what} needs the data file the run learned from, and "
                                 f"{chip.task.path} holds other data now ({identity}; the run learned "
                                 f"{self.attrs['train_dataset']}): run it where the run ran, or restore the file")
            self._data_chip = chip
        return self._data_chip

    def emulator(self):
        """A fresh Emulator of the recorded chip and seed, at cycle 0, with the same probes.
        Refused (TraceError) when the chip would not fit in this machine's memory."""
        from .engine import Emulator
        from .limits import ResourceError, check_chip_fits

        chip = self.data_chip("rebuilding its emulator").replace({"trace.probes": []})
        probes = json.loads(self.attrs["probes"])
        try:
            check_chip_fits(chip, probes=probes)
        except ResourceError as exc:
            raise TraceError(f"{self.path}: its chip cannot be rebuilt here ({exc})") from None
        return Emulator(chip, self.seed, probes=probes)


def open_trace(path) -> Trace:
    return Trace(path)


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def safe_file_stem(name: str, default: str = "chip") -> str:
    """A chip name made safe as part of a file name: letters, digits, '.',
    '-' and '_' only (anything else, '/' and NUL included, becomes '_'), no
    leading '.', at most 80 characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".")[:80]
    return stem if stem.strip("_") else default


def default_trace_path(chip: Chip, seed: int, directory="traces") -> Path:
    """traces/<chip name, sanitised>-s<seed>-<time>-<pid>.h5: always inside `directory`."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(directory) / f"{safe_file_stem(chip.name)}-s{seed}-{stamp}-{os.getpid()}.h5"
