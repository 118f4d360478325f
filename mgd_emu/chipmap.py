"""The chip map: how a chip description becomes the engine's representation.

Every choice of a chip description is mapped here and nowhere else:
- `Variant`: the structural choices a cycle kernel is compiled for (mode,
  multiplexing, baseline, integrator, optimizer, pipelining, the fast or
  general synapse path, threads). Chips with the same variant share one
  compiled kernel.
- `Config`: run-time scalars (timing, sizes, constants as their registers
  hold them); `Layers`: each layer's geometry; `fmts`: the format table.
- `build_state(chip, seed)`: every block's record, at reset.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit

from . import spec as spec_mod
from .blocks import layout as L
from .blocks.broadcast import REGISTERS as BROADCAST, Broadcast
from .blocks.controller import REGISTERS as CONTROLLER, Controller
from .blocks.cost import REGISTERS as COST_UNIT, CostUnit
from .blocks.declare import Dims, allocate
from .blocks.neuron import REGISTERS as NEURONS, Neurons
from .blocks.perturbation import REGISTERS as GENERATORS, Generators, generate_codes
from .blocks.pipeline import REGISTERS as PIPELINE, Pipeline
from .blocks.prng import derive_seed
from .blocks.register import REGISTERS as MONITOR, Monitor
from .blocks.sampler import REGISTERS as SAMPLER, Sampler, load_sample, shuffle
from .blocks.synapse import REGISTERS as SYNAPSES, Synapses
from .fixedpoint import ROUND_NEAREST_EVEN, ROUND_STOCHASTIC, ROUNDINGS, rounding_tag
from .rules import SynapseRules
from .plan import (STREAM_ACTIVATION_NOISE, STREAM_COST_NOISE, STREAM_ROUNDING,
                   STREAM_WEIGHT_NOISE, build_plan, quantize_const)
from .spec import Chip

# Parameters from which a chip runs on several threads, and weights from
# which one of its layers does (each parallel layer costs a fork and a join
# per cycle). Measured on 2 cores: 2 threads lose below ~10k parameters
# (benchmarks/run.py --only threads).
PARALLEL_MIN_PARAMS = 20_000
PARALLEL_MIN_LAYER = 8_192

MODES = {"weight": L.MODE_WEIGHT, "node": L.MODE_NODE}
MULTIPLEXING = {"time": L.MUX_TIME, "frequency": L.MUX_FREQUENCY, "code": L.MUX_CODE,
                "walsh": L.MUX_WALSH}
BASELINES = {"dual_path": L.BASE_DUAL, "remeasure": L.BASE_REMEASURE, "highpass": L.BASE_HIGHPASS}
INTEGRATORS = {"digital": L.INTEG_DIGITAL, "analog": L.INTEG_ANALOG}
OPTIMIZERS = {"plain": L.OPT_PLAIN, "momentum": L.OPT_MOMENTUM}
COST_FUNCTIONS = {"mse": L.COST_MSE, "cross_entropy": L.COST_XENT}
PRESYNAPTIC = {"live": L.PRE_LIVE, "unperturbed": L.PRE_UNPERTURBED}
ACTIVATIONS = {"sigmoid": L.ACT_SIGMOID, "tanh": L.ACT_TANH, "relu": L.ACT_RELU,
               "linear": L.ACT_LINEAR, "hard_sigmoid": L.ACT_HARD_SIGMOID}

# The stream of each register's stochastic-rounding generators
# (plan.STREAM_ROUNDING + this id), and the dual path's activation-noise
# stream offset.
ROUNDING_STREAM = {"input": 0, "perturbation": 1, "activation": 2, "activation0": 3, "cost_unit": 4,
                   "theta": 5, "integrator": 6, "velocity": 7}
DUAL_NOISE_OFFSET = 1000


@dataclass(frozen=True)
class Variant:
    """The structural choices a cycle kernel is compiled for: those that
    select different block kernels. Choices that only select a branch inside
    one small block kernel (the multiplexing scheme, remeasure or high-pass,
    the optimizer) are run-time data in Config: compiling them apart would
    multiply the kernels without making any of them smaller."""

    mode: int        # weight or node perturbation: different synapse and neuron kernels
    dual: bool       # a dual-path baseline: the neurons evaluate both paths in one pass
    integrator: int  # digital or analog: the built-in integrator rule
    pipelined: bool  # a register after every layer
    fast: bool       # the synapses take the branch-free rows (synapse.py)
    parallel: bool   # wide layers may share their neurons among threads
    rules: SynapseRules = SynapseRules()  # the synapse's rules (mgd_emu.rules); built-in by default
    # The fast rows' rounding modes of (weight, bias, integrator), fixedpoint.ROUND_*: constants of
    # the kernel, so that a quantisation forms only its own rounding and a generator that never
    # rounds is not stepped (fast_roundings). () on the general path, which reads them at run time.
    roundings: tuple = ()

    def __post_init__(self):
        if bool(self.roundings) != self.fast:
            raise ValueError("Variant.roundings is given exactly when the synapses take the fast rows")

    @property
    def name(self) -> str:
        inv = lambda table, v: next(k for k, x in table.items() if x == v)
        parts = [inv(MODES, self.mode), inv(INTEGRATORS, self.integrator)]
        parts += [p for p, on in (("dual", self.dual), ("pipelined", self.pipelined), ("fast", self.fast),
                                  ("parallel", self.parallel), ("user-rules", self.rules.custom)) if on]
        if self.roundings:
            parts.append(rounding_tag(self.roundings))
        return "-".join(parts)


Config = namedtuple("Config", [
    # timing and sizes
    "n_layers", "n_out", "tau_x", "tau_p", "tau_theta", "walsh_n", "ring", "bcast_delay",
    # run-time choices
    "mux", "baseline", "integrator", "optimizer", "cost_fn", "presynaptic", "hidden_act", "output_act",
    "threads", "g_clear",
    # constants, as their registers hold them
    "amplitude", "kappa", "eta", "gamma", "beta", "lam", "highpass", "change_limit",
    # noise
    "cost_sigma", "weight_sigma", "act_sigma",
])
Layers = namedtuple("Layers", ["fan_in", "fan_out", "w_off", "b_off", "n_off", "in_off", "delay",
                               "gen_off", "gen_count", "exact_mac"])
ChipState = namedtuple("ChipState", ["cfg", "lay", "fmts", "ctl", "smp", "gen", "neu", "pipe",
                                     "cu", "bc", "syn", "mon"])
# Each block's record type and declarations, by its field in ChipState.
BLOCKS = {"ctl": (Controller, CONTROLLER), "smp": (Sampler, SAMPLER), "gen": (Generators, GENERATORS),
          "neu": (Neurons, NEURONS), "pipe": (Pipeline, PIPELINE), "cu": (CostUnit, COST_UNIT),
          "bc": (Broadcast, BROADCAST), "syn": (Synapses, SYNAPSES), "mon": (Monitor, MONITOR)}
BLOCK_NAMES = {"ctl": "controller", "smp": "sampler", "gen": "generator", "neu": "neuron",
               "pipe": "pipeline", "cu": "cost_unit", "bc": "broadcast", "syn": "synapse",
               "mon": "monitor"}


def layers_of(chip: Chip) -> Layers:
    """Each layer's geometry: fan-in and -out, offsets of its weights, biases
    (-1: none), neurons, presynaptic inputs and generators, correlator delay,
    and whether its multiply-accumulate is exact (exact_mac)."""
    sizes, bias, node = chip.layer_sizes, chip.network.bias, chip.perturbation.mode == "node"
    delays = spec_mod.correlator_delays(chip)
    rows = []
    w_off = n_off = in_off = 0
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        b_off = w_off + fan_in * fan_out if bias else -1
        n_par = fan_in * fan_out + (fan_out if bias else 0)
        rows.append((fan_in, fan_out, w_off, b_off, n_off, in_off, delays[layer],
                     n_off if node else w_off, fan_out if node else n_par, int(exact_mac(chip, layer))))
        w_off += n_par
        n_off += fan_out
        in_off += fan_in
    cols = np.array(rows, dtype=np.int64).T
    return Layers(*(np.ascontiguousarray(c) for c in cols))


def exact_mac(chip: Chip, layer: int) -> bool:
    """Whether every product and partial sum of the layer's multiply-
    accumulate sum_k (W_jk [+ p_jk]) a_k is exact in float64, so that any
    summation order gives the same bits (neuron.py then sums in an order the
    vector units like). True when weights, inputs (the input or activation
    format) and, in weight mode, perturbations are fixed-point and the
    largest sum, in units of its LSB, stays below 2**53. Registers hold
    values on their format's grid (every write quantises), which this relies on."""
    f = chip.formats
    a_fmt = f.input if layer == 0 else f.activation
    fmts = [f.weight, a_fmt] + ([f.perturbation] if chip.perturbation.mode == "weight" else [])
    if not all(x.is_fixed for x in fmts):
        return False
    magnitude_bits = lambda x: x.int_bits + x.frac_bits  # |code| <= 2**this
    if chip.perturbation.mode == "weight":   # W + p on the finer grid of the two
        frac = max(f.weight.frac_bits, f.perturbation.frac_bits)
        w_bits = max(f.weight.int_bits, f.perturbation.int_bits) + frac + 1
    else:
        frac, w_bits = f.weight.frac_bits, magnitude_bits(f.weight)
    fan_in = chip.layer_sizes[layer]
    lsb_exponent = frac + a_fmt.frac_bits   # the sum's LSB is 2**-lsb_exponent
    return (fan_in.bit_length() + w_bits + magnitude_bits(a_fmt) <= 53
            and -960 <= lsb_exponent <= 960)


