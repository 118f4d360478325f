"""Exports of a trace for circuit designers: VCD waveforms and RTL golden vectors.

`write_vcd` turns probed registers into a VCD file (scopes chip > layer >
block, the declared bit widths, one clock cycle = 1/clock_hz) and a GTKWave
save file with the signals grouped by block. `write_golden` cuts one block out
of a trace (one synapse, or one neuron layer) and writes its stimulus and its
expected response per cycle as integer codes, one `$readmemh` hex file per
signal, plus `manifest.json`. `replay` drives the block's own compiled kernel
from such vectors; `write_golden` uses it to check every vector it writes.
The formats are specified in `traces/README.md` ("Exports").
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit
from vcd.writer import RealVariable

from . import __version__
from .blocks import layout as L
from .blocks.broadcast import broadcast_out, broadcast_step
from .blocks.controller import controller_step, controller_wires
from .blocks.neuron import neuron_layer
from .blocks.pipeline import layer_gate, pipeline_step
from .blocks.register import Monitor
from .blocks.synapse import Wires
from .chipmap import ChipState, Variant, build_state, variant_of
from .cycle import synapse_stage
from . import safe_io
from .fixedpoint import Format
from .kernel_cache import cached
from .probes import registers_by_name
from .spec import correlator_delays
from .trace import Trace, TraceError

GOLDEN_FORMAT = "mgd-emu-golden"
GOLDEN_VERSION = 1
_UNITS = (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9), ("ps", 1e-12), ("fs", 1e-15))
# Sub-blocks of a layer, from the register's name within it.
_SUB_BLOCK = {"weight": "synapse", "bias": "synapse", "weight_integrator": "synapse",
              "bias_integrator": "synapse", "weight_velocity": "synapse", "bias_velocity": "synapse",
              "weight_perturbation": "perturbation", "bias_perturbation": "perturbation",
              "node_perturbation": "perturbation", "activation": "neuron", "output": "neuron"}


# =============================================================== VCD export

class _RealUntilSampled(RealVariable):
    """A VCD `real` that has no value until its first sample.

    VCD has no x for reals, and pyvcd writes every real's initial value
    (0.0 by default) into $dumpvars. This one holds None until its first
    change and is then left out of $dumpvars (pyvcd skips variables whose
    dump() is None), so its first value change is its first sample:
    viewers show no value before it, rather than a 0 the chip never held."""

    __slots__ = ()

    def dump(self, check: bool = True):
        return None if self.value is None else super().dump(check)


def _no_value_yet(var) -> None:
    var.__class__ = _RealUntilSampled
    var.value = None


def vcd_timescale(clock_hz: float) -> tuple[str, int]:
    """(VCD timescale, units per clock cycle): the coarsest unit in which one
    cycle is an even whole number of units (so the clock falls mid-cycle on a
    unit); 1 fs with the period rounded when none is exact."""
    period = 1.0 / float(clock_hz)
    for unit, seconds in _UNITS:
        n = period / seconds
        if n >= 2 and abs(n - round(n)) <= 1e-9 * n and round(n) % 2 == 0:
            return f"1 {unit}", int(round(n))
    return "1 fs", max(2, 2 * int(round(period / 2e-15)))


def vcd_scope(signal) -> tuple[str, ...]:
    """Hierarchical scope of a recorded signal: chip > layer > block, or chip > block."""
    block = signal.attrs.get("block", "chip")
    leaf = signal.name.rsplit(".", 1)[-1]
    if block.startswith("layer"):
        return ("chip", block, _SUB_BLOCK.get(leaf, "other"))
    return ("chip", block)


def _element_names(signal) -> list[str]:
    """One VCD variable name per recorded element: `weight_0_1`, `cost`."""
    leaf = signal.name.rsplit(".", 1)[-1]
    shape = signal.register_shape
    if not shape:
        return [leaf]
    return [leaf + "".join(f"_{i}" for i in np.unravel_index(int(e), shape))
            for e in np.asarray(signal.elements).ravel()]


@dataclass
class _VcdVar:
    scope: tuple
    name: str
    kind: str          # reg (fixed: codes), real (float), integer (index)
    width: int
    signed: bool
    cycles: np.ndarray
    values: np.ndarray  # codes (int64) or values (float64), one per sample
    var: object = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return ".".join(self.scope + (self.name,))

    def vcd_value(self, v):
        if self.kind == "real":
            return float(v)
        return int(v) & ((1 << self.width) - 1)  # two's complement of `width` bits


def _vcd_vars(t: Trace, names) -> list[_VcdVar]:
    out = []
    for name in names:
        s = t.signal(name)
        scope = vcd_scope(s)
        n = len(s.cycles)
        data = s.data.reshape(n, -1)
        kind_attr = s.attrs.get("format_kind")
        for col, vname in enumerate(_element_names(s)):
            if kind_attr == "fixed":
                kind, width, signed = "reg", s.format.width, s.format.signed
                values = data[:, col].astype(np.int64)
                bad = (values < s.format.min_code) | (values > s.format.max_code)
                if bad.any():   # a code the register cannot hold would be cut to its width in the VCD
                    k = int(np.flatnonzero(bad)[0])
                    raise TraceError(f"{t.path}: {name}{'' if data.shape[1] == 1 else f' element {col}'} holds "
                                     f"code {int(values[k])} at cycle {int(s.cycles[k])}, outside its format "
                                     f"{s.format.describe()} (codes {s.format.min_code}..{s.format.max_code}): "
                                     f"the trace was altered or written by another program")
            elif kind_attr == "index":
                kind, width, signed = "integer", 32, False
                values = data[:, col].astype(np.int64)
                if len(values) and int(values.max()) >= 1 << 32:
                    width = 64
            else:
                kind, width, signed = "real", 64, True
                values = data[:, col].astype(np.float64)
            out.append(_VcdVar(scope, vname, kind, width, signed, s.cycles.astype(np.int64), values))
    return out


def write_vcd(t: Trace, out, signals=None, start=None, stop=None) -> list[Path]:
    """Write the trace's signals over cycles [start, stop) as a VCD file `out`
    and a GTKWave save file beside it (same name, `.gtkw`). Returns both paths.

    signals: register names (default: every recorded signal). A register
    holds its value between samples (every=K); a value is written only when it
    changes, at the clock edge that starts its cycle. Time = cycle/clock_hz.
    """
    from vcd import VCDWriter
    from vcd.gtkw import GTKWSave

    names = list(t.signals) if not signals else list(dict.fromkeys(signals))
    unknown = [n for n in names if n not in t.signals]
    if unknown:
        raise TraceError(f"{t.path}: no signal {', '.join(map(repr, unknown))} in this trace "
                         f"(recorded: {', '.join(t.signals) or 'none'})")
    if not names:
        raise TraceError(f"{t.path}: the trace records no signals; run with --probe NAME to record some")
    vars_ = _vcd_vars(t, names)
    first = min((int(v.cycles[0]) for v in vars_ if len(v.cycles)), default=None)
    last = max((int(v.cycles[-1]) for v in vars_ if len(v.cycles)), default=None)
    if first is None:
        raise TraceError(f"{t.path}: {', '.join(names)} have no samples")
    a = first if start is None else int(start)
    b = last + 1 if stop is None else int(stop)
    if a < 0 or b <= a:
        raise TraceError(f"window {a}:{b} is empty (START:STOP in cycles, STOP exclusive, START >= 0)")
    if a > last or b <= first:
        raise TraceError(f"window {a}:{b} holds no samples of {', '.join(names)} "
                         f"(they are recorded in cycles {first} to {last})")

    timescale, per = vcd_timescale(t.chip.timing.clock_hz)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Value changes of every variable inside the window, as (cycle, var, value).
    events = []
    for k, v in enumerate(vars_):
        c = v.cycles
        i0 = int(np.searchsorted(c, a, side="right")) - 1  # the sample holding at cycle a
        i0 = max(i0, 0)
        i1 = int(np.searchsorted(c, b, side="left"))
        cyc, val = c[i0:i1], v.values[i0:i1]
        if len(cyc) == 0:
            continue
        if v.kind == "real":
            changed = np.ones(len(val), bool)
            changed[1:] = ~((val[1:] == val[:-1]) | (np.isnan(val[1:]) & np.isnan(val[:-1])))
        else:
            changed = np.ones(len(val), bool)
            changed[1:] = val[1:] != val[:-1]
        cyc = np.maximum(cyc[changed], a)
        events.append((cyc, np.full(len(cyc), k), val[changed]))
    with safe_io.output(out, [t.path], mode="w") as fp:
        with VCDWriter(fp, timescale=timescale, date=t.attrs.get("created", ""),
                       version=f"mgd-emu {__version__}", comment=(
                           f"chip {t.attrs.get('chip_name')} seed {t.seed}, cycles {a}:{b}, "
                           f"one cycle = {per} x {timescale} (clock_hz = {t.chip.timing.clock_hz:g}); "
                           f"fixed-point registers hold two's complement codes, value = code * 2^-frac_bits")) as w:
            clk = w.register_var(("chip",), "clk", "wire", size=1, init=0)
            for v in vars_:
                v.var = w.register_var(v.scope, v.name, v.kind, size=v.width)  # reg, integer: x
                if v.kind == "real":
                    _no_value_yet(v.var)
            if events:
                order_cyc = np.concatenate([e[0] for e in events])
                order_var = np.concatenate([e[1] for e in events])
                vals = [x for e in events for x in e[2]]
                order = np.argsort(order_cyc, kind="stable")
            else:
                order_cyc, order_var, vals, order = np.zeros(0, int), np.zeros(0, int), [], np.zeros(0, int)
            j = 0
            for cycle in range(a, b):
                w.change(clk, cycle * per, 1)
                while j < len(order) and order_cyc[order[j]] == cycle:
                    v = vars_[int(order_var[order[j]])]
                    w.change(v.var, cycle * per, v.vcd_value(vals[order[j]]))
                    j += 1
                w.change(clk, cycle * per + per // 2, 0)
            w.close(b * per)

    gtkw = out.with_suffix(".gtkw")
    with safe_io.output(gtkw, [t.path], mode="w") as fp:
        g = GTKWSave(fp)
        g.comment(f"mgd-emu {__version__}: {t.attrs.get('chip_name')} seed {t.seed}, cycles {a}:{b}")
        g.dumpfile(str(out.resolve()))
        g.savefile(str(gtkw.resolve()))
        g.timestart(a * per)
        g.trace("chip.clk")
        by_block = {}
        for v in vars_:
            by_block.setdefault(".".join(v.scope[1:]), []).append(v)
        for block, members in by_block.items():
            with g.group(block, closed=False):
                for v in members:
                    if v.kind == "real":
                        g.trace(v.path, datafmt="real")
                    elif v.kind == "integer":
                        g.trace(f"{v.path}[{v.width - 1}:0]", datafmt="dec")
                    else:
                        name = v.path if v.width == 1 else f"{v.path}[{v.width - 1}:0]"
                        g.trace(name, datafmt="signed" if v.signed else "dec")
    return [out, gtkw]


# ======================================================== control schedule

@njit(cache=True)
def control_schedule(n_cycles, st, baseline, integrator, pipelined):
    """The controller's and the broadcast line's control wires for cycles
    0..n_cycles-1 of a chip at reset (state `st`), from the controller,
    pipeline and broadcast kernels (data-independent; `st` is stepped).

    Returns int64 [n_cycles, 4 + n_layers]: measure (slot tag at the
    controller is a measurement), update_edge, broadcast valid, step counter,
    then per layer the perturbation gate (the slot entering that layer is a
    measurement); slot tags move down the layer pipeline as in the engine.
    """
    cfg, ctl, pipe, bc = st.cfg, st.ctl, st.pipe, st.bc
    n_layers = cfg.n_layers
    out = np.zeros((n_cycles, 4 + n_layers), dtype=np.int64)
    for n in range(n_cycles):
        tag, new_sample, x_edge, p_edge, update_edge = controller_wires(
            ctl, cfg.tau_x, cfg.tau_p, cfg.tau_theta, integrator)
        for layer in range(n_layers):
            out[n, 4 + layer] = 1 if layer_gate(layer, tag, pipe, pipelined) != 0.0 else 0
        tag_c = pipe.tag[n_layers - 1] if pipelined else tag
        valid = tag_c == L.TAG_MEASURE
        seen, bvalid = broadcast_out(bc, cfg.bcast_delay, n, 0.0, valid)
        out[n, 0] = 1 if tag == L.TAG_MEASURE else 0
        out[n, 1] = 1 if update_edge else 0
        out[n, 2] = 1 if bvalid else 0
        out[n, 3] = ctl.step[0]
        controller_step(ctl, tag, x_edge, update_edge, baseline)
        broadcast_step(bc, cfg.bcast_delay, n, 0.0, valid, seen, bvalid)
        if pipelined:
            pipeline_step(pipe, tag, new_sample, st.smp.y)
    return out


def chip_state(chip, seed) -> ChipState:
    """A chip's state at reset, without an Emulator (no probes, no kernel)."""
    from .tasks import make_task

    return build_state(chip, seed, make_task(chip.task.name, **chip.task_params()).train)


