"""Chip descriptions: load a TOML file, validate it, fill in defaults.

A chip description is data, never code. `load_chip` returns an immutable,
fully resolved `Chip`; `Chip.to_toml()` gives TOML text that loads back to an
equal chip, and `overrides` (dotted keys, e.g. ``formats.weight.frac_bits``)
are applied before validation, with the same checks as the file.

The schema below is the single source of truth: validation, defaults, the
TOML writer and the README's reference table all read it.
"""
from __future__ import annotations

import copy

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import tomllib

import tomli_w

from .fixedpoint import KINDS, MAX_WIDTH, OVERFLOWS, ROUNDINGS, Format


class ChipError(ValueError):
    """A chip description that cannot be used; the message names file and key.

    `where` is what the message blames: "FILE: KEY" by default, or the
    override that caused the error (see `load_chip`).
    """

    def __init__(self, source: str, key: str, message: str, where: str | None = None):
        self.source, self.key, self.message = source, key, message
        self.where = where if where is not None else f"{source}: {key}" if key else source
        super().__init__(f"{self.where}: {message}")


# --------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    """One key of a section: its type, default, allowed values and meaning."""

    name: str
    type: str  # "int" "float" "bool" "str" "layers" "format" "delay"
    default: Any
    doc: str
    choices: tuple = ()
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        if self.type == "bool":
            return "true or false"
        if self.type == "str":
            return "text (a quoted string: \"...\")"
        if self.type == "layers":
            return "a list of at least 2 integers, each 1..100000"
        if self.type == "probes":
            return "a list of probe strings"
        if self.type == "format":
            return 'a table { kind = "float" } or { kind = "fixed", signed, int_bits, frac_bits, rounding, overflow }'
        if self.type == "delay":
            return f'"auto" or an integer 0..{int(self.hi)}'
        kind = "an integer" if self.type == "int" else "a number"
        if self.lo is not None and self.hi is not None:
            lb = "(" if self.lo_open else "["
            rb = ")" if self.hi_open else "]"
            return f"{kind} in {lb}{_num(self.lo)}, {_num(self.hi)}{rb}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        return kind


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear", "hard_sigmoid")
FORMAT_CLASSES = {
    "input": "input sample register x (one per network input)",
    "weight": "weight registers theta (layer{i}.weight)",
    "bias": "bias registers (layer{i}.bias)",
    "perturbation": "perturbation generator outputs (weight, bias or node perturbation); signed, except with time multiplexing (+A and 0 only)",
    "activation": "neuron output registers (layer{i}.activation)",
    "cost": "cost unit output C and its baseline C0",
    "cost_change": "cost change C~ and the broadcast line",
    "integrator": "synapse integrators G (layer{i}.weight_integrator, bias_integrator)",
    "learning_rate": "constant multipliers: learning rate eta (eta/tau_theta if divided), momentum gamma, analog leak, high-pass coefficient",
    "correlator_gain": "the correlator's constant normalisation 1/N",
    "velocity": "momentum registers (layer{i}.weight_velocity)",
}

