"""The cycle kernel, assembled for one chip variant.

`cycle_kernel(variant)` returns `cycle_loop(n_cycles, step_limit, order,
st, pr)`, which runs up to n_cycles clock cycles of a chip whose state is
`st` (chipmap.ChipState) with the logic analyser `pr` (probes.ProbeBuffers).
The whole cycle is on one screen below; `docs/CYCLE.md` is its
specification. The variant's choices are constants of the closure: Numba
prunes the branches the chip does not take before it types them, so only
the blocks the chip uses are compiled, and the compiled kernel is cached on
disk under a key that includes those constants (mgd_emu/kernel_cache.py adds
the package's kernel sources to the key).

The cycle kernels are compiled with `_nrt=False` (no Numba runtime): they
allocate nothing, and without it every call of a block kernel that is not
inlined pays reference-count updates on each array argument, which measured
2-5x slower on small chips. A kernel that did allocate would fail to compile.
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from numba import njit

from .blocks import layout as L
from .blocks.broadcast import broadcast_out, broadcast_step
from .blocks.controller import controller_step, controller_wires
from .blocks.cost import cost_change, cost_function, cost_unit_step, measure_cost, ROUND_COST, ROUND_COST0
from .blocks.neuron import mac_exact, neuron_layer, neuron_layer_dual, neuron_layer_dual_parallel
from .blocks.perturbation import generate_codes, generator_step
from .blocks.pipeline import layer_gate, pipeline_step
from .blocks.probe import sample_probes
from .blocks.sampler import load_sample, sampler_step
from .blocks.synapse import (Wires, delay_slots, general_synapses, node_neuron_synapses_call,
                             node_synapses_serial, parallel_node_synapses, presynaptic_delayed,
                             presynaptic_shift, weight_synapses_fast)
from .chipmap import PARALLEL_MIN_LAYER, Variant
from .kernel_cache import cached, inline_into_callers

# Blocks of the sequential phase, in their default order.
B_CONTROLLER, B_SAMPLER, B_GENERATOR, B_COST, B_BROADCAST, B_SYNAPSE = range(6)
DEFAULT_ORDER = np.arange(6, dtype=np.int64)
NO_STEP_LIMIT = np.iinfo(np.int64).max

# The block kernels the cycle kernel runs every cycle are compiled into it
# rather than called (a call passes every array of their records).
inline_into_callers(neuron_layer, neuron_layer_dual, mac_exact, measure_cost, cost_function, cost_change,
                    cost_unit_step, generator_step, generate_codes, sampler_step, load_sample,
                    weight_synapses_fast, node_synapses_serial, node_neuron_synapses_call)


@njit(cache=True, _nrt=False, inline="always")
def copy_register(src, dst):
    """dst <- src, element by element (a commit of a double-buffered register)."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(cache=True, _nrt=False, inline="always")
def layer_input(st, layer, pipelined, unperturbed):
    """What layer `layer` reads: x, or the previous layer's activity: its
    register when pipelined, else this cycle's combinational value (the
    dual path's when `unperturbed`)."""
    if layer == 0:
        return st.smp.x
    prev, size = st.lay.n_off[layer - 1], st.lay.fan_out[layer - 1]
    if unperturbed:
        src = st.neu.act0 if pipelined else st.neu.act0_w
    else:
        src = st.neu.act if pipelined else st.neu.act_w
    return src[prev:prev + size]


@njit(cache=True, _nrt=False, inline="always")
def wide(st, layer):
    """Whether a layer is wide enough to share among threads."""
    return st.cfg.threads and st.lay.fan_in[layer] * st.lay.fan_out[layer] >= PARALLEL_MIN_LAYER


