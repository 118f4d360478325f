"""Synapse: perturbation delay line, correlator, integrator and updater.

Registers owned, per parameter i (weights and biases, flat):
  theta[i]  the parameter (formats.weight / formats.bias)
  G[i]      the integrator (formats.integrator)
  V[i]      the momentum register (formats.velocity)
  p_ring    the delay line of the perturbation this synapse (weight mode) or
            its neuron (node mode) applied, `ring` stages deep
  in_ring   node mode: the delay line of the presynaptic activity
"""
from numba import njit

from .layout import (E_B_INTEG, E_B_VEL, E_BIAS, E_PER_LAYER, E_W_INTEG, E_W_VEL,
                     E_WEIGHT, F_BIAS, F_INTEGRATOR, F_VELOCITY, F_WEIGHT, G_B_OFF,
                     G_DELAY, G_FAN_IN, G_FAN_OUT, G_GEN_OFF, G_IN_OFF, G_W_OFF,
                     INTEG_DIGITAL, MODE_WEIGHT, OPT_MOMENTUM)
from .prng import gaussian
from ..fixedpoint import format_constants
from .register import store_fc


@njit(cache=True, _nrt=False, inline="always")
def integrate_and_update(i, is_bias, layer, e, valid, update_edge, integrator, optimizer,
                         eta, gamma, beta, lam, weight_sigma, theta, G, V, wnoise,
                         fc_w, fc_b, fc_g, fc_v, sr_theta, sr_g, sr_v, events):
    """Integrator G and updater for parameter i, given its correlation e.

    fc_w, fc_b, fc_g, fc_v: constants of the weight, bias, integrator and
    velocity formats (fixedpoint.format_constants).
    """
    base = E_PER_LAYER * layer
    fc_p, p_row = (fc_b, base + E_BIAS) if is_bias else (fc_w, base + E_WEIGHT)
    g_row = base + (E_B_INTEG if is_bias else E_W_INTEG)
    v_row = base + (E_B_VEL if is_bias else E_W_VEL)
    if integrator == INTEG_DIGITAL:
        s = store_fc(G[i] + e, fc_g, sr_g, i, events, g_row) if valid else G[i]
        if update_edge:
            step = eta * s
            if optimizer == OPT_MOMENTUM:
                V[i] = store_fc(gamma * V[i] + step, fc_v, sr_v, i, events, v_row)
                step = V[i]
            new = theta[i] - step
            if weight_sigma != 0.0:
                wnoise[0], xi = gaussian(wnoise[0])
                new += weight_sigma * xi
            theta[i] = store_fc(new, fc_p, sr_theta, i, events, p_row)
            G[i] = 0.0
        else:
            G[i] = s
    else:
        step = eta * G[i]
        if optimizer == OPT_MOMENTUM:
            V[i] = store_fc(gamma * V[i] + step, fc_v, sr_v, i, events, v_row)
            step = V[i]
        new = theta[i] - step
        if weight_sigma != 0.0:
            wnoise[0], xi = gaussian(wnoise[0])
            new += weight_sigma * xi
        theta[i] = store_fc(new, fc_p, sr_theta, i, events, p_row)
        G[i] = store_fc(beta * G[i] + lam * e, fc_g, sr_g, i, events, g_row)


@njit(cache=True, _nrt=False)
def synapse_layer(layer, geo, mode, cycle, ring, gate, pert, a_in, bcast, valid,
                  update_edge, measure, integrator, optimizer, kappa, eta, gamma, beta,
                  lam, weight_sigma, theta, G, V, p_ring, in_ring, wnoise,
                  fmts, sr_theta, sr_g, sr_v, events):
    """Every synapse of one layer for one cycle.

    weight mode: e_i = C~ * p_i(n - d) * kappa
    node mode:   e_jk = C~ * p_j(n - d) * kappa * a_k(n - d), bias: a = 1
    Parameters update only in measurement cycles (analog) or at update edges.
    """
    fan_in, fan_out = geo[layer, G_FAN_IN], geo[layer, G_FAN_OUT]
    w_off, b_off, d = geo[layer, G_W_OFF], geo[layer, G_B_OFF], geo[layer, G_DELAY]
    gen_off, in_off = geo[layer, G_GEN_OFF], geo[layer, G_IN_OFF]
    now = cycle % ring
    then = (cycle - d) % ring
    use_ring = ring > 0 and p_ring.shape[0] > 0
    do_update = measure or integrator == INTEG_DIGITAL
    fc_w, fc_b = format_constants(fmts[F_WEIGHT]), format_constants(fmts[F_BIAS])
    fc_g, fc_v = format_constants(fmts[F_INTEGRATOR]), format_constants(fmts[F_VELOCITY])
    if mode == MODE_WEIGHT:
        n_par = fan_out * fan_in + (fan_out if b_off >= 0 else 0)
        for i in range(w_off, w_off + n_par):
            p_now = pert[i] * gate
            p_d = p_now if d == 0 else p_ring[then, i]
            if use_ring:
                p_ring[now, i] = p_now
            e = bcast * p_d * kappa if valid else 0.0
            if do_update:
                integrate_and_update(i, i >= w_off + fan_out * fan_in, layer, e, valid,
                                     update_edge, integrator, optimizer, eta, gamma, beta,
                                     lam, weight_sigma, theta, G, V, wnoise, fc_w, fc_b, fc_g, fc_v,
                                     sr_theta, sr_g, sr_v, events)
        return
    # node perturbation: the correlator sits at the neuron, the synapse
    # multiplies its neuron's error signal by its presynaptic activity.
    # a_k(n - d) is read from the delay line before this cycle's activity is
    # shifted in (after the loop), so d == ring reads the oldest stage.
    a_d = a_in if d == 0 else in_ring[then, in_off:in_off + fan_in]
    for j in range(fan_out):
        p_now = pert[gen_off + j] * gate
        p_d = p_now if d == 0 else p_ring[then, gen_off + j]
        if use_ring:
            p_ring[now, gen_off + j] = p_now
        ej = bcast * p_d * kappa if valid else 0.0
        if not do_update:
            continue
        for k in range(fan_in):
            integrate_and_update(w_off + j * fan_in + k, False, layer, ej * a_d[k], valid,
                                 update_edge, integrator, optimizer, eta, gamma, beta, lam,
                                 weight_sigma, theta, G, V, wnoise, fc_w, fc_b, fc_g, fc_v, sr_theta, sr_g,
                                 sr_v, events)
        if b_off >= 0:
            integrate_and_update(b_off + j, True, layer, ej, valid, update_edge, integrator,
                                 optimizer, eta, gamma, beta, lam, weight_sigma, theta, G, V,
                                 wnoise, fc_w, fc_b, fc_g, fc_v, sr_theta, sr_g, sr_v, events)
    if use_ring:
        for k in range(fan_in):
            in_ring[now, in_off + k] = a_in[k]