# ========================================================= replay harnesses

def _replay_synapse(v: Variant, st, layer, i, g, k, first, stim, out):
    """Drive the synapses of `layer` (the cycle kernel's own synapse stage)
    cycle by cycle for parameter i, fed by generator g (and, node mode,
    presynaptic input k >= 0); the layer's other synapses see zeros: each
    synapse's registers depend only on its own inputs. stim: (bcast, bvalid,
    pert_in, pre_in, gate, update_edge, measure) per cycle."""
    _replay_synapse_kernel(v)(st, layer, i, g, k, first, stim, out)


@functools.cache
def _replay_synapse_kernel(v: Variant):
    synapses = synapse_stage(v)

    @njit
    def replay(st, layer, i, g, k, first, stim, out):
        bcast, bvalid, pert_in, pre_in, gate, update_edge, measure = stim
        pert = st.gen.pert
        a_in = np.zeros(st.lay.fan_in[layer])
        syn = st.syn
        for n in range(bcast.shape[0]):
            pert[g] = pert_in[n]
            if k >= 0:
                a_in[k] = pre_in[n]
            w = Wires(float(gate[n]), bcast[n], bvalid[n] != 0, update_edge[n] != 0, measure[n] != 0)
            synapses(st, layer, a_in, w, first + n)
            out[n, 0], out[n, 1], out[n, 2] = syn.theta[i], syn.G[i], syn.V[i]
    return replay if v.rules.custom else cached(replay, v.name)