@functools.cache
def synapse_stage(v: Variant):
    """`synapses(st, layer, a_pre, w, cycle)`: every synapse of one layer for
    one cycle, on the path chips of variant `v` take (a_pre: the layer's
    presynaptic activity; w: synapse.Wires). Used by the cycle kernel and by
    the golden-vector replay (export.py)."""
    NODE, FAST, PARALLEL = v.mode == L.MODE_NODE, v.fast, v.parallel
    ROUNDINGS = v.roundings
    node_synapses_parallel = parallel_node_synapses(v.roundings) if FAST and PARALLEL else None
    WEIGHT_GENERAL, NODE_GENERAL = general_synapses(*v.rules.resolved(analog=v.integrator == L.INTEG_ANALOG))

    @njit(_nrt=False, inline="always")
    def synapses(st, layer, a_pre, w, cycle):
        syn, lay, cfg, fmts, events, pert = st.syn, st.lay, st.cfg, st.fmts, st.mon.events, st.gen.pert
        kinds = (cfg.integrator, cfg.optimizer)
        slots = delay_slots(lay, layer, cycle, cfg.ring)
        if NODE:
            a_d = presynaptic_delayed(syn, layer, lay, slots, a_pre)
            if FAST and PARALLEL and wide(st, layer):
                node_synapses_parallel(syn, layer, lay, slots, pert, a_d, w, cfg, fmts, events)
            elif FAST:
                node_synapses_serial(syn, layer, lay, slots, pert, a_d, w, cfg, fmts, ROUNDINGS, events)
            else:
                NODE_GENERAL(syn, layer, lay, slots, pert, a_d, w, kinds, cfg, fmts, events)
            presynaptic_shift(syn, layer, lay, slots, a_pre)
        elif FAST:
            weight_synapses_fast(syn, layer, lay, slots, pert, w, cfg, fmts, ROUNDINGS, events)
        else:
            WEIGHT_GENERAL(syn, layer, lay, slots, pert, w, kinds, cfg, fmts, events)

    return synapses if v.rules.custom else cached(synapses, v.name)


@functools.cache
def cycle_kernel(v: Variant):
    """The cycle loop of chips of variant `v` (compiled on first call)."""
    MODE, DUAL, PIPELINED, PARALLEL = v.mode, v.dual, v.pipelined, v.parallel
    SYNAPSES = synapse_stage(v)

    @njit(_nrt=False, nogil=True)   # a trace is written on another thread meanwhile (engine.py)
    def cycle_loop(n_cycles, step_limit, order, st, pr):
        cfg, lay, fmts, events = st.cfg, st.lay, st.fmts, st.mon.events
        ctl, smp, gen, neu, pipe, cu, bc, syn = st.ctl, st.smp, st.gen, st.neu, st.pipe, st.cu, st.bc, st.syn
        last = cfg.n_layers - 1
        out_off, n_out = lay.n_off[last], cfg.n_out
        g_row = L.E_PER_LAYER * cfg.n_layers
        for _ in range(n_cycles):
            if ctl.step[0] >= step_limit:
                break
            cycle = ctl.cycle[0]
            probes_full = pr.n[0] > 0 and sample_probes(cycle, pr, st)

            # ---- combinational phase: wires from the current registers -------
            tag, new_sample, x_edge, p_edge, update_edge = controller_wires(
                ctl, cfg.tau_x, cfg.tau_p, cfg.tau_theta, cfg.integrator)
            for layer in range(cfg.n_layers):
                a_in = layer_input(st, layer, PIPELINED, False)
                act_kind = cfg.output_act if layer == last else cfg.hidden_act
                gate = layer_gate(layer, tag, pipe, PIPELINED)
                if DUAL:
                    a0_in = layer_input(st, layer, PIPELINED, True)
                    if PARALLEL and wide(st, layer):
                        neuron_layer_dual_parallel(layer, lay, act_kind, MODE, a_in, a0_in, layer == 0,
                                                   syn.theta, gen.pert, gate, neu, cfg.act_sigma, fmts,
                                                   events)
                    else:
                        neuron_layer_dual(layer, lay, act_kind, MODE, a_in, a0_in, layer == 0, syn.theta,
                                          gen.pert, gate, neu, cfg.act_sigma, fmts, events)
                else:
                    neuron_layer(layer, lay, act_kind, MODE, a_in, syn.theta, gen.pert, gate, neu,
                                 cfg.act_sigma, fmts, events)
            if PIPELINED:
                y_out, y0_out = neu.act[out_off:out_off + n_out], neu.act0[out_off:out_off + n_out]
                tag_c, new_c, target = pipe.tag[last], pipe.new_sample[last] != 0, pipe.target[last]
            else:
                y_out, y0_out = neu.act_w[out_off:out_off + n_out], neu.act0_w[out_off:out_off + n_out]
                tag_c, new_c, target = tag, new_sample, smp.y
            c = c0 = 0.0
            if tag_c != L.TAG_NONE:
                c = measure_cost(cu, cfg.cost_fn, y_out, target, cfg.cost_sigma, ROUND_COST, fmts,
                                 events, g_row + L.E_GLOBAL_COST)
                if DUAL and tag_c == L.TAG_MEASURE:
                    c0 = measure_cost(cu, cfg.cost_fn, y0_out, target, cfg.cost_sigma, ROUND_COST0, fmts,
                                      events, g_row + L.E_GLOBAL_COST)
            change, valid = cost_change(cu, cfg.baseline, tag_c, new_c, c, c0, cfg, fmts, events,
                                        g_row + L.E_GLOBAL_CHANGE)
            bcast, bvalid = broadcast_out(bc, cfg.bcast_delay, cycle, change, valid)

            # ---- sequential phase: each block writes only its own registers --
            for block in order:
                if block == B_CONTROLLER:
                    controller_step(ctl, tag, x_edge, update_edge, cfg.baseline)
                elif block == B_SAMPLER:
                    sampler_step(smp, x_edge, fmts, events, g_row + L.E_GLOBAL_INPUT)
                elif block == B_GENERATOR:
                    generator_step(gen, cfg.mux, p_edge, cfg, lay, fmts, events)
                elif block == B_COST:
                    cost_unit_step(cu, cfg.baseline, tag_c, c, c0, change, valid)
                elif block == B_BROADCAST:
                    broadcast_step(bc, cfg.bcast_delay, cycle, change, valid, bcast, bvalid)
                else:
                    for layer in range(cfg.n_layers):
                        a_pre = layer_input(st, layer, PIPELINED, cfg.presynaptic == L.PRE_UNPERTURBED)
                        w = Wires(layer_gate(layer, tag, pipe, PIPELINED), bcast, bvalid, update_edge,
                                  tag == L.TAG_MEASURE)
                        SYNAPSES(st, layer, a_pre, w, cycle)

            # ---- commit: double-buffered registers become current ------------
            if PIPELINED:
                pipeline_step(pipe, tag, new_sample, smp.y)
            if x_edge:
                copy_register(smp.x_next, smp.x)
                copy_register(smp.y_next, smp.y)
            if p_edge:
                copy_register(gen.pert_next, gen.pert)
            copy_register(neu.act_w, neu.act)
            if DUAL:
                copy_register(neu.act0_w, neu.act0)
            if probes_full:
                break

    return cycle_loop if v.rules.custom else cached(cycle_loop, v.name)


