"""The one place a trace file is checked before any tool uses it.

`check(f, path)` reads an open HDF5 file and returns a `Checked` summary, or
raises TraceError naming the file and what is wrong (one line). Every tool
(the reader `Trace`, and through it inspect, plot, export vcd/golden,
`Trace.emulator()`) reads only what this module has checked:

- no link to another file anywhere (external links, soft links, datasets with
  external storage, virtual datasets): a trace is one self-contained file;
- every root attribute the tools use, with its type and range (a format name
  and version this reader knows, a seed in 0..2^63-1, clock_hz finite and
  > 0, cycle counts >= 0, the chip description, which must load and pass
  validation, and the probe list, which must parse against that chip);
- the groups `signals`, `events`, `evaluation` and their datasets, with
  dtype, rank and shape; each signal's register must be one of the chip's,
  with its shape, the index subset inside it, the recorded format equal to the
  chip's format of that register and the stored dtype the one that format
  implies (so codes are never truncated or widened);
- lengths: `cycles` and `data` of a signal may differ only while a run is
  being written (or was killed mid-append); the usable part is the
  consistent prefix: samples whose cycle is before the end of the last
  complete flush (the last row of `events/cycles`), and whose cycles strictly
  increase (checked in blocks, so memory stays bounded);
- evaluation rows: the common length of its three datasets.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import h5py
import numpy as np

MAX_SEED = 2**63 - 1
_BLOCK = 1 << 18  # samples read at a time when checking cycles (2 MB)


@dataclass
class SignalInfo:
    name: str
    attrs: dict
    format: object          # fixedpoint.Format or None (an index)
    n: int                  # samples in the consistent prefix
    shape: tuple            # subset shape of one sample
    register_shape: tuple
    elements: np.ndarray
    dtype: np.dtype


@dataclass
class Checked:
    attrs: dict
    chip: object
    signals: dict = field(default_factory=dict)
    event_names: list = field(default_factory=list)
    n_events: int = 0
    n_evaluations: int = 0
    cut: int = 0            # end of the last complete flush: samples before it are whole


def _err(path, text):
    from .trace import TraceError

    return TraceError(f"{path}: {text}")


def _plain(v):
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


ROOT_ATTRS = {
    # name: (kind, allowed)
    "format": ("str", None), "format_version": ("int", None), "mgd_emu_version": ("str", None),
    "created": ("str", None), "chip": ("str", None), "chip_name": ("str", None),
    "chip_source": ("str", None), "seed": ("int", (0, MAX_SEED)), "task": ("str", None),
    "task_params": ("json", None), "train_dataset": ("str", None), "test_dataset": ("str", None),
    "clock_hz": ("positive", None), "start_cycle": ("int", (0, 2**62)),
    "cycles_requested": ("int", (0, 2**62)), "cycles_completed": ("int", (0, 2**62)),
    "complete": ("bool", None), "end_reason": ("str", None), "probes": ("json", None),
    "note": ("str", None),
}

SIGNAL_ATTRS = {
    "format_kind": ("str", ("fixed", "float", "index")), "signed": ("bool", None),
    "int_bits": ("int", (-1, 64)), "frac_bits": ("int", (-1, 64)), "width": ("int", (0, 64)),
    "rounding": ("str", None), "overflow": ("str", None), "storage": ("str", ("code", "value")),
    "register": ("str", None), "block": ("str", None), "description": ("str", None),
    "unit": ("str", None), "continuity": ("str", None), "index": ("str", None),
    "every": ("int", (1, 2**62)), "window_start": ("int", (0, 2**62)),
    "window_stop": ("int", (-1, 2**62)), "probe": ("str", None),
}


def _attr(path, where, attrs, key, kind, allowed):
    if key not in attrs:
        raise _err(path, f"{where}attribute {key!r} is missing (a damaged or hand-made trace)")
    v = attrs[key]
    bad = None
    if kind in ("str", "json"):
        if not isinstance(v, str):
            bad = "a string"
        elif kind == "json":
            try:
                v = json.loads(v)
            except (ValueError, RecursionError):
                bad = "JSON text"
        elif allowed is not None and v not in allowed:
            bad = "one of " + ", ".join(allowed)
    elif kind == "int":
        if not _is_int(v):
            bad = "an integer"
        elif allowed is not None and not allowed[0] <= int(v) <= allowed[1]:
            bad = f"an integer in {allowed[0]}..{allowed[1]}"
        else:
            v = int(v)
    elif kind == "bool":
        if isinstance(v, (bool, np.bool_)) or _is_int(v) and int(v) in (0, 1):
            v = bool(v)
        else:
            bad = "true or false"
    elif kind == "positive":
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_)) \
                or not math.isfinite(float(v)) or float(v) <= 0:
            bad = "a finite number > 0"
        else:
            v = float(v)
    if bad:
        shown = repr(v)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise _err(path, f"{where}attribute {key!r} is {shown}; it must be {bad}")
    return v


def _refuse_links(f, path):
    """No external or soft link, no external storage, no virtual dataset."""
    stack = [("/", f)]
    seen = 0
    while stack:
        name, group = stack.pop()
        for key in group.keys():
            seen += 1
            if seen > 100_000:
                raise _err(path, "holds more than 100,000 objects; not an mgd-emu trace")
            link = group.get(key, getlink=True)
            full = f"{name.rstrip('/')}/{key}"
            if isinstance(link, h5py.ExternalLink):
                raise _err(path, f"{full} is a link to another file ({link.filename}); "
                                 "a trace must be one self-contained file")
            if isinstance(link, h5py.SoftLink):
                raise _err(path, f"{full} is a soft link ({link.path}); a trace holds no links")
            obj = group.get(key)
            if isinstance(obj, h5py.Group):
                stack.append((full, obj))
            elif isinstance(obj, h5py.Dataset):
                if obj.external or obj.is_virtual:
                    raise _err(path, f"{full} keeps its data in other files; "
                                     "a trace must be one self-contained file")


def _group(path, f, name):
    g = f.get(name)
    if not isinstance(g, h5py.Group):
        what = "is missing" if g is None else "is not a group"
        raise _err(path, f"group {name!r} {what} (a damaged or hand-made trace)")
    return g


def _dataset(path, g, name, dtypes, ndim):
    d = g.get(name)
    where = f"{g.name.rstrip('/')}/{name}"
    if not isinstance(d, h5py.Dataset):
        raise _err(path, f"dataset {where} is {'missing' if d is None else 'not a dataset'}")
    if d.dtype not in [np.dtype(t) for t in dtypes]:
        raise _err(path, f"dataset {where} has dtype {d.dtype}; expected {' or '.join(map(str, dtypes))}")
    if (d.ndim != ndim) if isinstance(ndim, int) else d.ndim < 1:
        raise _err(path, f"dataset {where} has shape {d.shape}; expected {ndim} dimension(s)")
    return d


def _increasing_prefix(path, where, cycles: h5py.Dataset, n: int, cut: int, complete: bool) -> int:
    """How many of the first n cycles are before `cut`; refuses cycles that
    do not strictly increase or are negative in a complete trace. In an
    incomplete one (its writer killed, or its disk full) the prefix ends
    where they stop increasing. Reads in blocks."""
    last, keep = -1, 0
    for a in range(0, n, _BLOCK):
        block = cycles[a:min(n, a + _BLOCK)]
        if block.size == 0:
            break
        bad = np.flatnonzero(np.diff(np.concatenate([[last], block])) <= 0)
        if bad.size:
            if complete:
                raise _err(path, f"{where}: the cycle numbers do not strictly increase "
                                 "(a damaged or hand-made trace)")
            block = block[:bad[0]]
            k = int(np.searchsorted(block, cut, side="left"))
            return keep + k
        if block[0] < 0:
            raise _err(path, f"{where}: a negative cycle number {int(block[0])}")
        last = int(block[-1])
        k = int(np.searchsorted(block, cut, side="left"))
        keep += k
        if k < block.size:
            break
    return keep


def check(f: h5py.File, path) -> Checked:
    """Validate an open trace file (see the module docstring)."""
    from . import __version__
    from .probes import ProbeError, parse_probes, registers_by_name
    from .spec import ChipError, loads_chip
    from .trace import FORMAT_NAME, FORMAT_VERSION, _format_attrs, code_dtype

    raw = {k: _plain(v) for k, v in f.attrs.items()}
    if raw.get("format") != FORMAT_NAME:
        shown = repr(raw.get("format"))[:60]
        raise _err(path, f"not an mgd-emu trace (its format attribute is {shown})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise _err(path, f"trace format version {repr(raw.get('format_version'))[:40]} is not supported "
                         f"(this mgd-emu {__version__} reads version {FORMAT_VERSION})")
    _refuse_links(f, path)
    attrs = dict(raw)
    for key, (kind, allowed) in ROOT_ATTRS.items():
        v = _attr(path, "", raw, key, kind, allowed)
        attrs[key] = raw[key] if kind == "json" else v
    probes = json.loads(raw["probes"])
    if not isinstance(probes, list) or not all(isinstance(p, str) for p in probes):
        raise _err(path, "attribute 'probes' must be a JSON list of probe texts")
    if not isinstance(json.loads(raw["task_params"]), dict):
        raise _err(path, "attribute 'task_params' must be a JSON object")
    try:
        chip = loads_chip(attrs["chip"], f"{path}:chip", data=False)   # readable wherever the data file is
    except ChipError as exc:
        raise _err(path, f"its recorded chip description is invalid ({exc})") from None
    if chip.timing.clock_hz != attrs["clock_hz"]:
        raise _err(path, f"attribute 'clock_hz' is {attrs['clock_hz']!r} but its chip says "
                         f"timing.clock_hz = {chip.timing.clock_hz!r}")
    try:
        parse_probes(probes, chip.replace({"trace.probes": []}))
    except (ProbeError, ChipError) as exc:
        raise _err(path, f"attribute 'probes' does not fit its chip ({exc})") from None
    out = Checked(attrs=attrs, chip=chip)

    # events first: its last cycle is the end of the last complete flush
    ev = _group(path, f, "events")
    try:
        names = json.loads(_plain(ev.attrs.get("registers", "")))
    except (ValueError, TypeError, RecursionError):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _err(path, "events attribute 'registers' must be a JSON list of register names")
    ev_c = _dataset(path, ev, "cycles", ("int64",), 1)
    ev_n = _dataset(path, ev, "counts", ("int64",), 3)
    if ev_n.shape[1:] != (len(names), 2):
        raise _err(path, f"dataset /events/counts has shape {ev_n.shape}; expected (n, {len(names)}, 2)")
    out.event_names = names
    out.n_events = min(ev_c.shape[0], ev_n.shape[0])
    if out.n_events == 0:
        raise _err(path, "dataset /events/cycles is empty: the trace was never flushed")
    _increasing_or_equal(path, "/events/cycles", ev_c, out.n_events)
    out.cut = int(ev_c[out.n_events - 1])
    if out.cut < attrs["start_cycle"]:
        raise _err(path, f"its last flush (cycle {out.cut}) is before its start_cycle {attrs['start_cycle']}")

    evl = _group(path, f, "evaluation")
    dsets = [_dataset(path, evl, k, (dt,), 1) for k, dt in
             (("cycles", "int64"), ("cost", "float64"), ("accuracy", "float64"))]
    out.n_evaluations = min(d.shape[0] for d in dsets)
    _increasing_or_equal(path, "/evaluation/cycles", dsets[0], out.n_evaluations)

    regs = registers_by_name(chip)
    signals = _group(path, f, "signals")
    for name in signals.keys():
        g = signals.get(name)
        where = f"/signals/{name}"
        if not isinstance(g, h5py.Group):
            raise _err(path, f"{where} is not a group")
        if name not in regs:
            raise _err(path, f"{where}: its chip has no register {name!r}")
        reg = regs[name]
        a = {k: _plain(v) for k, v in g.attrs.items()}
        for key, (kind, allowed) in SIGNAL_ATTRS.items():
            a[key] = _attr(path, f"{where} ", a, key, kind, allowed)
        fmt = getattr(chip.formats, reg.format_class) if reg.format_class else None
        want = _format_attrs(fmt)
        if name == "sample_index":
            want.update(storage="value", format_kind="index")
        for key in ("format_kind", "signed", "int_bits", "frac_bits", "width", "rounding", "overflow", "storage"):
            if a[key] != want[key]:
                raise _err(path, f"{where} attribute {key!r} is {a[key]!r} but its chip's format "
                                 f"of {name} says {want[key]!r}")
        if a["register"] != name:
            raise _err(path, f"{where} attribute 'register' is {a['register']!r}, not {name!r}")
        rshape = tuple(int(v) for v in np.atleast_1d(a.get("register_shape", np.zeros(0)))) \
            if np.size(a.get("register_shape", ())) else ()
        if "register_shape" not in a or rshape != tuple(reg.shape):
            raise _err(path, f"{where} attribute 'register_shape' is {a.get('register_shape')!r}; "
                             f"its chip's {name} has shape {tuple(reg.shape)}")
        elements = np.asarray(a.get("elements", None))
        size = int(np.prod(reg.shape)) if reg.shape else 1
        if elements.dtype.kind not in "iu" or elements.ndim != 1 or elements.size == 0 \
                or elements.min() < 0 or elements.max() >= size:
            raise _err(path, f"{where} attribute 'elements' must be flat indices in 0..{size - 1}")
        dtype = np.dtype(np.int64) if name == "sample_index" else code_dtype(fmt)
        data = _dataset(path, g, "data", (dtype,), None)
        cyc = _dataset(path, g, "cycles", ("int64",), 1)
        if int(np.prod(data.shape[1:])) != elements.size:
            raise _err(path, f"{where}/data holds samples of shape {data.shape[1:]}, "
                             f"but {elements.size} elements were probed")
        n = min(data.shape[0], cyc.shape[0])
        n = _increasing_prefix(path, f"{where}/cycles", cyc, n, out.cut, attrs["complete"])
        out.signals[name] = SignalInfo(name, a, fmt if name != "sample_index" else None, n,
                                       tuple(data.shape[1:]), rshape, elements, dtype)
        out.signals[name].attrs["register_shape"] = np.array(rshape, dtype=np.int64)
    return out


def _increasing_or_equal(path, where, d, n, strict=False):
    last = None
    for a in range(0, n, _BLOCK):
        block = d[a:min(n, a + _BLOCK)]
        if block.size == 0:
            break
        diffs = np.diff(block) if block.size > 1 else np.zeros(0)
        if (last is not None and (block[0] < last or strict and block[0] == last)) or \
                np.any(diffs < 0) or strict and np.any(diffs == 0) or block[0] < 0:
            raise _err(path, f"{where}: the cycle numbers do not increase (a damaged or hand-made trace)")
        last = int(block[-1])
