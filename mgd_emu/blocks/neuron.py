"""Neuron layer: multiply-accumulate, perturbation injection, nonlinearity.

Each layer writes its neurons' activation register (layer{i}.activation, in
formats.activation); with layer pipelining it is a pipeline stage that the
next layer reads a cycle later. A dual-path chip has a second, unperturbed
copy of every neuron (act0) that feeds the cost unit's baseline.
"""
import math

import numpy as np
from numba import njit, prange

from .declare import GENERATOR, NEXT, ROM, Reg, record
from .layout import (ACT_HARD_SIGMOID, ACT_LINEAR, ACT_RELU, ACT_SIGMOID, ACT_TANH,
                     E_ACT, E_PER_LAYER, F_ACTIVATION, MODE_NODE)
from .prng import gaussian
from ..fixedpoint import EVENT_SATURATE, EVENT_WRAP, format_constants
from .register import write_fc

REGISTERS = (
    Reg("act", np.float64, ("n_neurons",), "neuron outputs (perturbed path)", fmt="activation",
        public="neurons:activation"),
    Reg("act_w", np.float64, ("n_neurons",), "this cycle's neuron outputs, committed at the edge",
        fmt="activation", role=NEXT),
    Reg("act0", np.float64, ("n_neurons",), "dual path: unperturbed neuron outputs", fmt="activation"),
    Reg("act0_w", np.float64, ("n_neurons",), "dual path: this cycle's unperturbed outputs",
        fmt="activation", role=NEXT),
    Reg("gains", np.float64, ("n_neurons",), "static device variation: each neuron's gain", role=ROM),
    Reg("offsets", np.float64, ("n_neurons",), "static device variation: each neuron's input offset",
        role=ROM),
    Reg("sr", np.uint64, ("n_neurons",), "act's stochastic-rounding generators", role=GENERATOR),
    Reg("sr0", np.uint64, ("n_neurons",), "act0's stochastic-rounding generators", role=GENERATOR),
    Reg("noise", np.uint64, ("n_neurons",), "activation-noise generators", role=GENERATOR),
    Reg("noise0", np.uint64, ("n_neurons",), "dual path: activation-noise generators", role=GENERATOR),
)
Neurons = record("Neurons", REGISTERS, __name__)


@njit(cache=True, _nrt=False, inline="always")
def activation_function(kind, z):
    """The neuron's nonlinearity, in float64 (a lookup table's ideal values)."""
    if kind == ACT_SIGMOID:
        return 1.0 / (1.0 + math.exp(-z))
    if kind == ACT_TANH:
        return math.tanh(z)
    if kind == ACT_RELU:
        return z if z > 0.0 else 0.0
    if kind == ACT_LINEAR:
        return z
    if kind == ACT_HARD_SIGMOID:
        return min(max(0.2 * z + 0.5, 0.0), 1.0)
    return z


@njit(cache=True, _nrt=False, fastmath={"reassoc"})
def mac_exact(theta, pert, base, a, n, perturbed):
    """sum_k (theta[base+k] (+ pert[base+k] when perturbed)) * a[k] for a
    layer whose sums are exact (chipmap.exact_mac): every order of the adds
    then gives the same bits, so they may be reassociated (fastmath's
    `reassoc` and no other liberty: zeros keep their signs, no fused
    multiply-adds) and the loop runs on the vector units.

    Called, not inlined by Numba, so that the flag stays on these adds alone;
    LLVM compiles it into its callers (inline_into_callers in cycle.py).
    Unsigned indices: a signed one is checked for wrap-around."""
    s = 0.0
    b = np.uint64(base)
    if perturbed:
        for k in range(np.uint64(n)):
            s += (theta[b + k] + pert[b + k]) * a[k]
    else:
        for k in range(np.uint64(n)):
            s += theta[b + k] * a[k]
    return s


@njit(cache=True, _nrt=False, inline="always")
def geometry(lay, layer):
    """(fan_in, w_off, b_off, n_off, gen_off) of a layer, as values."""
    return lay.fan_in[layer], lay.w_off[layer], lay.b_off[layer], lay.n_off[layer], lay.gen_off[layer]