SCHEMA: dict[str, tuple[str, tuple[Key, ...]]] = {
    "chip": ("What the design point is.", (
        Key("name", "str", "", "short name (defaults to the file name)"),
        Key("description", "str", "", "one line: what this design point models"),
    )),
    "network": ("The multilayer perceptron the chip implements.", (
        Key("layers", "layers", [2, 2, 1], "layer sizes, input first (2-2-1 is the XOR network)"),
        Key("activation", "str", "sigmoid", "neuron nonlinearity of the hidden layers", ACTIVATIONS),
        Key("output_activation", "str", "sigmoid", "nonlinearity of the output layer", ACTIVATIONS),
        Key("bias", "bool", True, "every neuron has a trainable bias"),
        Key("init", "str", "uniform", "initial weights: uniform on [init_low, init_high], or glorot uniform", ("uniform", "glorot")),
        Key("init_low", "float", -0.5, "lower bound of the uniform initialisation", lo=-1e3, hi=1e3),
        Key("init_high", "float", 0.5, "upper bound of the uniform initialisation", lo=-1e3, hi=1e3),
    )),
    "perturbation": ("The perturbation generators and how they are multiplexed.", (
        Key("mode", "str", "weight", "weight: a generator per weight and bias; node: a generator per neuron, at its pre-activation", ("weight", "node")),
        Key("multiplexing", "str", "code", "time: one at a time in a seeded order; frequency: sinusoids; code: random +-A from per-generator LFSRs; walsh: Hadamard rows", ("time", "frequency", "code", "walsh")),
        Key("amplitude", "float", 0.05, "perturbation size: per element (Delta theta) or the vector norm M, see amplitude_is", lo=0.0, hi=1e3, lo_open=True),
        Key("amplitude_is", "str", "norm", "element: amplitude is the per-element peak A; norm: it is M, the r.m.s. norm of the whole perturbation vector (A = M/sqrt(P) for codes)", ("element", "norm")),
        Key("normalization", "str", "power", "correlator divisor N: power = E[p_i^2] (unbiased per step); norm = M^2 (2023 code); step_length = A*M*sqrt(1/P+1/tau_theta-1/(P*tau_theta)) (2025 code, codes only)", ("power", "norm", "step_length")),
        Key("presynaptic", "str", "live", "node mode: the presynaptic activity a synapse correlates with, live (as perturbed upstream) or unperturbed (needs cost.baseline = dual_path)", ("live", "unperturbed")),
        Key("freq_min", "float", 0.2, "frequency multiplexing: lowest frequency, cycles^-1", lo=0.0, hi=0.5, lo_open=True, hi_open=True),
        Key("freq_max", "float", 0.38, "frequency multiplexing: highest frequency, cycles^-1 (below 0.5/tau_p; below 2*freq_min avoids intermodulation in band)", lo=0.0, hi=0.5, lo_open=True, hi_open=True),
        Key("generator_seeds", "str", "hashed", "how each generator is seeded from the chip seed: hashed (independent), or sequential (seed+i, correlated LFSR phases)", ("hashed", "sequential")),
    )),
    "timing": ("Clocking, update periods and latencies, all in cycles.", (
        Key("tau_x", "int", 1, "cycles between input samples", lo=1, hi=2**31 - 1),
        Key("tau_p", "int", 1, "cycles between new perturbations", lo=1, hi=2**31 - 1),
        Key("tau_theta", "int", 1, "digital: cycles between weight updates (a multiple of tau_p); analog: the integrator's time constant", lo=1, hi=2**31 - 1),
        Key("layer_pipelining", "bool", False, "a register after every layer: each layer adds one cycle of latency"),
        Key("cost_latency", "int", 0, "register stages in the cost unit", lo=0, hi=64),
        Key("broadcast_latency", "int", 0, "register stages on the global broadcast line", lo=0, hi=64),
        Key("correlator_delay", "delay", "auto", "cycles the correlator delays its own perturbation; auto = the true latency of each layer", hi=256),
        Key("correlator_skew", "int", 0, "cycles added to every correlator delay (a deliberate misalignment)", lo=-256, hi=256),
        Key("delay_line_length", "int", 16, "depth of each correlator's perturbation delay line", lo=0, hi=256),
        Key("clock_hz", "float", 1e8, "clock frequency, for converting cycles to chip time (a design assumption, not a published figure)", lo=0.0, hi=1e13, lo_open=True),
    )),
    "cost": ("The cost unit and its baseline removal.", (
        Key("function", "str", "mse", "mse: mean over outputs of (y - y*)^2; cross_entropy: softmax cross-entropy", ("mse", "cross_entropy")),
        Key("baseline", "str", "dual_path", "dual_path: an unperturbed copy evaluated in the same cycle; remeasure: one extra cycle with perturbations off whenever x or theta changed; highpass: the analog RC high-pass", ("dual_path", "remeasure", "highpass")),
        Key("tau_hp", "float", 1.6, "high-pass time constant, cycles", lo=0.0, hi=1e9, lo_open=True),
        Key("change_limit", "float", 0.0, "clamp C~ to +-change_limit before digitising; 0 = no clamp", lo=0.0, hi=1e9),
    )),
    "integrator": ("The per-synapse integrator.", (
        Key("kind", "str", "digital", "digital: accumulate, update and clear every tau_theta; analog: leaky integrator (time constant tau_theta), weights update every cycle", ("digital", "analog")),
    )),
    "optimizer": ("How the weights update from their integrators.", (
        Key("kind", "str", "plain", "plain: theta -= eta*g; momentum: v = gamma*v + eta*g, theta -= v", ("plain", "momentum")),
        Key("learning_rate", "float", 0.1, "eta; 0 makes the chip only estimate gradients", lo=0.0, hi=1e9),
        Key("momentum", "float", 0.9, "gamma, the momentum coefficient", lo=0.0, hi=1.0, hi_open=True),
        Key("divide_by_tau_theta", "bool", False, "use g = G/tau_theta (the mean) instead of g = G (the sum)"),
    )),
    "noise": ("Analog imperfections, each from its own seeded generator.", (
        Key("cost_sigma", "float", 0.0, "Gaussian noise added to every cost measurement", lo=0.0, hi=1e3),
        Key("weight_sigma", "float", 0.0, "Gaussian noise added to every parameter at every update", lo=0.0, hi=1e3),
        Key("activation_sigma", "float", 0.0, "Gaussian noise added to every neuron output every cycle", lo=0.0, hi=1e3),
        Key("gain_sigma", "float", 0.0, "static device variation: each neuron's gain is 1 + N(0, gain_sigma)", lo=0.0, hi=1e3),
        Key("offset_sigma", "float", 0.0, "static device variation: each neuron's input offset is N(0, offset_sigma)", lo=0.0, hi=1e3),
    )),
    "task": ("What the chip learns; further keys are the task's parameters.", (
        Key("name", "str", "parity", "the dataset", ("parity", "nist7x7", "digits", "random", "file")),
    )),
    "trace": ("Registers recorded during a run (see traces/README.md); the command line's --probe adds more.", (
        Key("probes", "probes", [], 'probes, each "NAME[INDEX] every=K window=START:STOP" (index and options optional), e.g. "layer0.weight[0:4, :] every=10"'),
        Key("every", "int", 1, "default sampling period of a probe, cycles", lo=1, hi=2**62),
        Key("window_start", "int", 0, "default first cycle a probe records", lo=0, hi=2**62),
        Key("window_stop", "int", 0, "default cycle a probe stops recording at (exclusive); 0 = the end of the run", lo=0, hi=2**62),
    )),
    "formats": ("Number format of every signal class.", tuple(
        Key(cls, "format", {"kind": "float"}, doc) for cls, doc in FORMAT_CLASSES.items()
    )),
}

FORMAT_KEYS = ("kind", "signed", "int_bits", "frac_bits", "rounding", "overflow")
FORMAT_DEFAULTS = {"signed": True, "rounding": "nearest-even", "overflow": "saturate"}


# --------------------------------------------------------------------------
# The resolved, immutable description
# --------------------------------------------------------------------------

def _freeze(value):
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class Section:
    """Read-only attribute view of one section of a chip description."""

    __slots__ = ("_name", "_data")

    def __init__(self, name: str, data: Mapping):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_data", data)

    def __getattr__(self, key):
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"{self._name}.{key}") from None

    def __setattr__(self, key, value):
        raise AttributeError("a chip description is immutable")

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def items(self):
        return self._data.items()

    def __repr__(self):
        return f"Section({self._name}, {dict(self._data)})"