def dims_of(chip: Chip, n_samples: int) -> Dims:
    sizes, node = chip.layer_sizes, chip.perturbation.mode == "node"
    delays = spec_mod.correlator_delays(chip)
    ring = max(delays) if max(delays) > 0 else 0
    delay = chip.timing.cost_latency + chip.timing.broadcast_latency
    return Dims(n_in=sizes[0], n_out=sizes[-1], n_layers=len(sizes) - 1, n_params=chip.n_parameters,
                n_gen=chip.n_generators, n_neurons=chip.n_neurons, n_layer_inputs=sum(sizes[:-1]),
                ring=ring, in_ring=ring if node else 0, bcast=max(delay, 1), n_samples=n_samples,
                n_events=L.E_PER_LAYER * (len(sizes) - 1) + len(L.GLOBAL_EVENT_NAMES))


def fast_synapses(chip: Chip) -> bool:
    """The common chip takes the synapses' branch-free rows: a digital
    integrator, the plain updater, no update noise, formats that saturate."""
    f = chip.formats
    return (chip.integrator.kind == "digital" and chip.optimizer.kind == "plain"
            and chip.noise.weight_sigma == 0.0
            and all(not fmt.is_fixed or fmt.overflow == "saturate" for fmt in (f.weight, f.bias, f.integrator)))


