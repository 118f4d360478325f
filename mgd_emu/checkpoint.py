"""Checkpoint files: an emulator's whole state, saved and loaded safely.

`Emulator.checkpoint()` gives a dict::

    {"format": "mgd-emu-checkpoint", "version": VERSION, "chip": TOML text,
     "source": str, "seed": int, "state": {name: numpy array},
     "probes": [probe text, ...],            # optional: probes beyond the chip's [trace]
     "rules": {"updater": "module.name", ...}}   # optional: the user synapse rules of the run

`save_checkpoint(emu, path)` writes it as an NPZ file (numpy's zip of .npy
arrays; the metadata is one JSON string) through safe_io (a temporary name
renamed on success). `load_checkpoint(path)` reads it with
`allow_pickle=False`, so loading never executes anything, checks the sizes
the zip declares before reading a byte of the arrays, and rebuilds the
emulator with `Emulator.restore`, which calls `validate_checkpoint` first.

`validate_checkpoint(ckpt)` refuses, with one-line CheckpointError naming the
key, anything that is not a checkpoint this version wrote for this chip:
format and version; the chip description (it must load and pass validation,
and fit in memory); the seed; the probes (they must parse against the chip);
every state array against a freshly built emulator of the same chip and seed
(the same names, none missing, none extra, each with the same dtype and
shape); and, for the arrays whose meaning is known, their values: the sample
order must be a permutation and the sample indices in range, counters
non-negative, tags and flags valid, generator states nonzero (LFSRs 32-bit),
and every fixed-point register must hold codes of its format. (The
structure and constants the chip and seed fix are not in a checkpoint: the
engine rebuilds them from the chip.) So a tampered or
truncated checkpoint is refused instead of crashing the compiled kernels.
"""
from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from .engine import CHECKPOINT_FORMAT as FORMAT  # noqa: E402
from .engine import CHECKPOINT_VERSION as VERSION  # noqa: E402

MAX_META_BYTES = 16 << 20