class Formats(Section):
    def __getattr__(self, key) -> Format:
        try:
            return Format(**self._data[key])
        except KeyError:
            raise AttributeError(f"formats.{key}") from None

    __getitem__ = __getattr__


@dataclass(frozen=True, eq=False)
class Chip:
    """A fully resolved chip description (all defaults filled in)."""

    data: Mapping = field(repr=False)
    source: str = "<chip>"
    # False: loaded as a trace recorded it (loads_chip(data=False)); so are the chips replace() makes of it
    data_checked: bool = True

    def __getattr__(self, section):
        if section in ("data", "source", "data_checked"):
            raise AttributeError(section)
        if section == "formats":
            return Formats("formats", self.data["formats"])
        if section in self.data:
            return Section(section, self.data[section])
        raise AttributeError(section)

    def __eq__(self, other):
        return isinstance(other, Chip) and _thaw(self.data) == _thaw(other.data)

    def __hash__(self):
        return hash(self.to_toml())

    @property
    def name(self) -> str:
        return self.data["chip"]["name"]

    def to_dict(self) -> dict:
        """A plain, mutable copy of the resolved description."""
        return _thaw(self.data)

    def to_toml(self) -> str:
        """TOML text that loads back to an equal chip."""
        return tomli_w.dumps(self.to_dict())

    def replace(self, overrides: Mapping[str, Any]) -> "Chip":
        """A new chip with dotted-key overrides applied and validated; a
        refusal names "SOURCE with KEY=VALUE" (the chip itself is valid)."""
        return _resolve(self.to_dict(), self.source, overrides, flag="", base_is_valid=True,
                        data=self.data_checked)

    # Derived quantities used by the engine and reference ------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return tuple(self.data["network"]["layers"])

    @property
    def n_parameters(self) -> int:
        sizes, bias = self.layer_sizes, self.data["network"]["bias"]
        return sum(o * i + (o if bias else 0) for i, o in zip(sizes[:-1], sizes[1:]))

    @property
    def n_neurons(self) -> int:
        return sum(self.layer_sizes[1:])

    @property
    def n_generators(self) -> int:
        """P: the number of perturbation channels."""
        return self.n_parameters if self.data["perturbation"]["mode"] == "weight" else self.n_neurons

    def task_params(self) -> dict:
        return {k: v for k, v in self.data["task"].items() if k != "name"}


# --------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------

HW_MODELS = Path(__file__).resolve().parent.parent / "hw_models"   # the shipped chips


def shipped_chip(name) -> Path | None:
    """The shipped chip file of that name ("xor_8bit" or "xor_8bit.toml"), or None."""
    text = str(name)
    path = HW_MODELS / (text if text.endswith(".toml") else text + ".toml")
    return path if path.is_file() else None


def load_chip(path, overrides: Mapping[str, Any] | None = None) -> Chip:
    """Load, override and validate a chip description file (or a shipped
    chip by its name, such as "xor_8bit", where no such file is here).

    `overrides` maps dotted keys to values (``{"timing.tau_x": 4}``), as the
    command line's ``--set KEY=VALUE`` does. An error an override causes is
    blamed on it, in the command line's spelling: ``--set KEY=VALUE: ...``
    when the overridden value itself is wrong, ``FILE with --set KEY=VALUE:
    OTHER.KEY: ...`` when it clashes with the rest of the file. An error the
    file has without the overrides is the file's.
    """
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and shipped_chip(path) is not None:
        path = shipped_chip(path)
    source = str(path)
    text = read_chip_text(path, source)
    raw = parse_toml(text, source)
    raw.setdefault("chip", {})
    if isinstance(raw["chip"], dict):
        raw["chip"].setdefault("name", path.stem)
    return _resolve(raw, source, overrides)


MAX_CHIP_BYTES = 4 << 20  # a chip description is a few kB; the largest shipped one is far below this
MAX_NESTING = 32          # arrays and tables inside each other in a chip description