# A float register does not round: in Variant.roundings it takes the modes of
# the shipped 8-bit chips (weight and bias stochastic, integrator nearest-even),
# so that float chips share their kernel with those chips of the same structure.
FLOAT_ROUNDINGS = (ROUND_STOCHASTIC, ROUND_STOCHASTIC, ROUND_NEAREST_EVEN)


def fast_roundings(chip: Chip) -> tuple:
    """The rounding modes of the (weight, bias, integrator) formats as the
    fast rows use them (Variant.roundings); a float format's is ignored
    (FLOAT_ROUNDINGS)."""
    f = chip.formats
    # np.int64: the kernels take them as constants (a Python int would compile a kernel per value)
    return tuple(np.int64(ROUNDINGS.index(fmt.rounding) if fmt.is_fixed else default)
                 for fmt, default in zip((f.weight, f.bias, f.integrator), FLOAT_ROUNDINGS))


def parallel_capable(chip: Chip) -> bool:
    """Only the common node-perturbation chip has a parallel path."""
    return fast_synapses(chip) and chip.perturbation.mode == "node"


def variant_of(chip: Chip, parallel: bool | None = None, rules: SynapseRules = SynapseRules()) -> Variant:
    """The chip's structural variant. parallel: None decides by size
    (PARALLEL_MIN_PARAMS) where numba has more than one thread; True asks
    for threads where the chip has a parallel path. rules: user synapse
    rules (they take the general path)."""
    capable = parallel_capable(chip) and not rules.custom
    if parallel is None:
        threads = capable and chip.n_parameters >= PARALLEL_MIN_PARAMS and numba.get_num_threads() > 1
    else:
        threads = capable and bool(parallel)
    fast = fast_synapses(chip) and not rules.custom
    return Variant(mode=MODES[chip.perturbation.mode], dual=chip.cost.baseline == "dual_path",
                   integrator=INTEGRATORS[chip.integrator.kind], pipelined=bool(chip.timing.layer_pipelining),
                   fast=fast, parallel=threads, rules=rules, roundings=fast_roundings(chip) if fast else ())


