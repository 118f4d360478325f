"""Hypothesis strategies for number formats, chip descriptions, seeds and probes."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from hypothesis import note, reject
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..fixedpoint import FLOAT, MAX_WIDTH, OVERFLOWS, ROUNDINGS, Format
from ..spec import Chip, ChipError, load_chip, loads_chip

MAX_SEED = 2**63 - 1
"""The largest seed `Emulator` accepts (seeds are 63-bit)."""


# -- number formats -------------------------------------------------------------

@st.composite
def fixed_formats(draw, signed=None, rounding=None, overflow=None,
                  int_bits=(0, 16), frac_bits=(0, 16), max_width=MAX_WIDTH):
    """Fixed-point `Format`s: signed, rounding, overflow drawn unless given;
    int_bits and frac_bits within the inclusive (lo, hi) ranges; total width
    (signed + int_bits + frac_bits) 1..max_width. A width of 0 is drawn as
    frac_bits = 1."""
    signed = draw(st.booleans()) if signed is None else signed
    frac = draw(st.integers(frac_bits[0], min(frac_bits[1], max_width - int(signed) - int_bits[0])))
    n_int = draw(st.integers(int_bits[0], min(int_bits[1], max_width - int(signed) - frac)))
    if int(signed) + n_int + frac == 0:
        frac = 1
    return Format(kind="fixed", signed=signed, int_bits=n_int, frac_bits=frac,
                  rounding=draw(st.sampled_from(ROUNDINGS)) if rounding is None else rounding,
                  overflow=draw(st.sampled_from(OVERFLOWS)) if overflow is None else overflow)


def number_formats(**fixed) -> SearchStrategy[Format]:
    """The float format or a fixed one (`fixed_formats(**fixed)`)."""
    return st.one_of(st.just(FLOAT), fixed_formats(**fixed))


def format_table(fmt: Format) -> dict:
    """A format as the chip description writes it (for overrides such as
    ``{"formats.integrator": format_table(fmt)}``)."""
    if not fmt.is_fixed:
        return {"kind": "float"}
    return {"kind": "fixed", "signed": fmt.signed, "int_bits": fmt.int_bits, "frac_bits": fmt.frac_bits,
            "rounding": fmt.rounding, "overflow": fmt.overflow}


# -- seeds ----------------------------------------------------------------------

def seeds(max_value: int = MAX_SEED) -> SearchStrategy[int]:
    """Chip seeds 0..max_value (at most `MAX_SEED`)."""
    if not 0 <= max_value <= MAX_SEED:
        raise ValueError(f"max_value must be 0..{MAX_SEED}")
    return st.integers(0, max_value)


# -- chip descriptions drawn around a base chip ------------------------------------

INVALID = ("raise", "reject", "return")


def _base_chip(base) -> Chip:
    if isinstance(base, Chip):
        return base
    if isinstance(base, Path) or (isinstance(base, str) and base.endswith(".toml") and "\n" not in base):
        return load_chip(base)
    if isinstance(base, str):
        return loads_chip(base, "<base chip>")
    raise TypeError(f"base must be a Chip, a path to a .toml file or TOML text, got {type(base).__name__}")


def _values(key: str, spec) -> SearchStrategy:
    """What a key of `vary` draws: a strategy as it is; a list or tuple of
    choices sampled; a range of integers; a Format as its table."""
    if isinstance(spec, SearchStrategy):
        return spec.map(lambda v: format_table(v) if isinstance(v, Format) else v)
    if isinstance(spec, range):
        if spec.step != 1 or len(spec) == 0:
            raise ValueError(f"vary[{key!r}]: a range must be non-empty with step 1, got {spec}")
        return st.integers(spec.start, spec.stop - 1)
    if isinstance(spec, Format):
        return st.just(format_table(spec))
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"vary[{key!r}]: no choices")
        return st.sampled_from([format_table(v) if isinstance(v, Format) else v for v in spec])
    raise TypeError(f"vary[{key!r}]: give a strategy, a list of choices or a range, got {spec!r}")


def _lookup(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _check_keys(base: Chip, keys) -> None:
    """Refuse a key the loader does not know, with the loader's message, before
    any draw (a draw could not tell a misspelt key from a refused value)."""
    data = base.to_dict()
    for key in keys:
        try:
            value = _lookup(data, key)
        except KeyError:
            value = None
        try:
            base.replace({key: value})
        except ChipError as err:
            if err.message.startswith("unknown") or "unknown section" in err.message:
                raise ChipError(err.source, err.key, err.message, where=f"chips(vary={{{key!r}: ...}})") from None


def chips(base, vary: Mapping, invalid: str = "raise") -> SearchStrategy:
    """Chips drawn around `base` (a `Chip`, a .toml path or TOML text): every key
    of `vary` (dotted, as in overrides: ``"timing.tau_theta"``,
    ``"formats.integrator"``, ``"formats.weight.frac_bits"``) takes a drawn value,
    every other key keeps the base's. A value spec is a hypothesis strategy, a
    list of choices, a ``range`` of integers or a `Format` (strategies drawing
    Formats are fine: they are written as format tables).

    Every draw goes through the loader (`Chip.replace`), so every chip drawn is
    valid. A drawn combination the loader refuses, by `invalid`:
    "raise" (default) lets its `ChipError` fail the test, with the loader's
    message naming the key and the allowed range (hypothesis then shrinks it
    to the smallest refused combination); "reject" skips it (hypothesis fails
    the health check if most draws are refused); "return" draws the
    `ChipError` itself instead of a chip. A key the loader does not know is
    refused at once, with its message.
    """
    if invalid not in INVALID:
        raise ValueError(f"invalid must be one of {', '.join(INVALID)}, got {invalid!r}")
    chip = _base_chip(base)
    if not isinstance(vary, Mapping) or not vary:
        raise ValueError("vary must map at least one dotted key to its values")
    _check_keys(chip, vary)
    drawn = st.fixed_dictionaries({key: _values(key, spec) for key, spec in vary.items()})

    def build(overrides):
        try:
            return chip.replace(overrides)
        except ChipError as err:
            if invalid == "raise":
                raise
            if invalid == "return":
                return err
            note(f"refused: {err}")
            reject()

    return drawn.map(build)


# -- float-ideal chips, which the reference oracle models --------------------------

ACTIVATIONS = ["sigmoid", "tanh", "relu", "linear", "hard_sigmoid"]


def ideal_chip_parameters() -> SearchStrategy[dict]:
    """Parameters of a float, zero-latency, noiseless chip (`ideal_chip` builds
    it): network shape and activations, every perturbation scheme, baseline,
    integrator and optimiser, periods, and a seed (key "seed")."""
    return st.fixed_dictionaries({
        "hidden": st.lists(st.integers(1, 4), min_size=0, max_size=2),
        "outputs": st.integers(1, 3),
        "activation": st.sampled_from(ACTIVATIONS),
        "output_activation": st.sampled_from(ACTIVATIONS),
        "bias": st.booleans(),
        "init": st.sampled_from(["uniform", "glorot"]),
        "cost": st.sampled_from(["mse", "cross_entropy"]),
        "mode": st.sampled_from(["weight", "node"]),
        "multiplexing": st.sampled_from(["code", "time", "frequency", "walsh"]),
        "normalization": st.sampled_from(["power", "norm", "step_length"]),
        "amplitude_is": st.sampled_from(["element", "norm"]),
        "baseline": st.sampled_from(["dual_path", "remeasure", "highpass"]),
        "integrator": st.sampled_from(["digital", "analog"]),
        "optimizer": st.sampled_from(["plain", "momentum"]),
        "tau_x": st.integers(1, 5), "tau_p": st.integers(1, 3), "windows": st.integers(1, 4),
        "divide": st.booleans(), "presynaptic": st.sampled_from(["live", "unperturbed"]),
        "limit": st.sampled_from([0.0, 0.01]), "seed": st.integers(0, 1000),
    })


def ideal_chip(p: Mapping) -> Chip:
    """The float, zero-latency, noiseless chip of a parameter set drawn by
    `ideal_chip_parameters` (combinations the chip description refuses are
    mapped to allowed ones: an analog integrator cannot remeasure, unperturbed
    presynaptic activity needs the dual path, step_length needs codes,
    cross-entropy needs two outputs)."""
    baseline = p["baseline"]
    if p["integrator"] == "analog" and baseline == "remeasure":
        baseline = "dual_path"
    presyn = p["presynaptic"] if baseline == "dual_path" else "live"
    normalization = p["normalization"]
    if normalization == "step_length" and p["multiplexing"] not in ("code", "walsh"):
        normalization = "power"
    outputs = p["outputs"]
    cost = p["cost"] if outputs > 1 else "mse"
    task = ('name = "parity"\nbits = 3' if outputs == 1
            else f'name = "random"\ninputs = 3\noutputs = {outputs}\nsamples = 8')
    return loads_chip(f"""