def read_chip_text(path: Path, source: str) -> str:
    """A chip file's text: a regular file (not a FIFO, a device such as
    /dev/zero, a socket) of at most MAX_CHIP_BYTES, in UTF-8. The file is
    checked before it is opened and read with a bound, so nothing blocks or
    reads without limit."""
    import os
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ChipError(source, "", "no such file") from None
    except OSError as exc:
        raise ChipError(source, "", f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ChipError(source, "", "is a directory, not a chip description")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if
                stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if
                stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ChipError(source, "", f"is {kind}; a chip description is a regular TOML file")
    if st.st_size > MAX_CHIP_BYTES:
        raise ChipError(source, "", f"is {st.st_size:,} bytes; a chip description may be at most "
                                    f"{MAX_CHIP_BYTES:,} bytes")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fp:
            if not stat.S_ISREG(os.fstat(fp.fileno()).st_mode):  # replaced since the check
                raise ChipError(source, "", "is not a regular file; a chip description is a regular TOML file")
            data = fp.read(MAX_CHIP_BYTES + 1)
    except OSError as exc:
        raise ChipError(source, "", f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_CHIP_BYTES:
        raise ChipError(source, "", f"is larger than {MAX_CHIP_BYTES:,} bytes; a chip description may be at most that")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChipError(source, "", f"cannot be read (not UTF-8 text: {exc.reason} at byte {exc.start})") from None


def _nesting(text: str) -> int:
    """An upper bound of the nesting depth of TOML text's arrays and inline
    tables: brackets and braces counted outside strings and comments."""
    depth = deepest = 0
    quote = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\" and quote[0] == '"':
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            continue
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def loads_chip(text: str, source: str = "<string>", overrides=None, data: bool = True) -> Chip:
    """Like `load_chip`, from TOML text; `source` names it in messages.
    data=False: a description as a trace recorded it, whose `task = "file"`
    data file need not be here (it is not read, and the layer sizes are not
    checked against it)."""
    return _resolve(parse_toml(text, source), source, overrides, data=data)


def parse_toml(text: str, source: str) -> dict:
    if len(text) > MAX_CHIP_BYTES:
        raise ChipError(source, "", f"is larger than {MAX_CHIP_BYTES:,} bytes; a chip description may be at most that")
    if _nesting(text) > MAX_NESTING:
        raise ChipError(source, "", f"nests arrays or tables more than {MAX_NESTING} deep; "
                                    "a chip description is at most a few levels deep")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ChipError(source, "", f"TOML syntax error: {exc}") from None
    except RecursionError:
        raise ChipError(source, "", f"nests arrays or tables too deep (at most {MAX_NESTING})") from None


def parse_override(item: str, source: str = "--set") -> tuple[str, Any]:
    """Parse ``key=value`` (value as a TOML literal, or a bare string)."""
    if "=" not in item:
        raise ChipError(source, item, "expected key=value, e.g. formats.weight.frac_bits=5")
    key, text = (s.strip() for s in item.split("=", 1))
    if _nesting(text) > MAX_NESTING:
        raise ChipError(source, item[:60], f"the value nests arrays or tables more than {MAX_NESTING} deep")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word such as nearest-even
    except RecursionError:
        raise ChipError(source, item[:60], f"the value nests arrays or tables too deep (at most {MAX_NESTING})") from None
    return key, value


def _override_items(overrides, source: str) -> list[tuple[str, Any]]:
    """The (dotted key, value) pairs of an overrides mapping, checked."""
    if overrides is None:
        return []
    if not isinstance(overrides, Mapping):
        raise ChipError(source, "", "overrides must be a mapping of dotted keys to values, such as "
                        f"{{'timing.tau_x': 4}}, got {type(overrides).__name__} {overrides!r:.60}")
    for key in overrides:
        if not isinstance(key, str):
            raise ChipError(source, "", f"an override key must be a dotted key such as 'timing.tau_x', got {key!r}")
    return list(overrides.items())


def toml_literal(value, top: bool = True) -> str:
    """A value as the command line's --set KEY=VALUE spells it (a string
    that parse_override reads back as itself stays a bare word at the top)."""
    if isinstance(value, str):
        if top and value and value == value.strip() and parse_override(f"v={value}")[1] == value:
            return value
        return tomli_w.dumps({"v": value})[4:].strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k} = {toml_literal(v, False)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v, False) for v in value) + "]"
    if isinstance(value, (int, float)):
        return tomli_w.dumps({"v": value})[4:].strip()
    return repr(value)


def _blamed(source: str, items, flag: str, key: str, direct: bool) -> str:
    """What a message blames: the overrides `items` (and `source` unless direct)."""
    if flag:
        named = " ".join(f"{flag}{k}={toml_literal(v)}" for k, v in items)
        where = named if direct else f"{source} with {named}"
    else:
        where = f"{source} with " + ", ".join(f"{k}={toml_literal(v)}" for k, v in items)
    if key and not (direct and len(items) == 1 and items[0][0] == key):
        where += f": {key}"
    return where


def apply_overrides(raw: dict, overrides: Mapping[str, Any], source: str, flag: str = "--set ") -> dict:
    """Set dotted keys in a raw description (validation happens afterwards).

    ``formats.CLASS.kind = "float"`` replaces the whole format table (a float
    format has no other keys), and ``task.name`` naming another task the
    whole task table (the old task's keys, such as parity's ``bits``, are
    not the new one's); any other key is set in place.
    """
    raw = _thaw(raw)
    items = _override_items(overrides, source)
    task = raw.get("task")
    if isinstance(task, dict) and any(k == "task.name" and v != task.get("name") for k, v in items):
        task.clear()
    for dotted, value in items:
        parts = dotted.split(".")
        if not dotted or any(not p for p in parts):
            raise ChipError(source, dotted, "not a dotted key such as timing.tau_x",
                            _blamed(source, [(dotted, value)], flag, dotted, True))
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ChipError(source, prefix, "is a value, not a table",
                                _blamed(source, [(dotted, value)], flag, prefix, True))
            node = child
        if len(parts) == 3 and parts[0] == "formats" and parts[2] == "kind" and value == "float":
            node.clear()
        node[parts[-1]] = copy.deepcopy(value)   # a later key may set inside it: not the caller's table
    return raw


def _resolve(raw: dict, source: str, overrides, flag: str = "--set ", base_is_valid: bool = False,
             data: bool = True) -> Chip:
    """from_dict(raw with overrides applied); an error an override causes
    names the override (see `load_chip`)."""
    items = _override_items(overrides, source)
    if not items:
        return from_dict(raw, source, data)
    merged = apply_overrides(raw, dict(items), source, flag)
    try:
        return from_dict(merged, source, data)
    except ChipError as err:
        key = err.key
        # the error lies in an overridden value: blame the (most specific) override
        inside = [(k, v) for k, v in items if key and (key == k or key.startswith(k + "."))]
        if inside:
            k, v = max(inside, key=lambda kv: len(kv[0]))
            raise ChipError(source, key, err.message, _blamed(source, [(k, v)], flag, key, True)) from None
        # otherwise: the file's own error, if it has it without the overrides
        if not base_is_valid:
            try:
                from_dict(raw, source, data)
            except ChipError as alone:
                if str(alone) == str(err):
                    raise err from None
        # a clash of the overrides (those inside the key, else all) with the file
        below = [(k, v) for k, v in items if key and k.startswith(key + ".")]
        raise ChipError(source, key, err.message, _blamed(source, below or items, flag, key, False)) from None


