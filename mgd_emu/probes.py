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

# Where a register lives: the engine state array it is a slice of.
SOURCES = ("theta", "G", "V", "pert", "act", "x", "y", "cu", "ctr")
SRC = {name: i for i, name in enumerate(SOURCES)}


class ProbeError(ValueError):
    """A probe that does not name a register of this chip, or a bad index."""


@dataclass(frozen=True)
class Register:
    """One named register: state array `source`, flat offset `start`, `shape`,
    number format class (None: not a datapath register) and a one-line meaning."""

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


def register_table(chip) -> list[Register]:
    """Every register of `chip`, layer by layer, then the global ones."""
    sizes, bias = chip.layer_sizes, chip.network.bias
    node = chip.perturbation.mode == "node"
    momentum = chip.optimizer.kind == "momentum"
    out = []
    w_off = n_off = 0
    for layer, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        p, blk = f"layer{layer}.", f"layer{layer}"
        b_off = w_off + fi * fo
        reg = lambda *a, **k: out.append(Register(p + a[0], *a[1:], **k, block=blk))
        reg("weight", "theta", w_off, (fo, fi), "weight", f"layer {layer} weights theta [fan_out, fan_in]")
        if bias:
            reg("bias", "theta", b_off, (fo,), "bias", f"layer {layer} biases")
        if node:
            reg("node_perturbation", "pert", n_off, (fo,), "perturbation",
                f"layer {layer} node perturbation generators (one per neuron)")
        else:
            reg("weight_perturbation", "pert", w_off, (fo, fi), "perturbation",
                f"layer {layer} weight perturbation generators")
            if bias:
                reg("bias_perturbation", "pert", b_off, (fo,), "perturbation",
                    f"layer {layer} bias perturbation generators")
        reg("weight_integrator", "G", w_off, (fo, fi), "integrator", f"layer {layer} weight integrators G")
        if bias:
            reg("bias_integrator", "G", b_off, (fo,), "integrator", f"layer {layer} bias integrators G")
        if momentum:
            reg("weight_velocity", "V", w_off, (fo, fi), "velocity", f"layer {layer} weight momentum registers v")
            if bias:
                reg("bias_velocity", "V", b_off, (fo,), "velocity", f"layer {layer} bias momentum registers v")
        reg("activation", "act", n_off, (fo,), "activation",
            f"layer {layer} neuron outputs (perturbed path)")
        w_off += fi * fo + (fo if bias else 0)
        n_off += fo
    from .blocks import layout as L
    n_out = sizes[-1]
    g = lambda *a, **k: out.append(Register(*a, **k))
    g("input", "x", 0, (sizes[0],), "input", "input sample register x", block="sampler")
    g("target", "y", 0, (n_out,), None, "target y* of the current sample", block="sampler")
    g("sample_index", "ctr", L.C_SAMPLE, (), None, "dataset index of the current sample", unit="index",
      block="sampler")
    g("output", "act", n_off - n_out, (n_out,), "activation", "network outputs (last layer, perturbed path)",
      block=f"layer{len(sizes) - 2}")
    g("cost", "cu", L.U_COST, (), "cost", "cost C of the last measurement", block="cost_unit")
    g("cost_baseline", "cu", L.U_COST0, (), "cost", "unperturbed cost C0 (baseline)", block="cost_unit")
    g("cost_change", "cu", L.U_CHANGE, (), "cost_change", "cost change C~ = C - C0 (or high-passed)",
      block="cost_unit")
    g("broadcast", "cu", L.U_BROADCAST, (), "cost_change", "cost change at the end of the broadcast line",
      block="broadcast")
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
        if key == "every" and re.fullmatch(r"\d+", value) and int(value) >= 1:
            every = int(value)
        elif key == "window" and re.fullmatch(r"\d*:\d*", value):
            a, b = value.split(":")
            start, stop = int(a or 0), (int(b) if b else None)
            if stop is not None and stop <= start:
                raise ProbeError(f"{text!r}: window={value} is empty (START:STOP, STOP exclusive)")
        else:
            raise ProbeError(f"{text!r}: {option!r} is not an option (allowed: every=K with K >= 1, window=START:STOP)")
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


def compile_probes(probes: list[Probe], max_buffer_bytes: int = 8 << 20) -> dict:
    """The arrays the compiled sampler (`blocks/probe.py`) works on.

    pr_cfg [n_probes, 5]: every, window start, window stop, first element, element count;
    pr_src, pr_idx [n_elements]: source array (SOURCES) and flat offset of each element;
    pr_buf [rows, n_elements] float64 and pr_cyc [rows, n_probes]: the sample buffers;
    pr_fill [n_probes]: rows filled since the last flush.
    """
    n_el = sum(p.flat.size for p in probes)
    rows = int(max(1, min(65536, max_buffer_bytes // (8 * max(n_el, 1)))))
    cfg = np.zeros((len(probes), 5), dtype=np.int64)
    src = np.zeros(n_el, dtype=np.int64)
    idx = np.zeros(n_el, dtype=np.int64)
    col = 0
    for i, p in enumerate(probes):
        stop = np.iinfo(np.int64).max if p.stop is None else p.stop
        cfg[i] = (p.every, p.start, stop, col, p.flat.size)
        src[col:col + p.flat.size] = SRC[p.register.source]
        idx[col:col + p.flat.size] = p.register.start + p.flat
        col += p.flat.size
    return dict(pr_cfg=cfg, pr_src=src, pr_idx=idx,
                pr_buf=np.zeros((rows if probes else 1, max(n_el, 1))),
                pr_cyc=np.zeros((rows if probes else 1, max(len(probes), 1)), dtype=np.int64),
                pr_fill=np.zeros(max(len(probes), 1), dtype=np.int64))