@njit(cache=True)
def _replay_layer(st, layer, act_kind, mode, a_in, weights, biases, perts, gate, out):
    """Drive `neuron_layer` cycle by cycle from the layer's inputs."""
    lay, theta, pert = st.lay, st.syn.theta, st.gen.pert
    fan_in, fan_out = lay.fan_in[layer], lay.fan_out[layer]
    w_off, b_off, n_off = lay.w_off[layer], lay.b_off[layer], lay.n_off[layer]
    gen_off, gen_count = lay.gen_off[layer], lay.gen_count[layer]
    for n in range(a_in.shape[0]):
        theta[w_off:w_off + fan_in * fan_out] = weights[n]
        if b_off >= 0:
            theta[b_off:b_off + fan_out] = biases[n]
        pert[gen_off:gen_off + gen_count] = perts[n]
        neuron_layer(layer, lay, act_kind, mode, a_in[n], theta, pert, float(gate[n]), st.neu, 0.0,
                     st.fmts, st.mon.events)
        out[n] = st.neu.act_w[n_off:n_off + fan_out]


def _codes_to_values(codes, col) -> np.ndarray:
    return np.ldexp(np.asarray(codes, dtype=np.float64), -int(col["frac_bits"]))


def _values_to_codes(values, frac_bits) -> np.ndarray:
    return np.rint(np.ldexp(np.asarray(values, dtype=np.float64), int(frac_bits))).astype(np.int64)