@njit(cache=True, _nrt=False, inline="always")
def fire(z, j, geo, act_kind, mode, theta, pert, gate, gains, offsets, sigma, noise, fc_act, sr, a_out):
    """Neuron j of the layer from its weighted input sum z: adds the bias
    (and its perturbation, or the node perturbation, on a measurement slot),
    applies the nonlinearity with the neuron's gain and offset, adds
    activation noise, and writes the activation register. Returns the
    write's event (fixedpoint.EVENT_*). geo: geometry(lay, layer).

    (Arrays, not the Neurons record: inlined into a prange loop, Numba
    0.68 loses writes made through a tuple's arrays.)"""
    _, _, b_off, n_off, gen_off = geo
    if b_off >= 0:
        z += theta[b_off + j]
        if mode != MODE_NODE and gate != 0.0:
            z += pert[b_off + j]
    if mode == MODE_NODE and gate != 0.0:
        z += pert[gen_off + j]
    a = activation_function(act_kind, gains[n_off + j] * (z + offsets[n_off + j]))
    if sigma != 0.0:
        noise[n_off + j], xi = gaussian(noise[n_off + j])
        a += sigma * xi
    a_out[n_off + j], event = write_fc(a, fc_act, sr, n_off + j)
    return event


@njit(cache=True, _nrt=False, inline="always")
def count_events(events, row, n_sat, n_wrap):
    events[row, EVENT_SATURATE] += n_sat
    events[row, EVENT_WRAP] += n_wrap


@njit(cache=True, _nrt=False)
def neuron_layer(layer, lay, act_kind, mode, a_in, theta, pert, gate, neu, sigma, fmts, events):
    """One layer's combinational output for one slot, written to neu.act_w
    (perturbed path: rounding generators neu.sr, noise neu.noise).

    Reads: a_in (the layer input, x or the previous layer), theta (weights and
    biases, flat), pert (perturbation generator registers), gate (1.0 on a
    measurement slot, 0.0 on a baseline slot or the unperturbed path).
    z_j = sum_k (W_jk + g*pW_jk) a_k + b_j + g*pb_j  (weight mode)
    z_j = sum_k W_jk a_k + b_j + g*p_j               (node mode)
    a_j = q_act(f(gain_j * (z_j + offset_j)) + sigma * N(0,1)).
    """
    fan_in, fan_out, w_off = lay.fan_in[layer], lay.fan_out[layer], lay.w_off[layer]
    geo = geometry(lay, layer)
    fc_act = format_constants(fmts[F_ACTIVATION])
    weight_pert = mode != MODE_NODE and gate != 0.0
    n_sat = 0
    n_wrap = 0
    exact = lay.exact_mac[layer] != 0
    for j in range(fan_out):
        z = 0.0
        base = w_off + j * fan_in
        if exact:
            z = mac_exact(theta, pert, base, a_in, fan_in, weight_pert)
        elif weight_pert:
            for k in range(fan_in):
                z += (theta[base + k] + pert[base + k]) * a_in[k]
        else:
            for k in range(fan_in):
                z += theta[base + k] * a_in[k]
        event = fire(z, j, geo, act_kind, mode, theta, pert, gate, neu.gains, neu.offsets, sigma,
                     neu.noise, fc_act, neu.sr, neu.act_w)
        n_sat += event == EVENT_SATURATE
        n_wrap += event == EVENT_WRAP
    count_events(events, E_PER_LAYER * layer + E_ACT, n_sat, n_wrap)


