"""Neuron layer: multiply-accumulate, perturbation injection, nonlinearity.

Registers owned: the layer's activation register (layer{i}.activation, in
formats.activation), one per neuron; with layer pipelining it is a pipeline
stage that the next layer reads a cycle later.
"""
import math

from numba import njit, prange

from .layout import (ACT_HARD_SIGMOID, ACT_LINEAR, ACT_RELU, ACT_SIGMOID, ACT_TANH,
                     E_ACT, E_PER_LAYER, F_ACTIVATION, G_B_OFF, G_FAN_IN, G_FAN_OUT,
                     G_GEN_OFF, G_N_OFF, G_W_OFF, MODE_NODE)
from .prng import gaussian
from ..fixedpoint import EVENT_SATURATE, EVENT_WRAP, format_constants
from .register import write_fc


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


@njit(cache=True, _nrt=False, inline="always")
def fire(z, j, layer, geo, act_kind, mode, theta, pert, gate, gains, offsets, act_sigma,
         noise_state, fc_act, sr, a_out):
    """Neuron j of the layer from its weighted input sum z: adds the bias
    (and its perturbation, or the node perturbation, on a measurement slot),
    applies the nonlinearity with the neuron's gain and offset, adds
    activation noise, and writes the activation register. Returns the
    write's event (fixedpoint.EVENT_*)."""
    b_off, n_off = geo[layer, G_B_OFF], geo[layer, G_N_OFF]
    if b_off >= 0:
        z += theta[b_off + j]
        if mode != MODE_NODE and gate != 0.0:
            z += pert[b_off + j]
    if mode == MODE_NODE and gate != 0.0:
        z += pert[geo[layer, G_GEN_OFF] + j]
    a = activation_function(act_kind, gains[n_off + j] * (z + offsets[n_off + j]))
    if act_sigma != 0.0:
        noise_state[n_off + j], xi = gaussian(noise_state[n_off + j])
        a += act_sigma * xi
    a_out[n_off + j], event = write_fc(a, fc_act, sr, n_off + j)
    return event


@njit(cache=True, _nrt=False, inline="always")
def count_events(events, row, n_sat, n_wrap):
    events[row, EVENT_SATURATE] += n_sat
    events[row, EVENT_WRAP] += n_wrap


@njit(cache=True, _nrt=False)
def neuron_layer(layer, geo, act_kind, mode, a_in, theta, pert, gate, gains, offsets,
                 act_sigma, noise_state, fmts, sr, events, a_out):
    """One layer's combinational output for one slot, written to `a_out`.

    Reads: a_in (the layer input, x or the previous layer), theta (weights and
    biases, flat), pert (perturbation generator registers), gate (1.0 on a
    measurement slot, 0.0 on a baseline slot or the unperturbed path).
    z_j = sum_k (W_jk + g*pW_jk) a_k + b_j + g*pb_j  (weight mode)
    z_j = sum_k W_jk a_k + b_j + g*p_j               (node mode)
    a_j = q_act(f(gain_j * (z_j + offset_j)) + act_sigma * N(0,1)).
    """
    fan_in, fan_out, w_off = geo[layer, G_FAN_IN], geo[layer, G_FAN_OUT], geo[layer, G_W_OFF]
    fc_act = format_constants(fmts[F_ACTIVATION])
    weight_pert = mode != MODE_NODE and gate != 0.0
    n_sat = 0
    n_wrap = 0
    for j in range(fan_out):
        z = 0.0
        base = w_off + j * fan_in
        if weight_pert:
            for k in range(fan_in):
                z += (theta[base + k] + pert[base + k]) * a_in[k]
        else:
            for k in range(fan_in):
                z += theta[base + k] * a_in[k]
        event = fire(z, j, layer, geo, act_kind, mode, theta, pert, gate, gains, offsets,
                     act_sigma, noise_state, fc_act, sr, a_out)
        n_sat += event == EVENT_SATURATE
        n_wrap += event == EVENT_WRAP
    count_events(events, E_PER_LAYER * layer + E_ACT, n_sat, n_wrap)


