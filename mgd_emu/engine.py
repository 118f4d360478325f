"""The engine: builds a chip's registers and runs its clock cycles.

`Emulator(chip, seed).run(n)` runs n cycles inside one compiled loop
(`cycle_loop`). The whole cycle is on one screen below; `docs/CYCLE.md` is
its specification.

The cycle kernels are compiled with `_nrt=False` (no Numba runtime): they
allocate nothing, and without it every call of a block kernel that is not
inlined pays reference-count updates on each array argument, which measured
2-5x slower on small chips. A kernel that did allocate would fail to compile.
"""
from __future__ import annotations

import operator
import time

import numba
import numpy as np
from numba import njit

from . import spec as spec_mod
from .blocks import layout as L
from .blocks.broadcast import broadcast_out, broadcast_step
from .blocks.controller import controller_step, controller_wires
from .blocks.cost import cost_change, cost_function, cost_unit_step, measure_cost
from .blocks.neuron import neuron_layer, neuron_layer_dual, neuron_layer_dual_parallel
from .blocks.perturbation import generate_codes
from .blocks.probe import sample_probes
from .blocks.prng import derive_seed
from .blocks.sampler import load_sample, sampler_step, shuffle
from .blocks.synapse import synapse_layer
from .fixedpoint import Format
from .probes import compile_probes, parse_probes, registers_by_name
from .plan import (STREAM_ACTIVATION_NOISE, STREAM_COST_NOISE, STREAM_ROUNDING,
                   STREAM_WEIGHT_NOISE, build_plan, quantize_const)
from .spec import Chip
from .tasks import make_task

# Seeds are 63-bit: the generators' seeds are derived from it in int64.
MAX_SEED = 2**63 - 1

# Parameters from which a chip runs on several threads, and weights from
# which one of its layers does (each parallel layer costs a fork and a join
# per cycle). Measured on 2 cores: 2 threads lose below ~10k parameters
# (benchmarks/run.py --only threads).
PARALLEL_MIN_PARAMS = 20_000
PARALLEL_MIN_LAYER = 8_192

# Blocks of the sequential phase, in their default order.
B_CONTROLLER, B_SAMPLER, B_GENERATOR, B_COST, B_BROADCAST, B_SYNAPSE = range(6)
DEFAULT_ORDER = np.arange(6, dtype=np.int64)


@njit(cache=True, _nrt=False, inline="always")
def layer_gate(layer, tag, st_tag, pipelined):
    """1.0 when the slot in layer `layer` this cycle is a measurement (the
    perturbations apply), else 0.0: the controller's tag, or with layer
    pipelining the tag held in the stage register before the layer."""
    tag_in = st_tag[layer - 1] if pipelined and layer > 0 else tag
    return 1.0 if tag_in == L.TAG_MEASURE else 0.0


@njit(cache=True, _nrt=False, inline="always")
def layer_parallel(layer, geo, parallel):
    """Whether layer `layer` of a parallel chip is wide enough to share
    among threads (PARALLEL_MIN_LAYER weights)."""
    return parallel and geo[layer, L.G_FAN_IN] * geo[layer, L.G_FAN_OUT] >= PARALLEL_MIN_LAYER