def clears_every_cycle(chip: Chip) -> bool:
    """Whether every cycle ends with an update edge that clears the
    integrators (a digital integrator, tau_theta = 1, no baseline slots), so
    that G holds 0 at every cycle's start: the fast synapse rows of either
    mode then neither read nor write the weights' G (Config.g_clear, which
    the engine turns off for a run chunk that starts otherwise)."""
    return (chip.integrator.kind == "digital" and chip.timing.tau_theta == 1
            and chip.cost.baseline != "remeasure")


def config_of(chip: Chip, amplitude: float, walsh_n: int) -> Config:
    """Run-time scalars; every constant as its register holds it."""
    f, timing, opt, cost = chip.formats, chip.timing, chip.optimizer, chip.cost
    lr = f.learning_rate
    tau = float(timing.tau_theta)
    eta = opt.learning_rate / tau if opt.divide_by_tau_theta else opt.learning_rate
    delays = spec_mod.correlator_delays(chip)
    ring = max(delays) if max(delays) > 0 else 0
    return Config(
        n_layers=len(chip.layer_sizes) - 1, n_out=chip.layer_sizes[-1],
        tau_x=timing.tau_x, tau_p=timing.tau_p, tau_theta=timing.tau_theta, walsh_n=walsh_n,
        ring=max(ring, 1), bcast_delay=timing.cost_latency + timing.broadcast_latency,
        mux=MULTIPLEXING[chip.perturbation.multiplexing], baseline=BASELINES[cost.baseline],
        integrator=INTEGRATORS[chip.integrator.kind], optimizer=OPTIMIZERS[opt.kind],
        cost_fn=COST_FUNCTIONS[cost.function], presynaptic=PRESYNAPTIC[chip.perturbation.presynaptic],
        hidden_act=ACTIVATIONS[chip.network.activation], output_act=ACTIVATIONS[chip.network.output_activation],
        threads=False, g_clear=clears_every_cycle(chip),
        amplitude=float(amplitude),
        kappa=quantize_const(spec_mod.correlator_gain(chip, amplitude), f.correlator_gain),
        eta=quantize_const(eta, lr), gamma=quantize_const(opt.momentum, lr),
        beta=quantize_const(tau / (tau + 1.0), lr), lam=quantize_const(1.0 / (tau + 1.0), lr),
        highpass=quantize_const(cost.tau_hp / (cost.tau_hp + 1.0), lr),
        change_limit=float(cost.change_limit),
        cost_sigma=float(chip.noise.cost_sigma), weight_sigma=float(chip.noise.weight_sigma),
        act_sigma=float(chip.noise.activation_sigma),
    )