def replay(manifest: dict, stimulus: dict, chip) -> dict:
    """The block's response to golden `stimulus`, from its compiled kernel.

    manifest: as written by `write_golden`; stimulus: {column name: int codes
    [cycles, elements]}; chip: the chip the vectors came from. Returns
    {response column name: int codes [cycles, elements]}.
    """
    chip = chip.replace({"trace.probes": []})
    st = chip_state(chip, manifest["seed"])
    variant = variant_of(chip, parallel=False)
    cols = {c["name"]: c for c in manifest["stimulus"] + manifest["response"]}
    val = {name: _codes_to_values(codes, cols[name]) for name, codes in stimulus.items()}
    bit = {name: np.asarray(codes, dtype=np.int64)[:, 0] for name, codes in stimulus.items()}
    first, n = manifest["cycles"]["start"], manifest["cycles"]["count"]
    events = Monitor(np.zeros_like(st.mon.events))
    if manifest["block"] == "synapse":
        i, layer = manifest["flat_index"], manifest["layer"]
        init = manifest["initial"]
        syn = st.syn._replace(theta=np.zeros_like(st.syn.theta), G=np.zeros_like(st.syn.G),
                              V=np.zeros_like(st.syn.V), p_ring=np.zeros_like(st.syn.p_ring),
                              in_ring=np.zeros_like(st.syn.in_ring), noise=np.zeros(1, dtype=np.uint64))
        param = cols[manifest["response"][0]["name"]]
        syn.theta[i] = _codes_to_values([init[param["name"]]["code"]], param)[0]
        syn.G[i] = _codes_to_values([init["integrator"]["code"]], cols["integrator"])[0]
        if "velocity" in init:
            syn.V[i] = _codes_to_values([init["velocity"]["code"]], cols["velocity"])[0]
        ring = st.cfg.ring
        dl = manifest["delay_line"]
        g, k = manifest["generator_index"], manifest.get("presynaptic_index", -1)
        in_off = int(st.lay.in_off[layer])
        for m, code in zip(range(first - len(dl["codes"]), first), dl["codes"]):
            syn.p_ring[m % ring, g] = _codes_to_values([code], cols["perturbation"])[0]
        for m, code in zip(range(first - len(dl.get("presynaptic_codes", [])), first),
                           dl.get("presynaptic_codes", [])):
            syn.in_ring[m % ring, in_off + k] = _codes_to_values([code], cols["presynaptic"])[0]
        pre = val["presynaptic"][:, 0] if "presynaptic" in val else np.zeros(n)
        arrays = {param["name"]: syn.sr_theta, "integrator": syn.sr_g, "velocity": syn.sr_v}
        for reg_name, state in manifest.get("rounding_generators", {}).items():
            arrays[reg_name][i] = np.uint64(int(state, 16))
        out = np.zeros((n, 3))
        st = st._replace(syn=syn, gen=st.gen._replace(pert=np.zeros_like(st.gen.pert)), mon=events,
                         # a stimulus need not clear G every cycle, as such a chip does
                         cfg=st.cfg._replace(weight_sigma=0.0, g_clear=False))
        stim = (np.ascontiguousarray(val["broadcast"][:, 0]), bit["broadcast_valid"],
                np.ascontiguousarray(val["perturbation"][:, 0]), np.ascontiguousarray(pre), bit["gate"],
                bit["update_edge"], bit["measure"])
        _replay_synapse(variant, st, layer, i, g, k, first, stim, out)
        resp = {}
        for c, col in enumerate(manifest["response"]):
            resp[col["name"]] = _values_to_codes(out[:, c:c + 1], col["frac_bits"])
        return resp
    # neuron layer
    layer = manifest["layer"]
    lay = st.lay
    last = st.cfg.n_layers - 1
    act_kind = st.cfg.output_act if layer == last else st.cfg.hidden_act
    for k, state in manifest.get("rounding_generators", {}).items():
        st.neu.sr[int(k.rsplit("_", 1)[1]) + int(lay.n_off[layer])] = np.uint64(int(state, 16))
    fan_out = int(lay.fan_out[layer])
    biases = val["bias"] if "bias" in val else np.zeros((n, fan_out))
    perts = np.concatenate([val[c["name"]] for c in manifest["stimulus"] if c["name"].endswith("perturbation")],
                           axis=1)
    out = np.zeros((n, fan_out))
    _replay_layer(st._replace(mon=events), layer, act_kind, variant.mode, np.ascontiguousarray(val["input"]),
                  np.ascontiguousarray(val["weight"]), np.ascontiguousarray(biases),
                  np.ascontiguousarray(perts), bit["gate"], out)
    col = manifest["response"][0]
    return {col["name"]: _values_to_codes(out, col["frac_bits"])}


# ========================================================== golden vectors