class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file or key."""


def _fail(where, text):
    return CheckpointError(f"{where}: {text}" if where else text)


def validate_checkpoint(ckpt, where: str = "checkpoint") -> None:
    """Check a checkpoint dict (module docstring); CheckpointError if it is not valid."""
    from .limits import ResourceError, check_chip_fits
    from .probes import ProbeError, parse_probes
    from .spec import ChipError, loads_chip

    if not isinstance(ckpt, dict):
        raise _fail(where, f"a checkpoint is a dict, not {type(ckpt).__name__}")
    if ckpt.get("format") != FORMAT:
        raise _fail(where, f"not an mgd-emu checkpoint (format {str(ckpt.get('format'))[:40]!r}, "
                           f"expected {FORMAT!r})")
    version = ckpt.get("version")
    if type(version) is not int or version != VERSION:
        raise _fail(where, f"checkpoint version {str(version)[:20]!r} is not supported (this mgd-emu reads {VERSION})")
    allowed = {"format", "version", "chip", "source", "seed", "state", "probes", "rules"}
    extra = sorted(map(str, set(ckpt) - allowed))
    if extra:
        raise _fail(where, f"unknown key(s) {', '.join(extra)[:200]} (allowed: {', '.join(sorted(allowed))})")
    for key in ("chip", "seed", "state"):
        if key not in ckpt:
            raise _fail(where, f"key {key!r} is missing")
    if not isinstance(ckpt["chip"], str):
        raise _fail(where, "key 'chip' must be the chip description as TOML text")
    source = ckpt.get("source", "<checkpoint>")
    if not isinstance(source, (str, os.PathLike)):
        raise _fail(where, "key 'source' must be a string")
    seed = ckpt["seed"]
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)) \
            or not 0 <= int(seed) <= 2**63 - 1:
        raise _fail(where, f"key 'seed' must be an integer 0..{2**63 - 1}, got {str(seed)[:40]}")
    try:
        chip = loads_chip(ckpt["chip"], f"{where}:chip")
    except ChipError as exc:
        raise _fail(where, f"its chip description is invalid ({exc})") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise _fail(where, f"its chip description cannot be read ({type(exc).__name__})") from None
    rules = ckpt.get("rules", {})
    from .rules import SIGNATURES

    if not isinstance(rules, dict) or not all(k in SIGNATURES and isinstance(v, str) for k, v in rules.items()):
        raise _fail(where, "key 'rules' must map correlator / integrator / updater to the names of the run's rules")
    probes = ckpt.get("probes", [])
    if not isinstance(probes, (list, tuple)) or not all(isinstance(p, str) for p in probes):
        raise _fail(where, "key 'probes' must be a list of probe texts")
    try:  # as Emulator.restore takes them: those beyond the chip's [trace] section
        parse_probes([*chip.trace.probes, *[p for p in probes if p not in chip.trace.probes]], chip)
    except ProbeError as exc:
        raise _fail(where, f"key 'probes' does not fit its chip ({exc})") from None
    try:
        check_chip_fits(chip)
    except ResourceError as exc:
        raise _fail(where, str(exc)) from None
    state = ckpt["state"]
    if not isinstance(state, dict):
        raise _fail(where, "key 'state' must be a dict of name -> array")

    from .engine import Emulator

    fresh = Emulator(chip, int(seed)).checkpoint()["state"]
    missing = sorted(set(fresh) - set(state))
    unknown = sorted(map(str, set(state) - set(fresh)))
    if missing:
        raise _fail(where, f"state array(s) missing: {', '.join(missing)}")
    if unknown:
        raise _fail(where, f"state array(s) this chip does not have: {', '.join(unknown)[:200]}")
    for name, ref in fresh.items():
        arr = state[name]
        if not isinstance(arr, np.ndarray):
            raise _fail(where, f"state {name!r} is a {type(arr).__name__}, not a numpy array")
        if arr.dtype != ref.dtype:
            raise _fail(where, f"state {name!r} has dtype {arr.dtype}; this chip's is {ref.dtype}")
        if arr.shape != ref.shape:
            raise _fail(where, f"state {name!r} has shape {arr.shape}; this chip's is {ref.shape}")
    _check_values(where, chip, state, fresh)


def _check_values(where, chip, state, fresh) -> None:
    """Values of the arrays whose meaning is known (a name absent is skipped):
    those the compiled kernels use as indices or flags, and the generator
    states, which must be in range for the kernels not to read out of bounds
    or stick."""
    def bad(name, why):
        return _fail(where, f"state {name!r} {why}")

    n_samples = fresh["smp.order"].shape[0] if "smp.order" in fresh else None
    if "smp.order" in state and n_samples is not None:
        if not np.array_equal(np.sort(state["smp.order"]), np.arange(n_samples)):
            raise bad("smp.order", f"is not a permutation of 0..{n_samples - 1}")
    for name in ("smp.pos", "smp.sample"):
        if name in state and n_samples is not None and np.any((state[name] < 0) | (state[name] >= n_samples)):
            raise bad(name, f"must be a sample index 0..{n_samples - 1}")
    for name, arr in state.items():
        if name.startswith("ctl.") or name in ("gen.code", "smp.epoch") or name == "mon.events":
            if np.any(arr < 0):
                raise bad(name, "holds a negative count")
    if "ctl.step" in state and "ctl.cycle" in state and state["ctl.step"][0] > state["ctl.cycle"][0]:
        raise bad("ctl.step", "is larger than ctl.cycle (more measurement steps than cycles)")
    for name in ("ctl.need_baseline", "pipe.new_sample", "bc.ring_valid", "bc.out_valid"):
        if name in state and np.any((state[name] != 0) & (state[name] != 1)):
            raise bad(name, "must hold 0 or 1")
    if "pipe.tag" in state and np.any((state["pipe.tag"] < 0) | (state["pipe.tag"] > 2)):
        raise bad("pipe.tag", "holds an unknown slot tag (0 none, 1 measure, 2 baseline)")
    if "gen.lfsr" in state and np.any((state["gen.lfsr"] == 0) | (state["gen.lfsr"] >= 1 << 32)):
        raise bad("gen.lfsr", "must hold nonzero 32-bit LFSR states")
    for name, arr in state.items():
        ref = fresh.get(name)
        if arr.dtype == np.uint64 and ref is not None and np.all(ref != 0) and np.any(arr == 0):
            raise bad(name, "holds a generator state of 0 (a xorshift generator never leaves 0)")
    _check_registers(where, chip, state)


def _check_registers(where, chip, state) -> None:
    """Every fixed-point register holds codes of its format (in range, on the grid)."""
    from .probes import register_table

    # The probe table's registers, and the dual path's activations, which
    # the next layer reads but no probe shows.
    checks = [(reg.name, reg.format_class, reg.source, reg.start, int(np.prod(reg.shape)) if reg.shape else 1)
              for reg in register_table(chip) if reg.format_class]
    if "neu.act0" in state:
        checks.append(("neu.act0", "activation", "neu.act0", 0, state["neu.act0"].size))
    for name, format_class, source, start, size in checks:
        fmt = getattr(chip.formats, format_class)
        if source not in state or not fmt.is_fixed:
            continue
        v = state[source][start:start + size]
        if v.dtype.kind != "f":
            continue
        codes = np.ldexp(v, fmt.frac_bits)
        ok = np.isfinite(codes) & (codes == np.rint(codes)) & (codes >= fmt.min_code) & (codes <= fmt.max_code)
        if not np.all(ok):
            i = int(np.flatnonzero(~ok)[0])
            raise _fail(where, f"register {name} element {i} holds {float(v[i])!r}, not a value of its format "
                               f"{fmt.describe()}")


# ------------------------------------------------------------------ files

def _probes_beyond_chip(emu) -> list[str]:
    """The emulator's probes that its chip's [trace] section does not already give."""
    from .probes import parse_probes

    tr = emu.chip.trace
    stop = tr.window_stop if tr.window_stop > 0 else None
    own = {p.text for p in parse_probes(list(tr.probes), emu.chip, tr.every, tr.window_start, stop)}
    return [p.text for p in emu.probes if p.text not in own]


def save_checkpoint(emu, path, inputs=()) -> Path:
    """Write `emu`'s checkpoint to `path` (NPZ, never pickled), atomically:
    a temporary file renamed on success, never over one of `inputs`."""
    from .safe_io import output

    ckpt = emu.checkpoint()
    meta = {"format": ckpt["format"], "version": ckpt["version"], "chip": ckpt["chip"],
            "source": str(ckpt.get("source", "")), "seed": int(ckpt["seed"]),
            "probes": _probes_beyond_chip(emu)}
    if "rules" in ckpt:
        meta["rules"] = ckpt["rules"]
    arrays = {"meta": np.array(json.dumps(meta))}
    for name, arr in ckpt["state"].items():
        arrays[f"state.{name}"] = np.ascontiguousarray(arr)
    with output(path, inputs, "checkpoint", mode="wb") as fp:
        np.savez(fp, **arrays)
    return Path(path)


def read_checkpoint(path) -> dict:
    """The checkpoint dict stored in `path`, not yet validated. Never executes
    anything (no pickle); refuses non-regular files and oversize members."""
    path = Path(path)
    where = str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        from .errors import describe

        raise _fail(where, f"cannot be read ({describe(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(where, "is not a regular file, so not a checkpoint")
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _fail(where, f"not an mgd-emu checkpoint file (not an NPZ archive: {exc})") from None
    if "meta.npy" not in infos:
        raise _fail(where, "not an mgd-emu checkpoint file (no metadata)")
    if infos["meta.npy"].file_size > MAX_META_BYTES:
        raise _fail(where, "its metadata is larger than 16 MB; not a checkpoint this version wrote")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a JSON object")
            ckpt = {k: meta[k] for k in ("format", "version", "chip", "source", "seed", "probes", "rules")
                    if k in meta}
            if ckpt.get("format") != FORMAT or ckpt.get("version") != VERSION:
                validate_checkpoint({**ckpt, "state": {}}, where)  # says what is wrong
            # the sizes the zip declares, against a fresh build, before reading the arrays
            expected = _expected_bytes(ckpt, where)
            declared = sum(i.file_size for n, i in infos.items() if n != "meta.npy")
            if declared > expected + (1 << 20) + 1024 * len(infos):
                raise _fail(where, f"its arrays declare {declared:,} bytes; this chip's state is "
                                   f"{expected:,} bytes")
            state = {}
            for key in z.files:
                if key.startswith("state."):
                    state[key[len("state."):]] = z[key]
                elif key != "meta":
                    raise _fail(where, f"unknown member {key!r}")
            ckpt["state"] = state
    except CheckpointError:
        raise
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError, TypeError) as exc:
        from .errors import one_line

        raise _fail(where, f"damaged or not a checkpoint this version wrote ({one_line(exc)[:200]})") from None
    return ckpt


def _expected_bytes(ckpt, where) -> int:
    validate_head = {k: ckpt[k] for k in ("format", "version", "chip", "source", "seed", "probes") if k in ckpt}
    from .spec import ChipError, loads_chip

    try:
        chip = loads_chip(validate_head.get("chip", ""), f"{where}:chip")
    except (ChipError, TypeError) as exc:
        raise _fail(where, f"its chip description is invalid ({exc})") from None
    from .limits import state_bytes

    return state_bytes(chip)


def load_checkpoint(path, rules=None):
    """The Emulator saved in `path`, validated (validate_checkpoint) and
    restored with its probes (and `rules`, the user synapse rules of the run
    if it had any); CheckpointError for anything else."""
    from .engine import Emulator

    ckpt = read_checkpoint(path)
    try:
        return Emulator.restore(ckpt, rules=rules)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {str(exc).removeprefix('checkpoint: ')}") from None