@njit(cache=True, _nrt=False, inline="always")
def dual_neuron(j, geo, act_kind, mode, a_in, a0_in, same_input, theta, pert, gate, sigma, fc_act,
                gains, offsets, paths, exact):
    """Neuron j of both paths (see neuron_layer_dual); returns the number of
    (saturations, wraps) of its two activation writes. paths: the (noise,
    rounding generators, output) arrays of the perturbed path, then of the
    unperturbed one (arrays: see fire). exact: the layer's sums are exact
    (chipmap.exact_mac)."""
    noise, sr, a_out, noise0, sr0, a0_out = paths
    fan_in, w_off, _, _, _ = geo
    weight_pert = mode != MODE_NODE and gate != 0.0
    z = 0.0
    z0 = 0.0
    base = w_off + j * fan_in
    if exact:
        z = mac_exact(theta, pert, base, a_in, fan_in, weight_pert)
        z0 = z if same_input and not weight_pert else mac_exact(theta, pert, base, a0_in, fan_in, False)
    elif weight_pert:
        for k in range(fan_in):
            w = theta[base + k]
            z += (w + pert[base + k]) * a_in[k]
            z0 += w * a0_in[k]
    elif same_input:
        for k in range(fan_in):
            z += theta[base + k] * a_in[k]
        z0 = z
    else:
        for k in range(fan_in):
            w = theta[base + k]
            z += w * a_in[k]
            z0 += w * a0_in[k]
    e = fire(z, j, geo, act_kind, mode, theta, pert, gate, gains, offsets, sigma, noise, fc_act, sr, a_out)
    e0 = fire(z0, j, geo, act_kind, mode, theta, pert, 0.0, gains, offsets, sigma, noise0, fc_act, sr0,
              a0_out)
    return ((e == EVENT_SATURATE) + (e0 == EVENT_SATURATE),
            (e == EVENT_WRAP) + (e0 == EVENT_WRAP))


@njit(cache=True, _nrt=False)
def neuron_layer_dual(layer, lay, act_kind, mode, a_in, a0_in, same_input, theta, pert, gate,
                      neu, sigma, fmts, events):
    """neuron_layer for the perturbed path (a_in, gate -> act_w) and the
    unperturbed dual path (a0_in, gate 0 -> act0_w) of a dual-path chip at
    once: one pass over the weights feeds both multiply-accumulates, each
    summed in the same order as neuron_layer sums it (the same bits).
    same_input: a_in and a0_in hold the same values (the input layer); then
    without a weight perturbation the two sums are one.
    """
    fc_act = format_constants(fmts[F_ACTIVATION])
    geo = geometry(lay, layer)
    gains, offsets = neu.gains, neu.offsets
    paths = (neu.noise, neu.sr, neu.act_w, neu.noise0, neu.sr0, neu.act0_w)
    exact = lay.exact_mac[layer] != 0
    n_sat = 0
    n_wrap = 0
    for j in range(lay.fan_out[layer]):
        s, w = dual_neuron(j, geo, act_kind, mode, a_in, a0_in, same_input, theta, pert, gate, sigma,
                           fc_act, gains, offsets, paths, exact)
        n_sat += s
        n_wrap += w
    count_events(events, E_PER_LAYER * layer + E_ACT, n_sat, n_wrap)


# dual_neuron as a call, not inlined: inlined into a prange loop, Numba
# 0.68 loses writes made through a tuple's arrays (a call keeps them).
dual_neuron_call = njit(_nrt=False)(dual_neuron.py_func)


# Compiled for the chip's argument types before the cycle kernel that calls
# it (cycle.py): a kernel compiled without the Numba runtime cannot compile
# a parallel one on demand.
@njit(cache=True, parallel=True)
def neuron_layer_dual_parallel(layer, lay, act_kind, mode, a_in, a0_in, same_input, theta, pert,
                               gate, neu, sigma, fmts, events):
    """neuron_layer_dual with its neurons shared among numba's threads; the
    same bits (every neuron is independent, the event counts are sums)."""
    fc_act = format_constants(fmts[F_ACTIVATION])
    geo = geometry(lay, layer)
    gains, offsets = neu.gains, neu.offsets
    paths = (neu.noise, neu.sr, neu.act_w, neu.noise0, neu.sr0, neu.act0_w)
    exact = lay.exact_mac[layer] != 0
    n_sat = 0
    n_wrap = 0
    for j in prange(lay.fan_out[layer]):
        s, w = dual_neuron_call(j, geo, act_kind, mode, a_in, a0_in, same_input, theta, pert, gate,
                                sigma, fc_act, gains, offsets, paths, exact)
        n_sat += s
        n_wrap += w
    count_events(events, E_PER_LAYER * layer + E_ACT, n_sat, n_wrap)