def from_dict(raw: Mapping, source: str = "<chip>", data: bool = True) -> Chip:
    """Validate a raw (parsed) description and fill in its defaults (data: as loads_chip)."""
    if not isinstance(raw, Mapping):
        raise ChipError(source, "", "a chip description must be a TOML table")
    for section in raw:
        if section not in SCHEMA:
            raise ChipError(source, section, _unknown(section, SCHEMA, "section"))
    resolved = {}
    for section, (_, keys) in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, Mapping):
            raise ChipError(source, section, "must be a table ([section])")
        resolved[section] = _section(source, section, keys, given)
    if not resolved["chip"]["name"]:
        resolved["chip"]["name"] = Path(source).stem if source.endswith(".toml") else "chip"
    _check_task(source, resolved["task"], raw.get("task", {}))
    chip = Chip(_freeze(resolved), source, data)
    _check_consistency(source, chip, data)
    return chip


def _unknown(key, allowed, what="key") -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {what}{hint} (allowed: {', '.join(allowed)})"


def _section(source, section, keys, given) -> dict:
    known = {k.name: k for k in keys}
    out = {}
    for key in given:
        if key not in known and section != "task":
            raise ChipError(source, f"{section}.{key}", _unknown(key, known))
    for k in keys:
        path = f"{section}.{k.name}"
        if k.name in given:
            out[k.name] = _value(source, path, k, given[k.name])
        else:
            out[k.name] = _format(source, path, k.default) if k.type == "format" else k.default
            if isinstance(out[k.name], list):
                out[k.name] = list(out[k.name])
    if section == "task":
        out.update({key: v for key, v in given.items() if key not in known})
    return out


def _value(source, path, k: Key, v):
    bad = lambda what="": ChipError(source, path, f"must be {what or k.allowed()}, got {v!r}")
    if k.type == "format":
        return _format(source, path, v)
    if k.type == "bool":
        if not isinstance(v, bool):
            raise bad()
        return v
    if k.type == "str":
        if not isinstance(v, str):
            raise bad()
        if k.choices and v not in k.choices:
            raise ChipError(source, path, _unknown(v, k.choices, "value") if difflib.get_close_matches(v, k.choices, n=1)
                            else f"must be {k.allowed()}, got {v!r}")
        return v
    if k.type == "layers":
        if (not isinstance(v, list) or len(v) < 2
                or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 100000 for n in v)):
            raise bad()
        return list(v)
    if k.type == "probes":
        if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
            raise bad()
        return list(v)
    if k.type == "delay":
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= k.hi:
            raise bad()
        return v
    if k.type == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad()
    elif k.type == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad()
        v = float(v)
    if k.lo is not None and (v < k.lo or (k.lo_open and v == k.lo)):
        raise bad()
    if k.hi is not None and (v > k.hi or (k.hi_open and v == k.hi)):
        raise bad()
    return v