def hex_digits(width: int) -> int:
    return max(1, (int(width) + 3) // 4)


def pack_words(codes: np.ndarray, width: int) -> list[int]:
    """Each row's elements as one word, element e in bits [e*width, (e+1)*width)
    (two's complement of `width` bits each)."""
    mask = (1 << width) - 1
    words = []
    for row in np.asarray(codes, dtype=np.int64).reshape(len(codes), -1):
        word = 0
        for e, c in enumerate(row):
            word |= (int(c) & mask) << (e * width)
        words.append(word)
    return words


def _hex_code(code: int, width: int) -> str:
    return format(int(code) & ((1 << width) - 1), f"0{hex_digits(width)}x")


@dataclass
class _Column:
    """One golden signal: `name`, what it is, its codes [cycles, elements]."""

    name: str
    description: str
    codes: np.ndarray
    width: int
    signed: bool
    int_bits: int
    frac_bits: int
    elements: list

    @staticmethod
    def of(name, description, codes, fmt: Format | None, elements):
        if fmt is None:  # a control bit
            return _Column(name, description, np.asarray(codes, np.int64).reshape(len(codes), -1),
                           1, False, 1, 0, list(elements))
        return _Column(name, description, np.asarray(codes, np.int64).reshape(len(codes), -1),
                       fmt.width, fmt.signed, fmt.int_bits, fmt.frac_bits, list(elements))

    def entry(self) -> dict:
        n = len(self.elements)
        return dict(name=self.name, file=f"{self.name}.hex", description=self.description,
                    elements=self.elements, width=self.width, signed=self.signed,
                    int_bits=self.int_bits, frac_bits=self.frac_bits, word_bits=self.width * n,
                    hex_digits=hex_digits(self.width * n))


class _Need:
    """The recorded signals a golden block needs, and the cycles each must cover."""

    def __init__(self, t: Trace, what: str):
        self.t, self.what = t, what
        self.items = []  # (register, offset, lo, hi, zero_before_0)

    def add(self, register, offset, lo=0, hi=0, zero_before_reset=False):
        """Register element `offset` at cycles [A + lo, B - 1 + hi]."""
        self.items.append((register, int(offset), lo, hi, zero_before_reset))

    def window(self, start, stop) -> tuple[int, int]:
        t, missing, lim_a, lim_b = self.t, [], [0], []
        for reg, off, lo, hi, zero in self.items:
            why = None
            if reg not in t.signals:
                why = "not probed"
            else:
                s = t.signal(reg)
                every = int(s.attrs.get("every", 1))
                flat = np.asarray(s.elements).ravel()
                if every != 1:
                    why = f"probed every={every}, needs every cycle"
                elif off not in set(int(e) for e in flat):
                    why = f"probed as {s.attrs.get('probe')}, which leaves out this element"
                elif len(s.cycles) == 0:
                    why = "has no samples"
                else:
                    c0, c1 = int(s.cycles[0]), int(s.cycles[-1])
                    if c1 - c0 + 1 != len(s.cycles):
                        why = "has gaps in its cycles"
                    else:
                        lim_a.append(0 if (zero and c0 == 0) else c0 - lo)
                        lim_b.append(c1 - hi + 1)
            if why and (reg, why) not in [(m[0], m[1]) for m in missing]:
                missing.append((reg, why))
        if missing:
            add = " ".join(f'--probe "{r}"' for r in dict.fromkeys(m[0] for m in missing))
            lacks = "; ".join(f"{r} ({why})" for r, why in missing)
            raise TraceError(f"{t.path}: golden vectors of {self.what} need every cycle of "
                             f"{', '.join(dict.fromkeys(i[0] for i in self.items))}; this trace lacks {lacks}. "
                             f"Record them: mgd-emu run ... {add}")
        a_min, b_max = max(lim_a), min(lim_b)
        a = a_min if start is None else int(start)
        b = b_max if stop is None else int(stop)
        if b <= a:
            raise TraceError(f"window {a}:{b} is empty (START:STOP in cycles, STOP exclusive)"
                             if start is not None or stop is not None else
                             f"{t.path}: the probes of {self.what} overlap in no whole cycle")
        if a < a_min or b > b_max:
            raise TraceError(f"window {a}:{b}: golden vectors of {self.what} can cover cycles {a_min}:{b_max} "
                             f"of this trace (a response needs the next cycle's registers, the correlator "
                             f"the perturbations of its delay line)")
        return a, b

    def codes(self, reg, offset, first, last) -> np.ndarray:
        """Codes (or index values) of one element at cycles first..last (clamped
        at 0: earlier cycles are zero, the reset state of a delay line)."""
        s = self.t.signal(reg)
        col = int(np.flatnonzero(np.asarray(s.elements).ravel() == offset)[0])
        data = s.data.reshape(len(s.cycles), -1)[:, col].astype(np.int64)
        out = np.zeros(last - first + 1, dtype=np.int64)
        lo = max(first, 0)
        if lo <= last:
            i0 = int(np.searchsorted(s.cycles, lo))
            out[lo - first:] = data[i0:i0 + last - lo + 1]
        return out


def _fixed_or_refuse(t, chip, classes, what):
    floats = [c for c in classes if not getattr(chip.formats, c).is_fixed]
    if floats:
        raise TraceError(f"{t.path}: golden vectors are integer codes, but {what} uses float formats "
                         f"({', '.join('formats.' + c for c in floats)}); use a fixed-point chip")


def _parse_synapse(block: str, chip, t) -> tuple[str, int | None]:
    """`synapse` or `synapse:layer1.weight[0,1]` -> (register, flat offset or None)."""
    if block == "synapse":
        return "", None
    _, _, spec = block.partition(":")
    name, _, index = spec.partition("[")
    regs = registers_by_name(chip)
    leaf = name.rsplit(".", 1)[-1]
    if name not in regs or leaf not in ("weight", "bias"):
        params = [r for r in regs if r.rsplit(".", 1)[-1] in ("weight", "bias")]
        raise TraceError(f"--block {block!r}: name one parameter, e.g. synapse:{params[0]}[0,0] "
                         f"(parameters: {', '.join(params)})")
    reg = regs[name]
    try:
        idx = tuple(int(v) for v in index.rstrip("]").split(",")) if index else ()
        if len(idx) != len(reg.shape) or any(not 0 <= v < n for v, n in zip(idx, reg.shape)):
            raise ValueError
    except ValueError:
        raise TraceError(f"--block {block!r}: {name} has shape {reg.shape}; give one element, "
                         f"e.g. synapse:{name}[{','.join('0' * len(reg.shape))}]") from None
    return name, int(np.ravel_multi_index(idx, reg.shape)) if idx else 0


def _rerun_generators(t, cycle, arrays, indices):
    """Stochastic-rounding generator states at `cycle`, by re-running the chip
    (a trace reproduces its run bit for bit): {"block.field": [uint64 per index]}."""
    from .engine import Emulator

    emu = Emulator(t.data_chip("re-running the chip").replace({"trace.probes": []}), t.seed)
    emu.run(cycle)
    return emu, {a: [int(emu.state_array(a)[i]) for i in indices] for a in arrays}


def write_golden(t: Trace, out, block: str = "synapse", start=None, stop=None) -> list[Path]:
    """Write golden vectors of one block over cycles [start, stop) into folder `out`.

    block: `synapse` (the first parameter whose registers are all probed),
    `synapse:layer1.weight[0,1]` or `synapse:layer0.bias[1]` (one parameter),
    or `layer0`, `layer1`... (a neuron layer). Row n of every file is cycle
    start + n: stimulus = what enters the block during that cycle, response =
    the block's registers after the clock edge that ends it. The vectors are
    replayed through the block's kernel before they are written.
    Returns the written paths (the hex files, then manifest.json).
    """
    chip = t.data_chip("exporting golden vectors")
    if block == "synapse" or block.startswith("synapse:"):
        cols, meta = _golden_synapse(t, chip, block, start, stop)
    elif block.startswith("layer") and block[5:].isdigit():
        cols, meta = _golden_layer(t, chip, int(block[5:]), start, stop)
    else:
        n = len(chip.layer_sizes) - 1
        raise TraceError(f"--block {block!r} is not a block with golden vectors (blocks: synapse, "
                         f"synapse:layer0.weight[0,0], {', '.join(f'layer{i}' for i in range(n))})")
    stim, resp = cols
    manifest = dict(format=GOLDEN_FORMAT, format_version=GOLDEN_VERSION, mgd_emu_version=__version__,
                    chip=t.attrs.get("chip_name"), seed=t.seed, trace=str(t.path),
                    clock_hz=chip.timing.clock_hz, **meta,
                    stimulus=[c.entry() for c in stim], response=[c.entry() for c in resp])
    # Check: the block's own kernel, driven by the stimulus, gives the response.
    got = replay(manifest, {c.name: c.codes for c in stim}, chip)
    for c in resp:
        bad = np.flatnonzero(np.any(got[c.name] != c.codes, axis=1))
        if len(bad):
            n = int(bad[0])
            raise TraceError(f"{t.path}: the recorded {c.name} does not follow from the stimulus through "
                             f"the {manifest['block']} kernel at cycle {manifest['cycles']['start'] + n} "
                             f"(recorded {c.codes[n].tolist()}, kernel {got[c.name][n].tolist()}); "
                             f"was the trace written by another mgd-emu version?")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TraceError(f"{out}: golden vectors go into a folder, and this is a file")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in stim + resp:
        path = out / f"{c.name}.hex"
        digits = hex_digits(c.width * len(c.elements))
        words = pack_words(c.codes, c.width)
        safe_io.write_text(path, "".join(f"{w:0{digits}x}\n" for w in words), [t.path])
        paths.append(path)
    path = out / "manifest.json"
    safe_io.write_text(path, json.dumps(manifest, indent=2) + "\n", [t.path])
    paths.append(path)
    return paths


def _golden_synapse(t, chip, block, start, stop):
    """Columns and manifest entries of one synapse (weight perturbation)."""
    node = chip.perturbation.mode == "node"
    if node and chip.perturbation.presynaptic == "unperturbed":
        raise TraceError(f"{t.path}: the synapses of this chip correlate with the unperturbed path's activity, "
                         f"which no probe records; golden vectors need perturbation.presynaptic = \"live\"")
    if chip.noise.weight_sigma != 0.0:
        raise TraceError(f"{t.path}: golden vectors of a synapse need noise.weight_sigma = 0 (the weight "
                         f"noise generator is shared by every synapse, so one synapse cannot be cut out)")
    momentum = chip.optimizer.kind == "momentum"
    _fixed_or_refuse(t, chip, ["weight", "bias", "perturbation", "cost_change", "integrator",
                               "learning_rate", "correlator_gain"] + (["velocity"] if momentum else [])
                     + (["input", "activation"] if node else []), "the synapse")
    regs = registers_by_name(chip)
    delays = correlator_delays(chip)
    name, offset = _parse_synapse(block, chip, t)
    candidates = []
    if name:
        candidates = [(name, offset)]
    else:
        for r in regs.values():
            if r.name.rsplit(".", 1)[-1] in ("weight", "bias"):
                candidates += [(r.name, e) for e in range(r.size)]

    def needs(pname, off):
        layer = int(pname.split(".")[0][5:])
        kind = pname.rsplit(".", 1)[-1]
        what = f"synapse {pname}[{','.join(map(str, np.unravel_index(off, regs[pname].shape)))}]"
        need = _Need(t, what)
        need.add(pname, off, 0, 1)
        need.add(f"layer{layer}.{kind}_integrator", off, 0, 1)
        if momentum:
            need.add(f"layer{layer}.{kind}_velocity", off, 0, 1)
        gen_reg, gen_off, pre = _synapse_inputs(chip, layer, kind, off)
        need.add(gen_reg, gen_off, -delays[layer], 0, zero_before_reset=True)
        if pre:
            need.add(pre[0], pre[1], pre[2] - delays[layer], pre[2], zero_before_reset=pre[2] == 0)
        need.add("broadcast", 0, 1, 1)
        return need, layer, kind, what

    chosen, first_error = None, None
    for pname, off in candidates:
        need, layer, kind, what = needs(pname, off)
        try:
            a, b = need.window(start, stop)
        except TraceError as exc:
            first_error = first_error or exc
            continue
        chosen = (pname, off, need, layer, kind, what)
        break
    if chosen is None:  # no parameter has every signal it needs: say what the first one lacks
        raise first_error
    pname, off, need, layer, kind, what = chosen
    reg = regs[pname]
    i = reg.start + off
    d = delays[layer]
    f = chip.formats
    n = b - a
    sched = _schedule(t, b)
    gate = sched[:, 4 + layer]
    gen_reg, gen_off, pre = _synapse_inputs(chip, layer, kind, off)
    pert = need.codes(gen_reg, gen_off, a - d, b - 1)
    p_fmt, g_fmt = getattr(f, kind), f.integrator
    stim = [
        _Column.of("broadcast", "cost change C~ on the broadcast line in this cycle (the broadcast "
                   "register one cycle later)", need.codes("broadcast", 0, a + 1, b), f.cost_change, ["broadcast"]),
        _Column.of("broadcast_valid", "the broadcast line carries a measurement", sched[a:b, 2], None,
                   ["broadcast_valid"]),
        _Column.of("perturbation", f"the perturbation generator p ({gen_reg}[{gen_off}])", pert[d:],
                   f.perturbation, ["perturbation"]),
        _Column.of("gate", "perturbations applied (measurement slot at this layer)", gate[a:b], None, ["gate"]),
        _Column.of("update_edge", "this cycle ends a tau_theta window: update theta, clear G",
                   sched[a:b, 1], None, ["update_edge"]),
        _Column.of("measure", "measurement cycle at the controller (analog integrator updates)",
                   sched[a:b, 0], None, ["measure"]),
    ]
    pre_codes = []
    if pre:
        pre_codes = need.codes(pre[0], pre[1], a - d + pre[2], b - 1 + pre[2])
        stim.insert(3, _Column.of("presynaptic", f"presynaptic activity a_k ({pre[0]}[{pre[1]}]"
                                  f"{' one cycle later' if pre[2] else ''})", pre_codes[d:],
                                  f.input if pre[0] == "input" else f.activation, ["presynaptic"]))
    resp = [_Column.of(kind, f"the parameter theta ({pname}) after the clock edge",
                       need.codes(pname, off, a + 1, b), p_fmt, [kind]),
            _Column.of("integrator", "the integrator G after the clock edge",
                       need.codes(f"layer{layer}.{kind}_integrator", off, a + 1, b), g_fmt, ["integrator"])]
    if momentum:
        resp.append(_Column.of("velocity", "the momentum register v after the clock edge",
                               need.codes(f"layer{layer}.{kind}_velocity", off, a + 1, b), f.velocity,
                               ["velocity"]))
    initial = {c.name: dict(code=int(need.codes(reg_name, off, a, a)[0]),
                            hex=_hex_code(need.codes(reg_name, off, a, a)[0], c.width))
               for c, reg_name in zip(resp, [pname, f"layer{layer}.{kind}_integrator",
                                             f"layer{layer}.{kind}_velocity"])}
    gated = [int(p) if (m >= 0 and gate[m]) else 0 for m, p in zip(range(a - d, a), pert[:d])]
    stochastic = {arr: cls for arr, cls in (("syn.sr_theta", kind), ("syn.sr_g", "integrator"),
                                            ("syn.sr_v", "velocity")) if getattr(f, cls).rounding == "stochastic"
                  and (arr != "syn.sr_v" or momentum)}
    generators = {}
    if stochastic:
        emu, states = _rerun_generators(t, a, list(stochastic), [i])
        if _values_to_codes([emu.st.syn.theta[i]], p_fmt.frac_bits)[0] != initial[kind]["code"]:
            raise TraceError(f"{t.path}: re-running the chip does not reproduce {pname} at cycle {a}, so the "
                             f"stochastic-rounding generators' state is unknown (another mgd-emu version?)")
        generators = {cls: format(states[arr][0], "016x") for arr, cls in stochastic.items()}
    K = _constants(t)
    meta = dict(
        block="synapse", parameter=f"{pname}[{','.join(map(str, np.unravel_index(off, reg.shape)))}]",
        layer=layer, flat_index=int(i), is_bias=kind == "bias",
        cycles=dict(start=a, stop=b, count=n),
        initial=initial,
        delay_line=dict(depth=d, codes=gated,
                        meaning="gated perturbation codes that entered the delay line in cycles "
                                "start-depth .. start-1, oldest first",
                        **({"presynaptic_codes": [int(v) for v in pre_codes[:d]]} if pre else {})),
        generator_index=int(_generator_index(chip, layer, gen_reg, gen_off)),
        **({"presynaptic_index": int(pre[1])} if pre else {}),
        rounding_generators=generators,
        constants={k: v for k, v in K.items() if k in ("kappa", "eta") or (k == "gamma" and momentum)
                   or (k in ("beta", "lambda") and chip.integrator.kind == "analog")},
        integrator=chip.integrator.kind, optimizer=chip.optimizer.kind,
    )
    return (stim, resp), meta


def _synapse_inputs(chip, layer, kind, off):
    """(generator register, element, presynaptic) of parameter `off` of
    layer{layer}.{kind}. presynaptic: None (weight mode, or a node-mode bias)
    or (register, element, lag): x, or the previous layer's activation, its
    register when pipelined, else its combinational value (lag 1 cycle)."""
    if chip.perturbation.mode == "weight":
        return f"layer{layer}.{kind}_perturbation", off, None
    fan_in = chip.layer_sizes[layer]
    j, k = (off // fan_in, off % fan_in) if kind == "weight" else (off, None)
    pre = None
    if k is not None:
        pre = ("input", k, 0) if layer == 0 else (f"layer{layer - 1}.activation", k,
                                                  0 if chip.timing.layer_pipelining else 1)
    return f"layer{layer}.node_perturbation", j, pre


def _generator_index(chip, layer, reg, off):
    """Flat index of a perturbation register's element among all generators."""
    r = registers_by_name(chip)[reg]
    return r.start + off


def _schedule(t, n_cycles):
    """control_schedule of the trace's chip for cycles 0..n_cycles-1."""
    chip = t.data_chip("exporting golden vectors").replace({"trace.probes": []})
    v = variant_of(chip)
    st = chip_state(chip, t.seed)
    return control_schedule(n_cycles, st, st.cfg.baseline, st.cfg.integrator, v.pipelined)


def _constants(t) -> dict:
    """The block constants as the chip's constant registers hold them (codes)."""
    chip = t.data_chip("exporting golden vectors")
    cfg = chip_state(chip.replace({"trace.probes": []}), t.seed).cfg
    f = chip.formats
    out = {}
    for name, k, cls in (("kappa", "kappa", "correlator_gain"), ("eta", "eta", "learning_rate"),
                         ("gamma", "gamma", "learning_rate"), ("beta", "beta", "learning_rate"),
                         ("lambda", "lam", "learning_rate")):
        fmt = getattr(f, cls)
        value = getattr(cfg, k)
        if fmt.is_fixed:
            code = int(_values_to_codes([value], fmt.frac_bits)[0])
            out[name] = dict(code=code, hex=_hex_code(code, fmt.width), width=fmt.width,
                             signed=fmt.signed, frac_bits=fmt.frac_bits, value=float(value))
    return out


def _golden_layer(t, chip, layer, start, stop):
    """Columns and manifest entries of neuron layer `layer`."""
    n_layers = len(chip.layer_sizes) - 1
    if not 0 <= layer < n_layers:
        raise TraceError(f"--block layer{layer}: this chip has layers 0 to {n_layers - 1}")
    if chip.noise.activation_sigma != 0.0:
        raise TraceError(f"{t.path}: golden vectors of a neuron layer need noise.activation_sigma = 0")
    _fixed_or_refuse(t, chip, ["input", "weight", "bias", "perturbation", "activation"], f"layer{layer}")
    regs = registers_by_name(chip)
    f = chip.formats
    node = chip.perturbation.mode == "node"
    pipelined = chip.timing.layer_pipelining
    fan_in, fan_out = chip.layer_sizes[layer], chip.layer_sizes[layer + 1]
    p = f"layer{layer}."
    need = _Need(t, f"layer{layer}")
    # The layer's input: x, or the previous layer's output (its register when
    # pipelined, else its combinational value = its register one cycle later).
    src, src_fmt, lag = ("input", f.input, 0) if layer == 0 else (f"layer{layer - 1}.activation", f.activation,
                                                                  0 if pipelined else 1)
    for k in range(fan_in):
        need.add(src, k, lag, lag)
    for e in range(fan_in * fan_out):
        need.add(p + "weight", e)
    bias = chip.network.bias
    if bias:
        for j in range(fan_out):
            need.add(p + "bias", j)
    pert_regs = [p + "node_perturbation"] if node else [p + "weight_perturbation"] + (
        [p + "bias_perturbation"] if bias else [])
    for r in pert_regs:
        for e in range(regs[r].size):
            need.add(r, e)
    for j in range(fan_out):
        need.add(p + "activation", j, 1, 1)
    a, b = need.window(start, stop)
    sched = _schedule(t, b)

    def block_codes(reg, size, lo):
        return np.stack([need.codes(reg, e, a + lo, b - 1 + lo) for e in range(size)], axis=1)

    def names(reg):
        leaf, shape = reg.rsplit(".", 1)[-1], regs[reg].shape
        return [leaf + "".join(f"_{v}" for v in np.unravel_index(e, shape)) for e in range(regs[reg].size)]

    stim = [_Column.of("input", f"the layer's input activity ({src}{' one cycle later' if lag else ''})",
                       block_codes(src, fan_in, lag), src_fmt, [f"input_{k}" for k in range(fan_in)]),
            _Column.of("weight", "weights W [fan_out, fan_in], row-major", block_codes(p + "weight", fan_in * fan_out, 0),
                       f.weight, names(p + "weight"))]
    if bias:
        stim.append(_Column.of("bias", "biases b", block_codes(p + "bias", fan_out, 0), f.bias, names(p + "bias")))
    for r in pert_regs:
        stim.append(_Column.of(r.rsplit(".", 1)[-1], "perturbation generators", block_codes(r, regs[r].size, 0),
                               f.perturbation, names(r)))
    stim.append(_Column.of("gate", "perturbations applied (measurement slot entering this layer)",
                           sched[a:b, 4 + layer], None, ["gate"]))
    resp = [_Column.of("activation", "neuron outputs a after the clock edge",
                       block_codes(p + "activation", fan_out, 1), f.activation, names(p + "activation"))]
    generators = {}
    if f.activation.rounding == "stochastic":
        n_off = sum(chip.layer_sizes[1:layer + 1])
        _, states = _rerun_generators(t, a, ["neu.sr"], range(n_off, n_off + fan_out))
        generators = {f"activation_{j}": format(s, "016x") for j, s in enumerate(states["neu.sr"])}
    neu = chip_state(chip.replace({"trace.probes": []}), t.seed).neu
    n_off = int(sum(chip.layer_sizes[1:layer + 1]))
    act = chip.network.output_activation if layer == n_layers - 1 else chip.network.activation
    meta = dict(block=f"layer{layer}", layer=layer, cycles=dict(start=a, stop=b, count=b - a),
                activation_function=act, perturbation_mode=chip.perturbation.mode,
                gains=[float(v) for v in neu.gains[n_off:n_off + fan_out]],
                offsets=[float(v) for v in neu.offsets[n_off:n_off + fan_out]],
                rounding_generators=generators)
    return (stim, resp), meta