[network]
layers = {[3] + list(p["hidden"]) + [outputs]}
activation = "{p["activation"]}"
output_activation = "{p["output_activation"]}"
bias = {str(p["bias"]).lower()}
init = "{p["init"]}"
[perturbation]
mode = "{p["mode"]}"
multiplexing = "{p["multiplexing"]}"
normalization = "{normalization}"
amplitude_is = "{p["amplitude_is"]}"
presynaptic = "{presyn}"
amplitude = 0.05
freq_min = {0.2 / p["tau_p"]}
freq_max = {0.38 / p["tau_p"]}
[timing]
tau_x = {p["tau_x"]}
tau_p = {p["tau_p"]}
tau_theta = {p["tau_p"] * p["windows"]}
[cost]
function = "{cost}"
baseline = "{baseline}"
change_limit = {p["limit"]}
[integrator]
kind = "{p["integrator"]}"
[optimizer]
kind = "{p["optimizer"]}"
learning_rate = 0.5
momentum = 0.5
divide_by_tau_theta = {str(p["divide"]).lower()}
[task]
{task}
""", "ideal.toml")


# -- probe sets --------------------------------------------------------------------

@st.composite
def _index(draw, shape):
    """A numpy-style index text for a register of `shape` ("" for the whole)."""
    if not shape or draw(st.booleans()):
        return ""
    parts = []
    for n in shape[:draw(st.integers(1, len(shape)))]:
        if draw(st.booleans()):
            parts.append(str(draw(st.integers(-n, n - 1))))
        else:
            a = draw(st.integers(0, n - 1))
            b = draw(st.integers(a + 1, n))
            parts.append(f"{a}:{b}")
    return "[" + ", ".join(parts) + "]"


@st.composite
def probe_sets(draw, registers, max_probes: int = 3, max_every: int = 5, max_window: int = 200):
    """Lists of probe texts ``NAME[INDEX] every=K window=A:B`` on distinct
    registers, each with an optional index subset, period and window.
    `registers`: the register values by name, e.g. ``Emulator(chip).registers``."""
    names = sorted(registers)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=max_probes, unique=True))
    out = []
    for name in chosen:
        text = name + draw(_index(np.shape(registers[name])))
        if draw(st.booleans()):
            text += f" every={draw(st.integers(1, max_every))}"
        if draw(st.booleans()):
            a = draw(st.integers(0, max_window - 1))
            b = draw(st.one_of(st.none(), st.integers(a + 1, max_window)))
            text += f" window={a}:{'' if b is None else b}"
        out.append(text)
    return out
