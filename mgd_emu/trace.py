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

import datetime
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .fixedpoint import Format
from .probes import Probe
from .spec import Chip, loads_chip

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
END_INTERRUPTED = "interrupted (Ctrl-C)"
END_FAILED = "failed: "                     # + "ExceptionType: message"


def target_reached(accuracy: float) -> str:
    """end_reason of a run stopped at a target test accuracy (complete = true)."""
    return f"target accuracy {float(accuracy)!r} reached"


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


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


class TraceWriter:
    """Streams an emulator's probes into an HDF5 trace.

    Use as a context manager around the run: leaving it normally after
    `cycles_requested` cycles marks the trace complete; an exception
    (Ctrl-C included) leaves it marked incomplete, with what was flushed.
    """

    def __init__(self, path, emu, cycles_requested: int, note: str = ""):
        self.path = Path(path)
        self.emu = emu
        self.start_cycle = emu.cycle
        self.cycles_requested = int(cycles_requested)
        self.closed = False
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = h5py.File(self.path, "w", libver=LIBVER)
        except (OSError, ValueError) as exc:
            raise TraceError(f"{self.path}: cannot be written ({_one_line(exc)})") from None
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
        self._write_events()
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
        data, cyc = self._data[probe.name], self._cycles[probe.name]
        n0, n = data.shape[0], len(cycles)
        frac = self._frac[probe.name]
        if frac is not None:
            values = np.rint(np.ldexp(values, frac)).astype(data.dtype)
        else:
            values = values.astype(data.dtype)
        data.resize(n0 + n, axis=0)
        data[n0:] = values
        cyc.resize(n0 + n, axis=0)
        cyc[n0:] = cycles

    def commit(self, emu) -> None:
        """After each chunk: event counters, cycles completed, then flush to disk."""
        self._write_events()
        self.f.attrs["cycles_completed"] = emu.cycle - self.start_cycle
        self.f.flush()

    def evaluation(self, cycle: int, cost: float, accuracy: float) -> None:
        for key, v in (("cycles", cycle), ("cost", cost), ("accuracy", accuracy)):
            d = self._eval[key]
            d.resize(d.shape[0] + 1, axis=0)
            d[-1] = v
        self.f.flush()

    def _write_events(self):
        counts = np.array([[s, w] for s, w in self.emu.events.values()], dtype=np.int64)
        n = self._ev_cycles.shape[0]
        self._ev_cycles.resize(n + 1, axis=0)
        self._ev_cycles[n] = self.emu.cycle
        self._ev_counts.resize(n + 1, axis=0)
        self._ev_counts[n] = counts

    def close(self, complete: bool, reason: str) -> None:
        """Mark the run complete (only after the last flush) or not, and close."""
        if self.closed:
            return
        self.closed = True
        self.emu.flush(self)
        self.commit(self.emu)
        self.f.attrs["end_reason"] = reason
        self.f.attrs["complete"] = bool(complete)
        self.f.flush()
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            done = self.emu.cycle - self.start_cycle
            self.close(done >= self.cycles_requested,
                       END_COMPLETED if done >= self.cycles_requested else END_STOPPED)
        else:
            reason = (END_INTERRUPTED if exc_type is KeyboardInterrupt
                      else f"{END_FAILED}{exc_type.__name__}: {_one_line(exc)}")
            self.close(False, reason)
        return False


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class Signal:
    """One recorded signal: `cycles` [n], `data` [n, *shape] as stored
    (integer codes for fixed-point, float64 values otherwise), and its format."""

    name: str
    cycles: np.ndarray
    data: np.ndarray
    format: Format | None
    index: str
    register_shape: tuple
    elements: np.ndarray
    description: str
    attrs: dict

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
    """A trace file, read: attributes, signals, evaluation, events, the chip."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise TraceError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise TraceError(f"{self.path}: is a directory, not a trace file (traces are .h5 files)")
        try:
            f = h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            if "already open for write" not in str(exc):
                raise TraceError(f"{self.path}: not an HDF5 file, so not an mgd-emu trace "
                                 f"({_hdf5_cause(exc)})") from None
            # still being written, or its writer was killed: read it as an SWMR reader
            f = h5py.File(self.path, "r", locking=False, swmr=True)
        with f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            if attrs.get("format") != FORMAT_NAME:
                raise TraceError(f"{self.path}: not an mgd-emu trace (its format attribute is {attrs.get('format')!r})")
            if attrs.get("format_version") != FORMAT_VERSION:
                raise TraceError(f"{self.path}: trace format version {attrs.get('format_version')!r} is not supported "
                                 f"(this mgd-emu {__version__} reads version {FORMAT_VERSION})")
            self.attrs = attrs
            self._signals = {name: self._read_signal(name, g) for name, g in f["signals"].items()}
            ev = f["events"]
            self._events = (json.loads(ev.attrs["registers"]), ev["cycles"][()], ev["counts"][()])
            evl = f["evaluation"]
            self.evaluation = tuple(evl[k][()] for k in ("cycles", "cost", "accuracy"))

    def _read_signal(self, name, g) -> Signal:
        a = {k: _plain(v) for k, v in g.attrs.items()}
        fmt = None
        if a["format_kind"] == "fixed":
            fmt = Format("fixed", bool(a["signed"]), int(a["int_bits"]), int(a["frac_bits"]),
                         a["rounding"], a["overflow"])
        elif a["format_kind"] == "float":
            fmt = Format("float")
        return Signal(name, g["cycles"][()], g["data"][()], fmt, a["index"],
                      tuple(int(v) for v in np.atleast_1d(a["register_shape"])) if np.size(a["register_shape"]) else (),
                      np.asarray(a["elements"]), a["description"], a)

    # ------------------------------------------------------------ contents
    @property
    def complete(self) -> bool:
        return bool(self.attrs["complete"])

    @property
    def seed(self) -> int:
        return int(self.attrs["seed"])

    @property
    def cycles_completed(self) -> int:
        return int(self.attrs["cycles_completed"])

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
        """The fully resolved chip description the run used."""
        return loads_chip(self.attrs["chip"], f"{self.path}:chip")

    def emulator(self):
        """A fresh Emulator of the recorded chip and seed, at cycle 0, with the same probes."""
        from .engine import Emulator

        chip = self.chip.replace({"trace.probes": []})
        return Emulator(chip, self.seed, probes=json.loads(self.attrs["probes"]))


def _hdf5_cause(exc) -> str:
    """HDF5's reason for refusing a file, on one line: its `error message`
    field when it has one (h5py's text also carries a time stamp and buffer
    addresses), else the whole text."""
    text = _one_line(exc)
    m = re.search(r"error message = '([^']*)'", text)
    if m:
        return m.group(1)
    m = re.search(r"\(([^()]*)\)\s*$", text)  # "Unable to ... (file signature not found)"
    return m.group(1) if m else text


def open_trace(path) -> Trace:
    return Trace(path)


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def default_trace_path(chip: Chip, seed: int, directory="traces") -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(directory) / f"{chip.name}-s{seed}-{stamp}-{os.getpid()}.h5"