@njit(cache=True, _nrt=False, inline="always")
def dual_neuron(j, layer, geo, act_kind, mode, a_in, a0_in, same_input, theta, pert, gate,
                gains, offsets, act_sigma, noise_state, noise_state0, fc_act, sr, sr0,
                a_out, a0_out):
    """Neuron j of both paths (see neuron_layer_dual); returns the number of
    (saturations, wraps) of its two activation writes."""
    fan_in, w_off = geo[layer, G_FAN_IN], geo[layer, G_W_OFF]
    weight_pert = mode != MODE_NODE and gate != 0.0
    z = 0.0
    z0 = 0.0
    base = w_off + j * fan_in
    if weight_pert:
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
    e = fire(z, j, layer, geo, act_kind, mode, theta, pert, gate, gains, offsets, act_sigma,
             noise_state, fc_act, sr, a_out)
    e0 = fire(z0, j, layer, geo, act_kind, mode, theta, pert, 0.0, gains, offsets, act_sigma,
              noise_state0, fc_act, sr0, a0_out)
    return ((e == EVENT_SATURATE) + (e0 == EVENT_SATURATE),
            (e == EVENT_WRAP) + (e0 == EVENT_WRAP))


@njit(cache=True, _nrt=False)
def neuron_layer_dual(layer, geo, act_kind, mode, a_in, a0_in, same_input, theta, pert, gate,
                      gains, offsets, act_sigma, noise_state, noise_state0, fmts, sr, sr0,
                      events, a_out, a0_out):
    """neuron_layer for the perturbed path (a_in, gate -> a_out) and the
    unperturbed dual path (a0_in, gate 0 -> a0_out) of a dual-path chip at
    once: one pass over the weights feeds both multiply-accumulates, each
    summed in the same order as neuron_layer sums it (the same bits).
    same_input: a_in and a0_in hold the same values (the input layer); then
    without a weight perturbation the two sums are one.
    """
    fc_act = format_constants(fmts[F_ACTIVATION])
    n_sat = 0
    n_wrap = 0
    for j in range(geo[layer, G_FAN_OUT]):
        s, w = dual_neuron(j, layer, geo, act_kind, mode, a_in, a0_in, same_input, theta, pert,
                           gate, gains, offsets, act_sigma, noise_state, noise_state0, fc_act,
                           sr, sr0, a_out, a0_out)
        n_sat += s
        n_wrap += w
    count_events(events, E_PER_LAYER * layer + E_ACT, n_sat, n_wrap)


# Compiled eagerly for this signature: a kernel compiled without the Numba
# runtime (the cycle loop) cannot compile a parallel one on demand.
@njit("void(i8, i8[:, ::1], i8, i8, f8[::1], f8[::1], b1, f8[::1], f8[::1], f8, f8[::1],"
      " f8[::1], f8, u8[::1], u8[::1], i8[:, ::1], u8[::1], u8[::1], i8[:, ::1], f8[::1],"
      " f8[::1])", cache=True, parallel=True)
def neuron_layer_dual_parallel(layer, geo, act_kind, mode, a_in, a0_in, same_input, theta,
                               pert, gate, gains, offsets, act_sigma, noise_state,
                               noise_state0, fmts, sr, sr0, events, a_out, a0_out):
    """neuron_layer_dual with its neurons shared among numba's threads; the
    same bits (every neuron is independent, the event counts are sums)."""
    fc_act = format_constants(fmts[F_ACTIVATION])
    n_sat = 0
    n_wrap = 0
    for j in prange(geo[layer, G_FAN_OUT]):
        s, w = dual_neuron(j, layer, geo, act_kind, mode, a_in, a0_in, same_input, theta, pert,
                           gate, gains, offsets, act_sigma, noise_state, noise_state0, fc_act,
                           sr, sr0, a_out, a0_out)
        n_sat += s
        n_wrap += w
    count_events(events, E_PER_LAYER * layer + E_ACT, n_sat, n_wrap)