def prepare(kernel, v: Variant, st, pr) -> None:
    """Compile (or load) the parallel block kernels for the state's types
    before the cycle kernel that calls them: a kernel without the Numba
    runtime cannot compile them on demand."""
    if not v.parallel:
        return
    typeof = numba.typeof
    lay, neu, syn = st.lay, st.neu, st.syn
    a = st.smp.x
    _compile_only(neuron_layer_dual_parallel, (
        numba.int64, typeof(lay), numba.int64, numba.int64, typeof(a), typeof(a), numba.boolean,
        typeof(syn.theta), typeof(st.gen.pert), numba.float64, typeof(neu), numba.float64,
        typeof(st.fmts), typeof(st.mon.events)))
    _compile_only(parallel_node_synapses(v.roundings), (
        typeof(syn), numba.int64, typeof(lay), numba.types.UniTuple(numba.int64, 3), typeof(st.gen.pert),
        typeof(a), typeof(Wires(1.0, 0.0, True, True, True)), typeof(st.cfg), typeof(st.fmts),
        typeof(st.mon.events)))


def _compile_only(dispatcher, sig) -> None:
    """Compile `dispatcher` for `sig`, then let callers only convert their
    arguments to a compiled signature (a constant argument would otherwise
    ask for a new specialisation, compiled without the runtime it needs)."""
    dispatcher._can_compile = True
    dispatcher.compile(sig)
    dispatcher.disable_compile()


@njit(cache=True)
def forward_dataset(X, st, outputs):
    """Unperturbed outputs of the current weights for every row of X, into
    outputs. `st` is a copy of the chip's state whose rounding generators
    and event counters this may step; its activations are scratch.

    The same neuron kernels as the cycle loop, perturbations gated off and no
    per-cycle noise.
    """
    cfg, lay, neu = st.cfg, st.lay, st.neu
    last = cfg.n_layers - 1
    out_off, n_out = lay.n_off[last], cfg.n_out
    x = st.smp.x
    row = L.E_PER_LAYER * cfg.n_layers + L.E_GLOBAL_INPUT
    for s in range(X.shape[0]):
        load_sample(s, X, outputs, x, x[:0], st.fmts, st.smp.sr, st.mon.events, row)
        for layer in range(cfg.n_layers):
            if layer == 0:
                a_in = x
            else:
                prev, size = lay.n_off[layer - 1], lay.fan_out[layer - 1]
                a_in = neu.act_w[prev:prev + size]
            kind = cfg.output_act if layer == last else cfg.hidden_act
            neuron_layer(layer, lay, kind, L.MODE_WEIGHT, a_in, st.syn.theta, st.gen.pert, 0.0, neu,
                         0.0, st.fmts, st.mon.events)
        outputs[s, :] = neu.act_w[out_off:out_off + n_out]