@njit(cache=True, _nrt=False, inline="always")
def copy_register(src, dst):
    """dst <- src, element by element (a commit of a double-buffered register)."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(cache=True, _nrt=False)
def cycle_loop(n_cycles, step_limit, order, cfg, K, geo, fmts, ctr,
               # sampler
               X, Y, sample_order, sampler_rng, x, y, x_next, y_next,
               # generators
               pert, pert_next, lfsr, time_order, freqs, phases, walsh_rows,
               # neurons: activation registers and wires, perturbed and dual path
               act, act_w, act0, act0_w, st_tag, st_newx, st_y, gains, offsets,
               # cost unit and broadcast line
               cu, b_ring, b_valid,
               # synapses
               theta, G, V, p_ring, in_ring,
               # rounding generators, noise generators, event counters
               sr_x, sr_pert, sr_act, sr_act0, sr_cu, sr_theta, sr_g, sr_v,
               nz_act, nz_act0, nz_cost, nz_w, events,
               # probes (the logic analyser, not part of the chip)
               n_probes, pr_cfg, pr_src, pr_idx, pr_buf, pr_cyc, pr_fill):
    n_layers = cfg[L.N_LAYERS]
    mode, baseline, integrator = cfg[L.MODE], cfg[L.BASELINE], cfg[L.INTEGRATOR]
    pipelined = cfg[L.PIPELINING] != 0
    dual = baseline == L.BASE_DUAL
    fast, parallel = cfg[L.FAST_SYNAPSE] != 0, cfg[L.PARALLEL] != 0
    tau_x, tau_p, tau_theta = cfg[L.TAU_X], cfg[L.TAU_P], cfg[L.TAU_THETA]
    last = n_layers - 1
    out_off, n_out = geo[last, L.G_N_OFF], cfg[L.N_OUT]
    g_row = L.E_PER_LAYER * n_layers
    for _ in range(n_cycles):
        if ctr[L.C_STEP] >= step_limit:
            break
        cycle = ctr[L.C_CYCLE]
        probes_full = n_probes > 0 and sample_probes(
            cycle, n_probes, pr_cfg, pr_src, pr_idx, pr_buf, pr_cyc, pr_fill,
            theta, G, V, pert, act, x, y, cu, ctr)

        # ---- combinational phase: wires from the current registers -------
        tag, new_sample, x_edge, p_edge, update_edge = controller_wires(
            ctr, tau_x, tau_p, tau_theta, integrator)
        for layer in range(n_layers):
            if layer == 0:
                a_in, a0_in = x, x
            else:
                prev, size = geo[layer - 1, L.G_N_OFF], geo[layer - 1, L.G_FAN_OUT]
                src, src0 = (act, act0) if pipelined else (act_w, act0_w)
                a_in, a0_in = src[prev:prev + size], src0[prev:prev + size]
            act_kind = cfg[L.OUTPUT_ACT] if layer == last else cfg[L.HIDDEN_ACT]
            gate = layer_gate(layer, tag, st_tag, pipelined)
            if dual and layer_parallel(layer, geo, parallel):
                neuron_layer_dual_parallel(layer, geo, act_kind, mode, a_in, a0_in, layer == 0,
                                           theta, pert, gate, gains, offsets, K[L.K_ACT_SIGMA],
                                           nz_act, nz_act0, fmts, sr_act, sr_act0, events, act_w,
                                           act0_w)
            elif dual:
                neuron_layer_dual(layer, geo, act_kind, mode, a_in, a0_in, layer == 0, theta,
                                  pert, gate, gains, offsets, K[L.K_ACT_SIGMA], nz_act, nz_act0,
                                  fmts, sr_act, sr_act0, events, act_w, act0_w)
            else:
                neuron_layer(layer, geo, act_kind, mode, a_in, theta, pert, gate, gains,
                             offsets, K[L.K_ACT_SIGMA], nz_act, fmts, sr_act, events, act_w)
        if pipelined:
            y_out, y0_out = act[out_off:out_off + n_out], act0[out_off:out_off + n_out]
            tag_c, new_c, target = st_tag[last], st_newx[last] != 0, st_y[last]
        else:
            y_out, y0_out = act_w[out_off:out_off + n_out], act0_w[out_off:out_off + n_out]
            tag_c, new_c, target = tag, new_sample, y
        c = c0 = 0.0
        if tag_c != L.TAG_NONE:
            c = measure_cost(cfg[L.COST_FN], y_out, target, K[L.K_COST_SIGMA], nz_cost,
                             fmts, sr_cu, 0, events, g_row + L.E_GLOBAL_COST)
            if dual and tag_c == L.TAG_MEASURE:
                c0 = measure_cost(cfg[L.COST_FN], y0_out, target, K[L.K_COST_SIGMA], nz_cost,
                                  fmts, sr_cu, 1, events, g_row + L.E_GLOBAL_COST)
        change, valid = cost_change(baseline, tag_c, new_c, c, c0, cu, K[L.K_HIGHPASS],
                                    K[L.K_CHANGE_LIMIT], fmts, sr_cu, events,
                                    g_row + L.E_GLOBAL_CHANGE)
        bcast, bvalid = broadcast_out(cfg[L.BCAST_DELAY], cycle, change, valid, b_ring, b_valid)

        # ---- sequential phase: each block writes only its own registers --
        for block in order:
            if block == B_CONTROLLER:
                controller_step(ctr, tag, x_edge, update_edge, baseline)
            elif block == B_SAMPLER:
                sampler_step(x_edge, ctr, sample_order, sampler_rng, X, Y, x_next, y_next,
                             fmts, sr_x, events, g_row + L.E_GLOBAL_INPUT)
            elif block == B_GENERATOR:
                if p_edge:
                    ctr[L.C_CODE] += 1
                    generate_codes(cfg[L.MUX], ctr[L.C_CODE], K[L.K_AMPLITUDE], tau_p, lfsr,
                                   time_order, freqs, phases, walsh_rows, cfg[L.WALSH_N],
                                   geo, fmts, sr_pert, events, pert_next)
            elif block == B_COST:
                cost_unit_step(baseline, tag_c, c, c0, change, valid, cu)
            elif block == B_BROADCAST:
                broadcast_step(cfg[L.BCAST_DELAY], cycle, change, valid, b_ring, b_valid)
                cu[L.U_BROADCAST] = bcast
                cu[L.U_VALID] = 1.0 if bvalid else 0.0
            else:
                for layer in range(n_layers):
                    if layer == 0:
                        a_pre = x
                    else:
                        prev, size = geo[layer - 1, L.G_N_OFF], geo[layer - 1, L.G_FAN_OUT]
                        if cfg[L.PRESYNAPTIC] == L.PRE_UNPERTURBED:
                            a_pre = (act0 if pipelined else act0_w)[prev:prev + size]
                        else:
                            a_pre = (act if pipelined else act_w)[prev:prev + size]
                    synapse_layer(layer, geo, mode, cycle, cfg[L.RING],
                                  layer_gate(layer, tag, st_tag, pipelined), pert,
                                  a_pre, bcast, bvalid, update_edge, tag == L.TAG_MEASURE,
                                  integrator, cfg[L.OPTIMIZER], K[L.K_KAPPA], K[L.K_ETA],
                                  K[L.K_GAMMA], K[L.K_BETA], K[L.K_LAMBDA], K[L.K_WEIGHT_SIGMA],
                                  theta, G, V, p_ring, in_ring, nz_w, fmts, sr_theta, sr_g,
                                  sr_v, events, fast, layer_parallel(layer, geo, parallel))

        # ---- commit: double-buffered registers become current ------------
        if pipelined:
            for layer in range(last, 0, -1):
                st_tag[layer] = st_tag[layer - 1]
                st_newx[layer] = st_newx[layer - 1]
                copy_register(st_y[layer - 1], st_y[layer])
            st_tag[0] = tag
            st_newx[0] = 1 if new_sample else 0
            copy_register(y, st_y[0])
        if x_edge:
            copy_register(x_next, x)
            copy_register(y_next, y)
        if p_edge:
            copy_register(pert_next, pert)
        copy_register(act_w, act)
        if dual:
            copy_register(act0_w, act0)
        if probes_full:
            break


@njit(cache=True)
def forward_dataset(X, cfg, geo, fmts, theta, gains, offsets, sr_x, sr_act, events, outputs):
    """Unperturbed outputs of the current weights for every row of X.

    The same neuron kernels as the cycle loop, perturbations gated off and no
    per-cycle noise.
    """
    n_layers = cfg[L.N_LAYERS]
    last = n_layers - 1
    out_off, n_out = geo[last, L.G_N_OFF], cfg[L.N_OUT]
    x = np.empty(X.shape[1])
    act = np.zeros(cfg[L.N_NEURONS])
    no_pert = np.zeros(1)
    no_noise = np.zeros(cfg[L.N_NEURONS], dtype=np.uint64)
    row = L.E_PER_LAYER * n_layers + L.E_GLOBAL_INPUT
    for s in range(X.shape[0]):
        load_sample(s, X, outputs, x, x[:0], fmts, sr_x, events, row)
        for layer in range(n_layers):
            if layer == 0:
                a_in = x
            else:
                prev, size = geo[layer - 1, L.G_N_OFF], geo[layer - 1, L.G_FAN_OUT]
                a_in = act[prev:prev + size]
            kind = cfg[L.OUTPUT_ACT] if layer == last else cfg[L.HIDDEN_ACT]
            neuron_layer(layer, geo, kind, cfg[L.MODE], a_in, theta, no_pert, 0.0, gains,
                         offsets, 0.0, no_noise, fmts, sr_act, events, act)
        outputs[s, :] = act[out_off:out_off + n_out]


# Names of the state arrays, in cycle_loop's argument order.
STATE = ("cfg", "K", "geo", "fmts", "ctr",
         "X", "Y", "sample_order", "sampler_rng", "x", "y", "x_next", "y_next",
         "pert", "pert_next", "lfsr", "time_order", "freqs", "phases", "walsh_rows",
         "act", "act_w", "act0", "act0_w", "st_tag", "st_newx", "st_y", "gains", "offsets",
         "cu", "b_ring", "b_valid",
         "theta", "G", "V", "p_ring", "in_ring",
         "sr_x", "sr_pert", "sr_act", "sr_act0", "sr_cu", "sr_theta", "sr_g", "sr_v",
         "nz_act", "nz_act0", "nz_cost", "nz_w", "events")
PROBE_STATE = ("pr_cfg", "pr_src", "pr_idx", "pr_buf", "pr_cyc", "pr_fill")

ACTIVATION_IDS = {"sigmoid": L.ACT_SIGMOID, "tanh": L.ACT_TANH, "relu": L.ACT_RELU,
                  "linear": L.ACT_LINEAR, "hard_sigmoid": L.ACT_HARD_SIGMOID}


@njit(cache=True)
def _seed_array(seed, stream, n):
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = derive_seed(seed, stream, i)
    return out


class Emulator:
    """A chip, built from its description and seed, ready to run cycles.

    cycle: clock cycles done; step: measurement steps done (they differ by the
    baseline cycles of cost.baseline = "remeasure").
    """

    def __init__(self, chip: Chip, seed: int = 0, probes=(), parallel: bool | None = None):
        """probes: probe texts (see `mgd_emu.probes`) added to those of the
        chip description's [trace] section. parallel: share each layer's
        neurons among numba's threads (numba.set_num_threads) when more than
        one is set; None decides by size (PARALLEL_MIN_PARAMS). Only the
        common node-perturbation chip has a parallel path; the bits are the
        same either way."""
        self.chip = chip
        self.seed = operator.index(seed)
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer 0..{MAX_SEED}, got {seed}")
        self.task = make_task(chip.task.name, **chip.task_params())
        self.s = self._build()
        if parallel is not None:
            self._parallel = bool(parallel) and self._parallel_capable
        self._registers = registers_by_name(chip)
        tr = chip.trace
        stop = tr.window_stop if tr.window_stop > 0 else None
        self.probes = parse_probes([*tr.probes, *probes], chip, tr.every, tr.window_start, stop)
        self.pr = compile_probes(self.probes)
        self._memory = {p.name: ([], []) for p in self.probes}
        self._chunk_cycles = 4096

    # ------------------------------------------------------------------ build
    def _build(self) -> dict:
        chip, seed = self.chip, self.seed
        plan = build_plan(chip, seed)
        sizes = chip.layer_sizes
        n_layers = len(sizes) - 1
        net, pert, timing, opt = chip.network, chip.perturbation, chip.timing, chip.optimizer
        f = chip.formats
        node = pert.mode == "node"
        delays = spec_mod.correlator_delays(chip)
        ring = max(delays) if max(delays) > 0 else 0

        geo = np.zeros((n_layers, L.GEO_LEN), dtype=np.int64)
        w_off = n_off = in_off = 0
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            b_off = w_off + fan_in * fan_out if net.bias else -1
            n_par = fan_in * fan_out + (fan_out if net.bias else 0)
            geo[layer] = (fan_in, fan_out, w_off, b_off, n_off, in_off, delays[layer],
                          n_off if node else w_off, fan_out if node else n_par)
            w_off += n_par
            n_off += fan_out
            in_off += fan_in
        n_params, n_neurons, n_in_total = w_off, n_off, in_off
        n_gen = chip.n_generators
        data = self.task.train

        cfg = np.zeros(L.CFG_LEN, dtype=np.int64)
        cfg[L.MODE] = L.MODE_NODE if node else L.MODE_WEIGHT
        cfg[L.MUX] = {"time": L.MUX_TIME, "frequency": L.MUX_FREQUENCY, "code": L.MUX_CODE,
                      "walsh": L.MUX_WALSH}[pert.multiplexing]
        cfg[L.BASELINE] = {"dual_path": L.BASE_DUAL, "remeasure": L.BASE_REMEASURE,
                           "highpass": L.BASE_HIGHPASS}[chip.cost.baseline]
        cfg[L.INTEGRATOR] = L.INTEG_DIGITAL if chip.integrator.kind == "digital" else L.INTEG_ANALOG
        cfg[L.OPTIMIZER] = L.OPT_MOMENTUM if opt.kind == "momentum" else L.OPT_PLAIN
        cfg[L.PIPELINING] = int(timing.layer_pipelining)
        cfg[L.TAU_X], cfg[L.TAU_P], cfg[L.TAU_THETA] = timing.tau_x, timing.tau_p, timing.tau_theta
        cfg[L.N_LAYERS], cfg[L.N_PARAMS], cfg[L.N_GEN] = n_layers, n_params, n_gen
        cfg[L.N_NEURONS], cfg[L.N_IN], cfg[L.N_OUT] = n_neurons, sizes[0], sizes[-1]
        cfg[L.WALSH_N] = plan.walsh_order
        cfg[L.COST_FN] = L.COST_MSE if chip.cost.function == "mse" else L.COST_XENT
        cfg[L.PRESYNAPTIC] = L.PRE_UNPERTURBED if pert.presynaptic == "unperturbed" else L.PRE_LIVE
        cfg[L.RING] = max(ring, 1)
        cfg[L.BCAST_DELAY] = timing.cost_latency + timing.broadcast_latency
        cfg[L.N_SAMPLES] = data.inputs.shape[0]
        cfg[L.HIDDEN_ACT] = ACTIVATION_IDS[net.activation]
        cfg[L.OUTPUT_ACT] = ACTIVATION_IDS[net.output_activation]
        cfg[L.N_INPUTS_TOTAL] = n_in_total
        # The common chip takes the synapses' branch-free rows (synapse.py).
        cfg[L.FAST_SYNAPSE] = int(chip.integrator.kind == "digital" and opt.kind == "plain"
                                  and chip.noise.weight_sigma == 0.0
                                  and all(not fmt.is_fixed or fmt.overflow == "saturate"
                                          for fmt in (f.weight, f.bias, f.integrator)))
        # Wide node-perturbation chips share their neurons among numba's
        # threads when more than one is set (see run); below the threshold
        # the fork and join of every layer cost more than they save.
        self._parallel_capable = bool(cfg[L.FAST_SYNAPSE] and node)
        self._parallel = self._parallel_capable and n_params >= PARALLEL_MIN_PARAMS

        lr = f.learning_rate
        tau = float(timing.tau_theta)
        eta = opt.learning_rate / tau if opt.divide_by_tau_theta else opt.learning_rate
        K = np.zeros(L.K_LEN)
        K[L.K_AMPLITUDE] = plan.amplitude
        K[L.K_KAPPA] = quantize_const(spec_mod.correlator_gain(chip, plan.amplitude), f.correlator_gain)
        K[L.K_ETA] = quantize_const(eta, lr)
        K[L.K_GAMMA] = quantize_const(opt.momentum, lr)
        K[L.K_BETA] = quantize_const(tau / (tau + 1.0), lr)
        K[L.K_LAMBDA] = quantize_const(1.0 / (tau + 1.0), lr)
        K[L.K_HIGHPASS] = quantize_const(chip.cost.tau_hp / (chip.cost.tau_hp + 1.0), lr)
        K[L.K_CHANGE_LIMIT] = chip.cost.change_limit
        K[L.K_COST_SIGMA] = chip.noise.cost_sigma
        K[L.K_WEIGHT_SIGMA] = chip.noise.weight_sigma
        K[L.K_ACT_SIGMA] = chip.noise.activation_sigma

        fmts = np.stack([getattr(f, name).row for name in L.FORMAT_ORDER])
        events = np.zeros((L.E_PER_LAYER * n_layers + len(L.GLOBAL_EVENT_NAMES), 3), dtype=np.int64)
        ctr = np.zeros(L.CTR_LEN, dtype=np.int64)
        ctr[L.C_NEED_BASELINE] = 1 if chip.cost.baseline == "remeasure" else 0

        theta = np.concatenate([np.concatenate([w.ravel(), b if net.bias else b[:0]])
                                for w, b in zip(plan.weights, plan.biases)])
        rounding = lambda reg, n: _seed_array(seed, STREAM_ROUNDING + reg, n)
        s = dict(
            cfg=cfg, K=K, geo=geo, fmts=fmts, ctr=ctr,
            X=np.ascontiguousarray(data.inputs, dtype=np.float64),
            Y=np.ascontiguousarray(data.targets, dtype=np.float64),
            sample_order=np.arange(data.inputs.shape[0], dtype=np.int64),
            sampler_rng=np.array([plan.sampler_seed], dtype=np.uint64),
            x=np.zeros(sizes[0]), y=np.zeros(sizes[-1]),
            x_next=np.zeros(sizes[0]), y_next=np.zeros(sizes[-1]),
            pert=np.zeros(n_gen), pert_next=np.zeros(n_gen),
            lfsr=plan.lfsr_seeds.copy(), time_order=plan.time_order.astype(np.int64),
            freqs=plan.frequencies, phases=plan.phases, walsh_rows=plan.walsh_rows,
            act=np.zeros(n_neurons), act_w=np.zeros(n_neurons),
            act0=np.zeros(n_neurons), act0_w=np.zeros(n_neurons),
            st_tag=np.zeros(n_layers, dtype=np.int64), st_newx=np.zeros(n_layers, dtype=np.int64),
            st_y=np.zeros((n_layers, sizes[-1])),
            gains=np.concatenate(plan.gains), offsets=np.concatenate(plan.offsets),
            cu=np.zeros(L.CU_LEN),
            b_ring=np.zeros(max(cfg[L.BCAST_DELAY], 1)), b_valid=np.zeros(max(cfg[L.BCAST_DELAY], 1), dtype=np.int64),
            theta=theta, G=np.zeros(n_params), V=np.zeros(n_params),
            p_ring=np.zeros((ring, n_gen)), in_ring=np.zeros((ring if node else 0, n_in_total)),
            sr_x=rounding(0, sizes[0]), sr_pert=rounding(1, n_gen), sr_act=rounding(2, n_neurons),
            sr_act0=rounding(3, n_neurons), sr_cu=rounding(4, 3), sr_theta=rounding(5, n_params),
            sr_g=rounding(6, n_params), sr_v=rounding(7, n_params),
            nz_act=_seed_array(seed, STREAM_ACTIVATION_NOISE, n_neurons),
            nz_act0=_seed_array(seed, STREAM_ACTIVATION_NOISE + 1000, n_neurons),
            nz_cost=_seed_array(seed, STREAM_COST_NOISE, 1),
            nz_w=_seed_array(seed, STREAM_WEIGHT_NOISE, 1),
            events=events,
        )
        # Epoch 0's order, the first sample and code 0 are in place at cycle 0.
        s["sampler_rng"][0] = shuffle(s["sample_order"], s["sampler_rng"][0])
        ctr[L.C_SAMPLE] = s["sample_order"][0]
        load_sample(s["sample_order"][0], s["X"], s["Y"], s["x"], s["y"], fmts, s["sr_x"], events,
                    L.E_PER_LAYER * n_layers + L.E_GLOBAL_INPUT)
        generate_codes(cfg[L.MUX], 0, K[L.K_AMPLITUDE], timing.tau_p, s["lfsr"], s["time_order"],
                       s["freqs"], s["phases"], s["walsh_rows"], cfg[L.WALSH_N], geo, fmts,
                       s["sr_pert"], events, s["pert"])
        s["x_next"][:] = s["x"]
        s["y_next"][:] = s["y"]
        s["pert_next"][:] = s["pert"]
        return s

    # -------------------------------------------------------------------- run
    def run(self, n_cycles: int, order: np.ndarray = DEFAULT_ORDER, sink=None,
            progress=None) -> "Emulator":
        """Run n clock cycles in compiled code.

        The cycles run in chunks of about a quarter second (no Python per
        cycle): between chunks probe buffers are flushed to `sink` (default:
        kept in memory, see `samples`), `progress(self)` is called, and
        Ctrl-C takes effect.
        """
        if n_cycles < 0:
            raise ValueError("n_cycles must be >= 0")
        target = self.cycle + int(n_cycles)
        while self.cycle < target:
            self._chunk(min(target - self.cycle, self._chunk_cycles), np.iinfo(np.int64).max,
                        order, sink, progress)
        return self

    def run_steps(self, n_steps: int, order: np.ndarray = DEFAULT_ORDER, sink=None,
                  progress=None) -> "Emulator":
        """Run until n more measurement steps are done (baseline cycles included)."""
        target = self.step + int(n_steps)
        while self.step < target:
            self._chunk(min(2 * (target - self.step) + 1, self._chunk_cycles), target, order,
                        sink, progress)
        return self

    def warm_up(self) -> None:
        """Compile the kernels (or load them from the cache) by running one
        cycle on a copy of the state: the chip itself does not move."""
        cycle_loop(1, np.iinfo(np.int64).max, DEFAULT_ORDER, *(self.s[k].copy() for k in STATE),
                   0, *(self.pr[k].copy() for k in PROBE_STATE))
        self.evaluate()

    def _chunk(self, n, step_limit, order, sink, progress):
        t0, c0 = time.perf_counter(), self.cycle
        self.s["cfg"][L.PARALLEL] = int(self._parallel and numba.get_num_threads() > 1)
        cycle_loop(n, step_limit, order, *(self.s[k] for k in STATE),
                   len(self.probes), *(self.pr[k] for k in PROBE_STATE))
        self.flush(sink)
        if progress is not None:
            progress(self)
        elapsed, done = time.perf_counter() - t0, self.cycle - c0
        if done == n and elapsed < 0.1:  # aim at ~0.25 s per chunk
            self._chunk_cycles = min(self._chunk_cycles * 2, 1 << 40)
        elif elapsed > 0.5 and done > 1:
            self._chunk_cycles = max(self._chunk_cycles // 2, 1)

    # ---------------------------------------------------------------- probes
    def flush(self, sink=None) -> None:
        """Hand the buffered samples to `sink.append(probe, cycles, values)`
        (values as the registers hold them, shaped [samples, *subset shape]),
        or keep them in memory; then empty the buffers."""
        pr, fill = self.pr, self.pr["pr_fill"]
        for i, probe in enumerate(self.probes):
            n = int(fill[i])
            if n == 0:
                continue
            col, width = int(pr["pr_cfg"][i, 3]), int(pr["pr_cfg"][i, 4])
            cycles = pr["pr_cyc"][:n, i].copy()
            values = pr["pr_buf"][:n, col:col + width].reshape((n,) + probe.shape).copy()
            if sink is not None:
                sink.append(probe, cycles, values)
            else:
                self._memory[probe.name][0].append(cycles)
                self._memory[probe.name][1].append(values)
        fill[:] = 0
        if sink is not None and hasattr(sink, "commit"):
            sink.commit(self)

    def samples(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(cycles, real values) recorded in memory by the probe on `name`."""
        if name not in self._memory:
            raise KeyError(f"{name} is not probed (probes: {', '.join(self._memory) or 'none'})")
        cycles, values = self._memory[name]
        probe = next(p for p in self.probes if p.name == name)
        if not cycles:
            return np.zeros(0, dtype=np.int64), np.zeros((0,) + probe.shape)
        return np.concatenate(cycles), np.concatenate(values)

    @property
    def cycle(self) -> int:
        return int(self.s["ctr"][L.C_CYCLE])

    @property
    def step(self) -> int:
        return int(self.s["ctr"][L.C_STEP])

    @property
    def baseline_cycles(self) -> int:
        return int(self.s["ctr"][L.C_BASELINE_CYCLES])

    @property
    def updates(self) -> int:
        return int(self.s["ctr"][L.C_UPDATES])

    @property
    def chip_time(self) -> float:
        """Seconds of chip time: cycles / clock frequency."""
        return self.cycle / self.chip.timing.clock_hz

    # ------------------------------------------------------------- registers
    def register_format(self, name: str) -> Format | None:
        """The number format of a register (None for target and sample_index)."""
        reg = self._registers.get(name)
        if reg is None:
            raise KeyError(name)
        return getattr(self.chip.formats, reg.format_class) if reg.format_class else None

    @property
    def registers(self) -> dict[str, np.ndarray]:
        """Every register's real value (copies), by name."""
        out = {}
        for reg in self._registers.values():
            arr = self.s[reg.source][reg.start:reg.start + reg.size].astype(float)
            out[reg.name] = arr.reshape(reg.shape) if reg.shape else arr[0]
        return out

    @property
    def codes(self) -> dict[str, np.ndarray]:
        """Integer codes of every fixed-point register, by name."""
        regs = self.registers
        out = {}
        for reg in self._registers.values():
            fmt = getattr(self.chip.formats, reg.format_class) if reg.format_class else None
            if fmt is not None and fmt.is_fixed:
                out[reg.name] = np.rint(np.asarray(regs[reg.name]) * 2.0 ** fmt.frac_bits).astype(np.int64)
        return out

    @property
    def events(self) -> dict[str, tuple[int, int]]:
        """(saturations, wraps) counted so far, per register."""
        ev, n_layers = self.s["events"], self.s["cfg"][L.N_LAYERS]
        out = {}
        for layer in range(n_layers):
            for k, name in enumerate(L.LAYER_EVENT_NAMES):
                r = ev[L.E_PER_LAYER * layer + k]
                out[f"layer{layer}.{name}"] = (int(r[1]), int(r[2]))
        for k, name in enumerate(L.GLOBAL_EVENT_NAMES):
            r = ev[L.E_PER_LAYER * n_layers + k]
            out[name] = (int(r[1]), int(r[2]))
        return out

    # ------------------------------------------------------------- evaluate
    def outputs(self, dataset=None) -> np.ndarray:
        """Unperturbed network outputs of the current weights on a dataset."""
        data = dataset if dataset is not None else self.task.test
        s = self.s
        X = np.ascontiguousarray(data.inputs, dtype=np.float64)
        out = np.zeros((X.shape[0], s["cfg"][L.N_OUT]))
        # Rounding generators and event counters are copied: evaluating
        # leaves the chip's state untouched.
        forward_dataset(X, s["cfg"], s["geo"], s["fmts"], s["theta"], s["gains"],
                        s["offsets"], s["sr_x"].copy(), s["sr_act"].copy(), s["events"].copy(), out)
        return out

    def evaluate(self, dataset=None) -> tuple[float, float]:
        """(mean cost, accuracy) of the unperturbed network (default: test set)."""
        data = dataset if dataset is not None else self.task.test
        out = self.outputs(data)
        kind = self.s["cfg"][L.COST_FN]
        targets = np.ascontiguousarray(data.targets, dtype=np.float64)
        cost = float(np.mean([cost_function(kind, out[i], targets[i]) for i in range(len(out))]))
        return cost, float(self.task.accuracy(out, data))

    # ----------------------------------------------------------- checkpoint
    def checkpoint(self) -> dict:
        """The whole state, copied: restore() continues bit-exactly."""
        return {"format": "mgd-emu-checkpoint", "version": 1, "chip": self.chip.to_toml(),
                "source": self.chip.source, "seed": self.seed,
                "state": {k: v.copy() for k, v in self.s.items()}}

    @classmethod
    def restore(cls, checkpoint: dict) -> "Emulator":
        if checkpoint.get("format") != "mgd-emu-checkpoint" or checkpoint.get("version") != 1:
            raise ValueError("not an mgd-emu checkpoint of version 1")
        chip = spec_mod.loads_chip(checkpoint["chip"], checkpoint.get("source", "<checkpoint>"))
        emu = cls(chip, checkpoint["seed"])
        for k, v in checkpoint["state"].items():
            emu.s[k] = v.copy()
        return emu