def _format(source, path, v) -> dict:
    if not isinstance(v, Mapping):
        raise ChipError(source, path, f'must be a table such as {{ kind = "fixed", signed = true, int_bits = 1, frac_bits = 6 }}, got {v!r}')
    for key in v:
        if key not in FORMAT_KEYS:
            raise ChipError(source, f"{path}.{key}", _unknown(key, FORMAT_KEYS))
    kind = v.get("kind")
    extra = [key for key in v if key != "kind"]
    fixed_it = (f'to make it fixed point set {path}.kind = "fixed" with int_bits and frac_bits '
                f'(e.g. {path} = {{ kind = "fixed", int_bits = 1, frac_bits = 6 }})')
    if kind is None and extra:
        raise ChipError(source, f"{path}.{extra[0]}",
                        f'only applies to kind = "fixed", and {path} is float (it gives no kind, and float is the default): {fixed_it}')
    if kind not in KINDS:
        raise ChipError(source, f"{path}.kind", f'must be "float" or "fixed", got {kind!r}')
    if kind == "float":
        if extra:
            raise ChipError(source, f"{path}.{extra[0]}",
                            f'only applies to kind = "fixed", and {path} is kind = "float": {fixed_it}')
        return {"kind": "float"}
    out = {"kind": "fixed"}
    for key in ("int_bits", "frac_bits"):
        if key not in v:
            raise ChipError(source, f"{path}.{key}", f"is required for a fixed-point format (an integer 0..{MAX_WIDTH})")
    signed = v.get("signed", FORMAT_DEFAULTS["signed"])
    if not isinstance(signed, bool):
        raise ChipError(source, f"{path}.signed", f"must be true or false, got {signed!r}")
    out["signed"] = signed
    for key in ("int_bits", "frac_bits"):
        n = v[key]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_WIDTH:
            raise ChipError(source, f"{path}.{key}", f"must be an integer 0..{MAX_WIDTH}, got {n!r}")
        out[key] = n
    width = int(signed) + out["int_bits"] + out["frac_bits"]
    if not 1 <= width <= MAX_WIDTH:
        raise ChipError(source, path, f"total width signed + int_bits + frac_bits must be 1..{MAX_WIDTH} bits, got {width}")
    for key, allowed in (("rounding", ROUNDINGS), ("overflow", OVERFLOWS)):
        val = v.get(key, FORMAT_DEFAULTS[key])
        if val not in allowed:
            close = difflib.get_close_matches(str(val), list(allowed), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ChipError(source, f"{path}.{key}", f"must be one of {', '.join(allowed)}, got {val!r}{hint}")
        out[key] = val
    return out


def _check_task(source, resolved_task, given):
    from .tasks import TASKS

    name = resolved_task["name"]
    allowed = TASKS[name]
    for key in list(resolved_task):
        if key == "name":
            continue
        if key not in allowed:
            raise ChipError(source, f"task.{key}", _unknown(key, list(allowed) or ["(no parameters)"]) + f" for task {name}")
    for key, spec in allowed.items():
        typ, default, rng, _doc = spec
        if key not in resolved_task:
            resolved_task[key] = default
            continue
        v = resolved_task[key]
        ok = (isinstance(v, bool) == (typ is bool)) and (
            isinstance(v, int) if typ is int else isinstance(v, (int, float)) if typ is float else isinstance(v, typ))
        if ok and typ is float:
            v = resolved_task[key] = float(v)
        if ok and isinstance(rng, tuple) and len(rng) == 2 and typ in (int, float):
            ok = rng[0] <= v <= rng[1]
        elif ok and isinstance(rng, (tuple, list)) and typ is str:
            ok = v in rng
        if not ok:
            raise ChipError(source, f"task.{key}", f"must be {_task_allowed(typ, rng)}, got {v!r}")


def _task_allowed(typ, rng) -> str:
    if typ is str:
        return "a string" if rng is None else "one of " + ", ".join(map(str, rng))
    kind = {int: "an integer", float: "a number", bool: "true or false"}[typ]
    return f"{kind} in [{rng[0]}, {rng[1]}]" if isinstance(rng, tuple) else kind


# --------------------------------------------------------------------------
# Cross-key consistency
# --------------------------------------------------------------------------

def element_amplitude(chip: Chip) -> float:
    """A: the per-element peak perturbation, from amplitude and amplitude_is."""
    p = chip.perturbation
    if p.amplitude_is == "element":
        return p.amplitude
    n = chip.n_generators
    return {
        "time": p.amplitude,
        "code": p.amplitude / math.sqrt(n),
        "walsh": p.amplitude / math.sqrt(n),
        "frequency": math.sqrt(2.0) * p.amplitude / math.sqrt(n),
    }[p.multiplexing]


def perturbation_power(chip: Chip, a: float) -> float:
    """sigma^2 = E[p_i^2] of one generator of peak amplitude a."""
    m = chip.perturbation.multiplexing
    return {"time": a * a / chip.n_generators, "code": a * a, "walsh": a * a, "frequency": a * a / 2}[m]


def perturbation_norm(chip: Chip, a: float) -> float:
    """M: the r.m.s. norm of the whole perturbation vector."""
    return math.sqrt(perturbation_power(chip, a) * chip.n_generators)


def true_latencies(chip: Chip) -> list[int]:
    """Cycles from each layer's perturbation to the cost change at the synapse."""
    t, n = chip.timing, len(chip.layer_sizes) - 1
    fwd = [n - i for i in range(n)] if t.layer_pipelining else [0] * n
    return [f + t.cost_latency + t.broadcast_latency for f in fwd]


def correlator_delays(chip: Chip) -> list[int]:
    t = chip.timing
    base = true_latencies(chip) if t.correlator_delay == "auto" else [t.correlator_delay] * (len(chip.layer_sizes) - 1)
    return [d + t.correlator_skew for d in base]


def _check_consistency(source: str, chip: Chip, data: bool = True) -> None:
    t, p, f = chip.timing, chip.perturbation, chip.formats
    from .probes import ProbeError, parse_probes
    try:
        parse_probes(chip.trace.probes, chip)
    except ProbeError as exc:
        raise ChipError(source, "trace.probes", str(exc)) from None
    net = chip.network
    if net.init == "uniform" and net.init_low > net.init_high:
        raise ChipError(source, "network.init_low", f"must be at most network.init_high = {net.init_high!r}, "
                                                    f"got {net.init_low!r} (uniform on [init_low, init_high])")
    if 0 < chip.trace.window_stop <= chip.trace.window_start:
        raise ChipError(source, "trace.window_stop", f"must be 0 (the end) or greater than trace.window_start = {chip.trace.window_start}")
    from .tasks import task_shape
    if chip.task.name == "file" and not data:
        n_in, n_out = chip.layer_sizes[0], chip.layer_sizes[-1]   # a recorded description: its data may be elsewhere
    elif chip.task.name == "file":
        from .datafile import DataFileError, check_input_range
        try:
            n_in, n_out = task_shape(chip.task.name, chip.task_params())
            check_input_range(chip)
        except DataFileError as exc:
            raise ChipError(source, f"task.{exc.key}", exc.message) from None
    else:
        n_in, n_out = task_shape(chip.task.name, chip.task_params())
    sizes = chip.layer_sizes
    if (sizes[0], sizes[-1]) != (n_in, n_out):
        raise ChipError(source, "network.layers",
                        f"task {chip.task.name} needs {n_in} inputs and {n_out} outputs: the sizes must start with {n_in} "
                        f"and end with {n_out}, got {list(sizes)}")
    if chip.integrator.kind == "digital" and t.tau_theta % t.tau_p:
        raise ChipError(source, "timing.tau_theta", f"must be a multiple of timing.tau_p = {t.tau_p} with a digital integrator, got {t.tau_theta}")
    if chip.integrator.kind == "analog" and chip.cost.baseline == "remeasure":
        raise ChipError(source, "cost.baseline", '"remeasure" needs integrator.kind = "digital" (an analog chip updates its weights every cycle, so there is no cycle to remeasure C0 in); use "dual_path" or "highpass"')
    for layer, d in enumerate(correlator_delays(chip)):
        if d < 0:
            raise ChipError(source, "timing.correlator_skew", f"makes layer {layer}'s correlator delay negative ({d})")
        if d > t.delay_line_length:
            raise ChipError(source, "timing.correlator_delay",
                            f"layer {layer} needs a delay of {d} cycles, longer than its delay line (timing.delay_line_length = {t.delay_line_length})")
    if p.multiplexing == "frequency":
        nyquist = 0.5 / t.tau_p
        if not p.freq_min < p.freq_max:
            raise ChipError(source, "perturbation.freq_max", f"must be greater than freq_min = {p.freq_min}, got {p.freq_max}")
        if p.freq_max >= nyquist:
            raise ChipError(source, "perturbation.freq_max", f"must be below the Nyquist limit 0.5/tau_p = {nyquist}, got {p.freq_max}")
    if p.normalization == "step_length" and p.multiplexing not in ("code", "walsh"):
        raise ChipError(source, "perturbation.normalization", f'"step_length" applies to +-A codes (code, walsh), not {p.multiplexing}')
    if p.presynaptic == "unperturbed" and p.mode == "node" and chip.cost.baseline != "dual_path":
        raise ChipError(source, "perturbation.presynaptic", '"unperturbed" needs cost.baseline = "dual_path" (the unperturbed activity comes from the second path)')
    if chip.cost.function == "cross_entropy" and sizes[-1] < 2:
        raise ChipError(source, "cost.function",
                        f'"cross_entropy" needs at least 2 outputs (a softmax over one class is 1, so the cost is '
                        f'identically 0 and nothing is learned); the network has {sizes[-1]}: use "mse"')
    fmt = f.perturbation
    if fmt.is_fixed and not fmt.signed and p.multiplexing != "time":
        writes = ("sinusoids, negative half the time (an unsigned register clips them to 0)"
                  if p.multiplexing == "frequency" else "-A as well as +A")
        raise ChipError(source, "formats.perturbation.signed",
                        f"must be true with {p.multiplexing} multiplexing: its generators write {writes}; "
                        f'an unsigned perturbation format suits only multiplexing = "time" (+A and 0)')
    a = element_amplitude(chip)
    if fmt.is_fixed:
        q = _const(a, fmt)
        if q == 0.0:
            raise ChipError(source, "perturbation.amplitude",
                            f"the per-element amplitude {a:.6g} is zero in formats.perturbation ({fmt.describe()}, LSB {fmt.lsb:.6g})")
        if q != _sat(a, fmt):
            raise ChipError(source, "perturbation.amplitude", f"the per-element amplitude {a:.6g} overflows formats.perturbation (max {fmt.max_value:.6g})")
    # Constants as the engine rounds them into formats.learning_rate: refused
    # when the register would hold 0, when the rounded value is out of range
    # (it would saturate), or when a filter coefficient would hold 1 or more.
    fmt = f.learning_rate
    for key, what, value, below_one, hint in register_constants(chip) if fmt.is_fixed else ():
        q = _const(value, fmt)
        where = f"formats.learning_rate ({fmt.describe()}, LSB {fmt.lsb:.6g}, max {fmt.max_value:.6g})"
        hint = f": {hint}" if hint else ""
        if q == 0.0:
            raise ChipError(source, key, f"{what} = {value:.6g} is zero in {where}{hint}")
        if q != _sat(value, fmt):
            raise ChipError(source, key, f"{what} = {value:.6g} overflows {where}{hint}")
        if below_one and q >= 1.0:
            raise ChipError(source, key, f"{what} = {value:.6g} rounds to {q:.6g} in {where}, so it would not decay{hint}")
    # kappa as the engine computes it: from the amplitude as the perturbation
    # register holds it, then held in formats.correlator_gain (saturating).
    a_held = _const(a, f.perturbation)
    kappa = correlator_gain(chip, a_held)
    fmt = f.correlator_gain
    if fmt.is_fixed and (_const(kappa, fmt) == 0.0 or _const(kappa, fmt) != _sat(kappa, fmt)):
        held = f", from the amplitude {a_held:.6g} that formats.perturbation holds" if f.perturbation.is_fixed else ""
        raise ChipError(source, "formats.correlator_gain",
                        f"cannot hold the correlator normalisation 1/N = {kappa:.6g}{held} "
                        f"({fmt.describe()}: LSB {fmt.lsb:.6g}, max {fmt.max_value:.6g})")
    _check_datapath(source, chip)


def register_constants(chip: Chip) -> list[tuple[str, str, float, bool, str]]:
    """The constants the engine rounds into formats.learning_rate, unrounded.

    Each is (key to blame, what it is, value, whether rounding to 1 or more
    breaks it (a filter that would not decay), a hint for a refusal): eta'
    (eta, or eta/tau_theta when divided), gamma (momentum), the analog
    integrator's lambda = 1/(tau+1) and beta = tau/(tau+1), the high-pass
    coefficient tau_hp/(tau_hp+1); only those the chip uses (engine._build
    rounds them with plan.quantize_const). A learning rate or momentum of 0
    is not listed (0 is what it should hold).
    """
    opt, tau = chip.optimizer, float(chip.timing.tau_theta)
    out = []
    if opt.learning_rate != 0.0:
        if opt.divide_by_tau_theta:
            out.append(("optimizer.learning_rate",
                        f"eta/tau_theta (optimizer.divide_by_tau_theta = true) = {opt.learning_rate:.6g}/{chip.timing.tau_theta}",
                        opt.learning_rate / tau, False,
                        "give formats.learning_rate more frac_bits, or a larger learning rate or shorter tau_theta"))
        else:
            out.append(("optimizer.learning_rate", "eta", opt.learning_rate, False, ""))
    if opt.kind == "momentum" and opt.momentum != 0.0:
        out.append(("optimizer.momentum", "gamma", opt.momentum, False, ""))
    if chip.integrator.kind == "analog":
        hint = ("the analog integrator's time constant needs formats.learning_rate to resolve 1/(tau_theta+1): "
                "give it more frac_bits, or shorten timing.tau_theta")
        out.append(("timing.tau_theta", "the analog integrator's lambda = 1/(tau_theta+1)", 1.0 / (tau + 1.0), False, hint))
        # (beta rounds to 1 only where lambda = 1 - beta rounds to 0, refused first)
        out.append(("timing.tau_theta", "the analog integrator's beta = tau_theta/(tau_theta+1)", tau / (tau + 1.0),
                    False, hint))
    if chip.cost.baseline == "highpass":
        hp = chip.cost.tau_hp
        out.append(("cost.tau_hp", "the high-pass coefficient tau_hp/(tau_hp+1)", hp / (hp + 1.0), True,
                    "give formats.learning_rate more frac_bits, or change cost.tau_hp"))
    return out


def correlator_gain(chip: Chip, a: float | None = None) -> float:
    """kappa = 1/N, the correlator's normalisation (before quantisation)."""
    p, n = chip.perturbation, chip.n_generators
    a = element_amplitude(chip) if a is None else a
    if p.normalization == "power":
        return 1.0 / perturbation_power(chip, a)
    m = perturbation_norm(chip, a)
    if p.normalization == "norm":
        return 1.0 / (m * m)
    tau = chip.timing.tau_theta
    return 1.0 / (a * m * math.sqrt(1.0 / n + 1.0 / tau - 1.0 / (n * tau)))


def _product(*fmts: Format) -> tuple[int, int] | None:
    """(integer bits, fraction bits) of an exact product; None if any is float."""
    if not all(fm.is_fixed for fm in fmts):
        return None
    return sum(fm.int_bits for fm in fmts), sum(fm.frac_bits for fm in fmts)


def _sum_bits(terms, n_terms: int) -> int:
    """Bits an exact sum of the given (int, frac) terms needs, sign included."""
    if any(t is None for t in terms):
        return 0
    ib = max(t[0] for t in terms) + math.ceil(math.log2(max(n_terms, 1))) + 1
    return 1 + ib + max(t[1] for t in terms)


EXACT_BITS = 53  # float64 holds every integer up to 2**53 exactly


def _check_datapath(source: str, chip: Chip) -> None:
    """Refuse fixed-point datapaths whose full-width sums exceed 53 bits.

    The engine forms products and sums at full width in float64 and rounds
    only into a register; that is exact integer arithmetic as long as every
    full-width intermediate fits in 53 bits.
    """
    f = chip.formats
    node = chip.perturbation.mode == "node"
    sizes = chip.layer_sizes
    summed = (f.weight,) if node else (f.weight, f.perturbation)
    w_eff = None if not all(x.is_fixed for x in summed) else Format(
        "fixed", True, max(x.int_bits for x in summed) + (0 if node else 1), max(x.frac_bits for x in summed))
    checks = []
    for layer, fan_in in enumerate(sizes[:-1]):
        act = f.input if layer == 0 else f.activation
        mac = _product(w_eff, act) if w_eff is not None else None
        terms = [mac, _product(f.bias), _product(f.perturbation)]
        checks.append((f"layer {layer}'s multiply-accumulate (formats.weight, formats.perturbation, formats.{'input' if layer == 0 else 'activation'})",
                       _sum_bits(terms, fan_in + 2)))
    corr = (f.cost_change, f.perturbation, f.correlator_gain) + ((f.activation,) if node else ())
    checks.append(("the correlator and integrator (formats.cost_change, formats.perturbation, formats.correlator_gain, formats.integrator)",
                   _sum_bits([_product(*corr), _product(f.integrator)], 2)))
    checks.append(("the weight update (formats.learning_rate, formats.integrator, formats.weight, formats.velocity)",
                   _sum_bits([_product(f.learning_rate, f.integrator), _product(f.learning_rate, f.velocity),
                              _product(f.weight), _product(f.velocity)], 3)))
    for what, bits in checks:
        if bits > EXACT_BITS:
            raise ChipError(source, "formats", f"{what} needs {bits} bits at full width; the emulator is exact up to {EXACT_BITS}: narrow those formats")


def _const(x: float, fmt: Format) -> float:
    """A chip constant as its register holds it (nearest-even, saturating)."""
    if not fmt.is_fixed:
        return x
    code = round(x * 2 ** fmt.frac_bits)
    return min(max(code, fmt.min_code), fmt.max_code) * fmt.lsb


def _sat(x: float, fmt: Format) -> float:
    return round(x * 2 ** fmt.frac_bits) * fmt.lsb


def reference_markdown() -> str:
    """The chip-description reference table for the README, from SCHEMA."""
    from .tasks import TASKS

    lines = []
    for section, (doc, keys) in SCHEMA.items():
        lines += [f"**`[{section}]`** {doc}", "", "| key | type | allowed | default | meaning |", "|---|---|---|---|---|"]
        for k in keys:
            default = ("float" if k.type == "format" else str(k.default) if k.type == "layers"
                       else tomli_w.dumps({"v": k.default})[4:].strip())
            allowed = "format table (below)" if k.type == "format" else k.allowed()
            lines.append(f"| `{section}.{k.name}` | {k.type} | {allowed} | `{default}` | {k.doc} |")
        lines.append("")
    lines += ["**Task parameters** (under `[task]`, by task name)", "",
              "| task | key | type | allowed | default | meaning |", "|---|---|---|---|---|---|"]
    for name, params in TASKS.items():
        for key, (typ, default, rng, doc) in params.items():
            lines.append(f"| {name} | `task.{key}` | {typ.__name__} | {_task_allowed(typ, rng)} | `{default}` | {doc} |")
    lines += ["", "**Format tables** (`formats.<class>`): `kind` is `\"float\"` (ideal) or `\"fixed\"`; for "
              "fixed: `signed` (bool, default true), `int_bits` and `frac_bits` (integers 0..32, required; "
              "int_bits excludes the sign bit; total width 1..32), `rounding` (`truncate` = toward minus "
              "infinity, `nearest-even`, `stochastic`; default nearest-even), `overflow` (`saturate` or "
              "`wrap`; default saturate).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown())
