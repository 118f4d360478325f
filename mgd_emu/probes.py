"""Registers by name, and probes on them.

`register_table(chip)` names every register a user can read or record: where
it lives in the engine's state arrays, its shape, its number format class and
its meaning. A *probe* records one register (or an index subset of it) every
k-th cycle, optionally inside a window of cycles. Its text form, used in the
chip description's ``[trace] probes`` list, on the command line (``--probe``)
and in the Python API, is::

    NAME[INDEX] every=K window=START:STOP

with INDEX numpy-style per dimension (``layer0.weight[0:4, :]``,
``layer1.bias[2]``), and every, window optional (window STOP exclusive; an
empty STOP means the end of the run). A probe samples a register as it is
*during* a cycle: the value the chip's wires see in that cycle, written at the
clock edge that ended the previous one (cycle 0 shows the reset state).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .blocks.probe import SOURCES, ProbeBuffers

SRC = {name: i for i, name in enumerate(SOURCES)}


class ProbeError(ValueError):
    """A probe that does not name a register of this chip, or a bad index."""


@dataclass(frozen=True)
class Register:
    """One named register: `source` ("block.field" of the engine's state,
    see chipmap.ChipState), flat offset `start`, `shape`, number format class
    (None: not a datapath register) and a one-line meaning."""

    name: str
    source: str
    start: int
    shape: tuple
    format_class: str | None
    meaning: str
    unit: str = "a.u."
    block: str = "chip"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


def _declared(source: str):
    """The declaration (blocks/*.py REGISTERS) of state field "block.field"."""
    from .chipmap import BLOCKS

    block, field = source.split(".")
    return next(r for r in BLOCKS[block][1] if r.name == field)


# User-visible registers: those of each layer, in this order, then the global ones.
LAYER_SOURCES = ("syn.theta", "gen.pert", "syn.G", "syn.V", "neu.act")
GLOBAL_SOURCES = ("smp.x", "smp.y", "smp.sample", "output", "cu.cost", "cu.cost0", "cu.change", "bc.out")
GLOBAL_BLOCKS = {"smp": "sampler", "cu": "cost_unit", "bc": "broadcast"}


def register_table(chip) -> list[Register]:
    """Every user-visible register of `chip`, layer by layer, then the global
    ones, derived from the blocks' declarations (their `public` names)."""
    from .chipmap import layers_of

    sizes, bias = chip.layer_sizes, chip.network.bias
    node = chip.perturbation.mode == "node"
    momentum = chip.optimizer.kind == "momentum"
    lay = layers_of(chip)
    out = []
    for layer, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        w_off, b_off, n_off = int(lay.w_off[layer]), int(lay.b_off[layer]), int(lay.n_off[layer])
        for source in LAYER_SOURCES:
            decl = _declared(source)
            rule, _, names = decl.public.partition(":")
            add = lambda name, start, shape, meaning, fmt=decl.fmt: out.append(Register(
                f"layer{layer}.{name}", source, start, shape, fmt, f"layer {layer} {meaning}",
                decl.unit, f"layer{layer}"))
            if rule == "params":
                if source == "syn.V" and not momentum:
                    continue
                w_name, b_name = names.split(",")
                add(w_name, w_off, (fo, fi), f"{decl.meaning} of the weights [fan_out, fan_in]")
                if bias:  # theta's biases are written in formats.bias
                    add(b_name, b_off, (fo,), f"{decl.meaning} of the biases",
                        "bias" if decl.fmt == "weight" else decl.fmt)
            elif rule == "generators":
                if node:
                    add("node_perturbation", n_off, (fo,), f"{decl.meaning} (one per neuron)")
                else:
                    add("weight_perturbation", w_off, (fo, fi), f"{decl.meaning} (one per weight)")
                    if bias:
                        add("bias_perturbation", b_off, (fo,), f"{decl.meaning} (one per bias)")
            else:
                add(names, n_off, (fo,), decl.meaning)
    for source in GLOBAL_SOURCES:
        if source == "output":
            out.append(Register("output", "neu.act", chip.n_neurons - sizes[-1], (sizes[-1],), "activation",
                                "network outputs (last layer, perturbed path)", block=f"layer{len(sizes) - 2}"))
            continue
        decl = _declared(source)
        shape = tuple(sizes[0] if d == "n_in" else sizes[-1] for d in decl.shape)
        out.append(Register(decl.public, source, 0, shape, decl.fmt, decl.meaning, decl.unit,
                            GLOBAL_BLOCKS[source.split(".")[0]]))
    return out


def registers_by_name(chip) -> dict[str, Register]:
    return {r.name: r for r in register_table(chip)}


@dataclass(frozen=True)
class Probe:
    """A parsed probe: the register, the index subset (as text and as flat
    element offsets into the register), every k-th cycle, window [start, stop)."""

    register: Register
    index: str
    flat: np.ndarray
    shape: tuple
    every: int = 1
    start: int = 0
    stop: int | None = None

    @property
    def name(self) -> str:
        return self.register.name

    @property
    def text(self) -> str:
        s = self.name + (f"[{self.index}]" if self.index else "")
        if self.every != 1:
            s += f" every={self.every}"
        if self.start or self.stop is not None:
            s += f" window={self.start}:{'' if self.stop is None else self.stop}"
        return s


_PROBE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:\[([^\]]*)\])?\s*(.*?)\s*$")
_INT = r"-?\d+"
_SLICE = re.compile(rf"^\s*({_INT})?\s*:\s*({_INT})?\s*(?::\s*({_INT})?\s*)?$")


def _dimension(text: str, n: int, what: str):
    text = text.strip()
    if re.fullmatch(_INT, text):
        i = int(text)
        if not -n <= i < n:
            raise ProbeError(f"{what}: index {i} is out of range for a dimension of size {n}")
        return i % n
    m = _SLICE.match(text)
    if not m:
        raise ProbeError(f"{what}: {text!r} is not an index or a slice such as 0:4")
    start, stop, step = (int(v) if v is not None else None for v in m.groups())
    if step == 0:
        raise ProbeError(f"{what}: a slice step cannot be 0")
    return slice(start, stop, step)


def parse_probe(text: str, chip, every: int = 1, start: int = 0, stop: int | None = None) -> Probe:
    """Parse ``NAME[INDEX] every=K window=A:B`` against `chip`'s registers.

    every/start/stop are the defaults (from ``[trace]``) the text may override.
    """
    m = _PROBE.match(text)
    if not m:
        raise ProbeError(f"{text!r} is not a probe such as layer0.weight[0:4, :] every=10")
    name, index, rest = m.groups()
    regs = registers_by_name(chip)
    if name not in regs:
        import difflib
        close = difflib.get_close_matches(name, list(regs), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ProbeError(f"{name!r} is not a register of this chip{hint} (registers: {', '.join(regs)})")
    reg = regs[name]
    for option in rest.split():
        key, _, value = option.partition("=")
        if key == "every" and re.fullmatch(r"\d+", value) and 1 <= int(value) <= 2**62:
            every = int(value)
        elif key == "window" and re.fullmatch(r"\d*:\d*", value):
            a, b = value.split(":")
            start, stop = int(a or 0), (int(b) if b else None)
            if max(start, stop or 0) > 2**62:
                raise ProbeError(f"{text!r}: window={value} is beyond cycle 2**62")
            if stop is not None and stop <= start:
                raise ProbeError(f"{text!r}: window={value} is empty (START:STOP, STOP exclusive)")
        else:
            raise ProbeError(f"{text!r}: {option!r} is not an option (allowed: every=K with K >= 1 (at most 2**62), window=START:STOP)")
    positions = np.arange(reg.size, dtype=np.int64).reshape(reg.shape)
    index = (index or "").strip()
    if index:
        dims = [d for d in index.split(",")]
        if len(dims) > len(reg.shape):
            raise ProbeError(f"{name}[{index}]: {name} has {len(reg.shape)} dimension(s) {reg.shape}")
        key = tuple(_dimension(d, n, f"{name}[{index}]") for d, n in zip(dims, reg.shape))
        positions = positions[key]
    positions = np.asarray(positions)
    if positions.size == 0:
        raise ProbeError(f"{name}[{index}] selects no elements")
    return Probe(reg, index, positions.ravel().copy(), positions.shape, every, start, stop)


def parse_probes(texts, chip, every: int = 1, start: int = 0, stop: int | None = None) -> list[Probe]:
    """Parse several probes; a register may be probed only once."""
    probes, seen = [], set()
    for text in texts:
        p = parse_probe(text, chip, every, start, stop)
        if p.name in seen:
            raise ProbeError(f"{p.name} is probed twice; probe each register once (use one index subset)")
        seen.add(p.name)
        probes.append(p)
    return probes


def compile_probes(probes: list[Probe], max_buffer_bytes: int = 8 << 20) -> ProbeBuffers:
    """The logic analyser's buffers (`blocks/probe.py`) for these probes:
    about max_buffer_bytes of samples (at most 65,536 rows) between flushes."""
    n_el = sum(p.flat.size for p in probes)
    rows = int(max(1, min(65536, max_buffer_bytes // (8 * max(n_el, 1)))))
    n = max(len(probes), 1)
    every, start, stop, col, width = (np.zeros(n, dtype=np.int64) for _ in range(5))
    src = np.zeros(max(n_el, 1), dtype=np.int64)
    idx = np.zeros(max(n_el, 1), dtype=np.int64)
    c = 0
    for i, p in enumerate(probes):
        if p.register.source not in SRC:
            raise ProbeError(f"{p.name}: the logic analyser cannot read {p.register.source}")
        every[i], start[i] = p.every, p.start
        stop[i] = np.iinfo(np.int64).max if p.stop is None else p.stop
        col[i], width[i] = c, p.flat.size
        src[c:c + p.flat.size] = SRC[p.register.source]
        idx[c:c + p.flat.size] = p.register.start + p.flat
        c += p.flat.size
    return ProbeBuffers(n=np.array([len(probes)], dtype=np.int64), every=every, start=start, stop=stop,
                        col=col, width=width, src=src, idx=idx,
                        buf=np.zeros((rows if probes else 1, max(n_el, 1))),
                        cyc=np.zeros((rows if probes else 1, n), dtype=np.int64),
                        fill=np.zeros(n, dtype=np.int64))