def format_table(chip: Chip) -> np.ndarray:
    return np.stack([getattr(chip.formats, name).row for name in L.FORMAT_ORDER])


@njit(cache=True)
def _seed_array(seed, stream, n):
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = derive_seed(seed, stream, i)
    return out


def build_state(chip: Chip, seed: int, train) -> ChipState:
    """Every block's record at reset (cycle 0), for `chip` and `seed`;
    train: the task's training set (inputs, targets)."""
    plan = build_plan(chip, seed)
    n_samples = train.inputs.shape[0]
    dims = dims_of(chip, n_samples)
    rounding = lambda name, n: _seed_array(seed, STREAM_ROUNDING + ROUNDING_STREAM[name], n)
    noise = lambda stream, n: _seed_array(seed, stream, n)
    cfg = config_of(chip, plan.amplitude, plan.walsh_order)
    lay = layers_of(chip)
    fmts = format_table(chip)
    theta = np.concatenate([np.concatenate([w.ravel(), b if chip.network.bias else b[:0]])
                            for w, b in zip(plan.weights, plan.biases)])
    ctl = allocate(Controller, CONTROLLER, dims)
    ctl.need_baseline[0] = 1 if chip.cost.baseline == "remeasure" else 0
    smp = allocate(Sampler, SAMPLER, dims, X=train.inputs, Y=train.targets,
                   order=np.arange(n_samples), rng=[plan.sampler_seed],
                   sr=rounding("input", dims.n_in))
    gen = allocate(Generators, GENERATORS, dims, lfsr=plan.lfsr_seeds, time_order=plan.time_order,
                   freqs=plan.frequencies, phases=plan.phases, walsh_rows=plan.walsh_rows,
                   sr=rounding("perturbation", dims.n_gen))
    neu = allocate(Neurons, NEURONS, dims, gains=np.concatenate(plan.gains),
                   offsets=np.concatenate(plan.offsets),
                   sr=rounding("activation", dims.n_neurons), sr0=rounding("activation0", dims.n_neurons),
                   noise=noise(STREAM_ACTIVATION_NOISE, dims.n_neurons),
                   noise0=noise(STREAM_ACTIVATION_NOISE + DUAL_NOISE_OFFSET, dims.n_neurons))
    cu = allocate(CostUnit, COST_UNIT, dims, sr=rounding("cost_unit", 3), noise=noise(STREAM_COST_NOISE, 1))
    syn = allocate(Synapses, SYNAPSES, dims, theta=theta, sr_theta=rounding("theta", dims.n_params),
                   sr_g=rounding("integrator", dims.n_params), sr_v=rounding("velocity", dims.n_params),
                   noise=noise(STREAM_WEIGHT_NOISE, 1))
    state = ChipState(cfg=cfg, lay=lay, fmts=fmts, ctl=ctl, smp=smp, gen=gen, neu=neu,
                      pipe=allocate(Pipeline, PIPELINE, dims), cu=cu, bc=allocate(Broadcast, BROADCAST, dims),
                      syn=syn, mon=allocate(Monitor, MONITOR, dims))
    reset(state, MULTIPLEXING[chip.perturbation.multiplexing])
    return state


def reset(st: ChipState, mux: int) -> None:
    """Epoch 0's order, the first sample and code 0 in place at cycle 0."""
    smp, gen, events = st.smp, st.gen, st.mon.events
    input_row = L.E_PER_LAYER * st.cfg.n_layers + L.E_GLOBAL_INPUT
    smp.rng[0] = shuffle(smp.order, smp.rng[0])
    smp.sample[0] = smp.order[0]
    load_sample(smp.order[0], smp.X, smp.Y, smp.x, smp.y, st.fmts, smp.sr, events, input_row)
    generate_codes(gen, mux, 0, st.cfg, st.lay, st.fmts, events, gen.pert)
    smp.x_next[:] = smp.x
    smp.y_next[:] = smp.y
    gen.pert_next[:] = gen.pert
