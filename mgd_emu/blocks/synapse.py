"""Synapse: perturbation delay line, correlator, integrator and updater.

Registers owned, per parameter i (weights and biases, flat):
  theta[i]  the parameter (formats.weight / formats.bias)
  G[i]      the integrator (formats.integrator)
  V[i]      the momentum register (formats.velocity)
  p_ring    the delay line of the perturbation this synapse (weight mode) or
            its neuron (node mode) applied, `ring` stages deep
  in_ring   node mode: the delay line of the presynaptic activity
"""
from numba import njit, prange

from .layout import (E_B_INTEG, E_B_VEL, E_BIAS, E_PER_LAYER, E_W_INTEG, E_W_VEL,
                     E_WEIGHT, F_BIAS, F_INTEGRATOR, F_VELOCITY, F_WEIGHT, G_B_OFF,
                     G_DELAY, G_FAN_IN, G_FAN_OUT, G_GEN_OFF, G_IN_OFF, G_W_OFF,
                     INTEG_DIGITAL, MODE_WEIGHT, OPT_MOMENTUM)
from .prng import gaussian, xorshift64star_next
from ..fixedpoint import (FC_FIXED, FC_ROUNDING, ROUND_STOCHASTIC, format_constants,
                          quantize_sat_fc)
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


@njit(cache=True, _nrt=False, inline="always")
def integrate_and_update_fast(k, e, valid, update_edge, eta, theta, G, sr_theta, sr_g,
                              fc_p, fc_g, sto_p, sto_g):
    """integrate_and_update of synapse k for the common chip, without a
    branch, so that loops over synapses vectorise: a digital integrator, the
    plain updater, no update noise, formats that saturate (or float).

    G_k <- q_G(G_k + e) when valid; at an update edge theta_k <-
    q_p(theta_k - eta * G_k) and G_k <- 0. sto_p, sto_g: the formats round
    stochastically (a generator steps only when its register is written).
    Returns (G saturated, theta saturated) as 0/1.
    """
    state, rnd = xorshift64star_next(sr_g[k])
    sr_g[k] = state if (sto_g and valid) else sr_g[k]
    g, sat = quantize_sat_fc(G[k] + e, fc_g, rnd)
    g = g if valid else G[k]
    sat_g = 1 if (sat and valid) else 0
    if not update_edge:
        G[k] = g
        return sat_g, 0
    state, rnd = xorshift64star_next(sr_theta[k])
    sr_theta[k] = state if sto_p else sr_theta[k]
    t, sat = quantize_sat_fc(theta[k] - eta * g, fc_p, rnd)
    theta[k] = t
    G[k] = 0.0
    return sat_g, 1 if sat else 0


@njit(cache=True, _nrt=False, inline="always")
def stochastic(fc):
    """Whether a format's registers round stochastically."""
    return fc[FC_FIXED] and fc[FC_ROUNDING] == ROUND_STOCHASTIC


@njit(cache=True, _nrt=False, inline="always")
def count_saturations(events, layer, w_integ, w, b_integ, b):
    """Add a layer's saturation counts of (weight integrators, weights, bias
    integrators, biases) to its event rows."""
    base = E_PER_LAYER * layer
    events[base + E_W_INTEG, 1] += w_integ
    events[base + E_WEIGHT, 1] += w
    events[base + E_B_INTEG, 1] += b_integ
    events[base + E_BIAS, 1] += b


@njit(cache=True, _nrt=False, inline="always")
def node_synapse_row(n, ej, a, valid, update_edge, eta, theta, G, sr_theta, sr_g,
                     fc_p, fc_g, sto_p, sto_g):
    """The n synapses of one neuron in node mode, e_k = e_j * a_k, by
    integrate_and_update_fast on views of their registers. Returns the
    saturations of (G, theta)."""
    n_g = 0
    n_p = 0
    for k in range(n):
        s_g, s_p = integrate_and_update_fast(k, ej * a[k], valid, update_edge, eta, theta, G,
                                             sr_theta, sr_g, fc_p, fc_g, sto_p, sto_g)
        n_g += s_g
        n_p += s_p
    return n_g, n_p


@njit(cache=True, _nrt=False, inline="always")
def node_neuron_synapses(j, layer, geo, d, now, then, use_ring, gate, pert, a_d, bcast, valid,
                         update_edge, kappa, eta, theta, G, p_ring, sr_theta, sr_g, fc_w, fc_b,
                         fc_g):
    """Neuron j's correlator and its synapses (weights, then bias) in node
    mode on the common chip. Returns the saturations of (weight integrators,
    weights, bias integrator, bias)."""
    fan_in, w_off, b_off = geo[layer, G_FAN_IN], geo[layer, G_W_OFF], geo[layer, G_B_OFF]
    gen = geo[layer, G_GEN_OFF] + j
    p_now = pert[gen] * gate
    p_d = p_now if d == 0 else p_ring[then, gen]
    if use_ring:
        p_ring[now, gen] = p_now
    ej = bcast * p_d * kappa if valid else 0.0
    row = w_off + j * fan_in
    th, g = theta[row:row + fan_in], G[row:row + fan_in]
    srt, srg = sr_theta[row:row + fan_in], sr_g[row:row + fan_in]
    sto_w, sto_b, sto_g = stochastic(fc_w), stochastic(fc_b), stochastic(fc_g)
    if update_edge:
        wg, wp = node_synapse_row(fan_in, ej, a_d, valid, True, eta, th, g, srt, srg,
                                  fc_w, fc_g, sto_w, sto_g)
    else:
        wg, wp = node_synapse_row(fan_in, ej, a_d, valid, False, eta, th, g, srt, srg,
                                  fc_w, fc_g, sto_w, sto_g)
    bg = 0
    bp = 0
    if b_off >= 0:
        bg, bp = integrate_and_update_fast(b_off + j, ej, valid, update_edge, eta, theta, G,
                                           sr_theta, sr_g, fc_b, fc_g, sto_b, sto_g)
    return wg, wp, bg, bp


@njit(cache=True, _nrt=False)
def node_synapses_serial(layer, geo, d, now, then, use_ring, gate, pert, a_d, bcast, valid,
                         update_edge, kappa, eta, theta, G, p_ring, sr_theta, sr_g, fmts,
                         events):
    """node_neuron_synapses for every neuron of the layer, on one thread.
    (The rows are compiled in a function of their own: inside synapse_layer
    they made it slow to compile.)"""
    fc_w, fc_b = format_constants(fmts[F_WEIGHT]), format_constants(fmts[F_BIAS])
    fc_g = format_constants(fmts[F_INTEGRATOR])
    n_wg = 0
    n_wp = 0
    n_bg = 0
    n_bp = 0
    for j in range(geo[layer, G_FAN_OUT]):
        wg, wp, bg, bp = node_neuron_synapses(j, layer, geo, d, now, then, use_ring, gate, pert,
                                              a_d, bcast, valid, update_edge, kappa, eta, theta,
                                              G, p_ring, sr_theta, sr_g, fc_w, fc_b, fc_g)
        n_wg += wg
        n_wp += wp
        n_bg += bg
        n_bp += bp
    count_saturations(events, layer, n_wg, n_wp, n_bg, n_bp)


@njit(cache=True, _nrt=False)
def weight_synapses_fast(layer, geo, d, now, then, use_ring, gate, pert, bcast, valid,
                         update_edge, kappa, eta, theta, G, p_ring, sr_theta, sr_g, fmts,
                         events):
    """Every synapse of a weight-perturbation layer of the common chip, by
    weight_synapse_row over its weights, then its biases."""
    fan_in, fan_out = geo[layer, G_FAN_IN], geo[layer, G_FAN_OUT]
    w_off, b_off = geo[layer, G_W_OFF], geo[layer, G_B_OFF]
    fc_w, fc_b = format_constants(fmts[F_WEIGHT]), format_constants(fmts[F_BIAS])
    fc_g = format_constants(fmts[F_INTEGRATOR])
    sto_w, sto_b, sto_g = stochastic(fc_w), stochastic(fc_b), stochastic(fc_g)
    n_weights = fan_out * fan_in
    n_par = n_weights + (fan_out if b_off >= 0 else 0)
    wg, wp = weight_synapse_row(w_off, w_off + n_weights, d, now, then, use_ring, gate, pert,
                                p_ring, bcast, kappa, valid, update_edge, eta, theta, G,
                                sr_theta, sr_g, fc_w, fc_g, sto_w, sto_g)
    bg, bp = weight_synapse_row(w_off + n_weights, w_off + n_par, d, now, then, use_ring, gate,
                                pert, p_ring, bcast, kappa, valid, update_edge, eta, theta, G,
                                sr_theta, sr_g, fc_b, fc_g, sto_b, sto_g)
    count_saturations(events, layer, wg, wp, bg, bp)


# Compiled eagerly for this signature: a kernel compiled without the Numba
# runtime (synapse_layer) cannot compile a parallel one on demand.
@njit("void(i8, i8[:, ::1], i8, i8, i8, b1, f8, f8[::1], f8[::1], f8, b1, b1, f8, f8, f8[::1],"
      " f8[::1], f8[:, ::1], u8[::1], u8[::1], i8[:, ::1], i8[:, ::1])", cache=True, parallel=True)
def node_synapses_parallel(layer, geo, d, now, then, use_ring, gate, pert, a_d, bcast, valid,
                           update_edge, kappa, eta, theta, G, p_ring, sr_theta, sr_g, fmts,
                           events):
    """node_neuron_synapses for every neuron of the layer, shared among
    numba's threads: the same bits as one thread (the neurons are
    independent, the event counts are sums)."""
    fc_w, fc_b = format_constants(fmts[F_WEIGHT]), format_constants(fmts[F_BIAS])
    fc_g = format_constants(fmts[F_INTEGRATOR])
    n_wg = 0
    n_wp = 0
    n_bg = 0
    n_bp = 0
    for j in prange(geo[layer, G_FAN_OUT]):
        wg, wp, bg, bp = node_neuron_synapses(j, layer, geo, d, now, then, use_ring, gate, pert,
                                              a_d, bcast, valid, update_edge, kappa, eta, theta,
                                              G, p_ring, sr_theta, sr_g, fc_w, fc_b, fc_g)
        n_wg += wg
        n_wp += wp
        n_bg += bg
        n_bp += bp
    count_saturations(events, layer, n_wg, n_wp, n_bg, n_bp)


@njit(cache=True, _nrt=False, inline="always")
def weight_synapse_row(lo, hi, d, now, then, use_ring, gate, pert, p_ring, bcast, kappa,
                       valid, update_edge, eta, theta, G, sr_theta, sr_g, fc_p, fc_g,
                       sto_p, sto_g):
    """Synapses lo..hi-1 in weight mode: delay line, e_i = C~ p_i(n - d)
    kappa, and integrate_and_update_fast. Returns the saturations of (G, theta)."""
    n_g = 0
    n_p = 0
    for i in range(lo, hi):
        p_now = pert[i] * gate
        p_d = p_now if d == 0 else p_ring[then, i]
        if use_ring:
            p_ring[now, i] = p_now
        s_g, s_p = integrate_and_update_fast(i, bcast * p_d * kappa, valid, update_edge, eta,
                                             theta, G, sr_theta, sr_g, fc_p, fc_g, sto_p, sto_g)
        n_g += s_g
        n_p += s_p
    return n_g, n_p


@njit(cache=True, _nrt=False)
def weight_synapses_general(layer, geo, d, now, then, use_ring, gate, pert, bcast, valid,
                            update_edge, do_update, integrator, optimizer, kappa, eta, gamma,
                            beta, lam, weight_sigma, theta, G, V, p_ring, wnoise, fmts, sr_theta,
                            sr_g, sr_v, events):
    """Every synapse of a weight-perturbation layer, by integrate_and_update."""
    fan_in, fan_out = geo[layer, G_FAN_IN], geo[layer, G_FAN_OUT]
    w_off, b_off = geo[layer, G_W_OFF], geo[layer, G_B_OFF]
    fc_w, fc_b = format_constants(fmts[F_WEIGHT]), format_constants(fmts[F_BIAS])
    fc_g, fc_v = format_constants(fmts[F_INTEGRATOR]), format_constants(fmts[F_VELOCITY])
    n_weights = fan_out * fan_in
    for i in range(w_off, w_off + n_weights + (fan_out if b_off >= 0 else 0)):
        p_now = pert[i] * gate
        p_d = p_now if d == 0 else p_ring[then, i]
        if use_ring:
            p_ring[now, i] = p_now
        e = bcast * p_d * kappa if valid else 0.0
        if do_update:
            integrate_and_update(i, i >= w_off + n_weights, layer, e, valid, update_edge,
                                 integrator, optimizer, eta, gamma, beta, lam, weight_sigma,
                                 theta, G, V, wnoise, fc_w, fc_b, fc_g, fc_v, sr_theta, sr_g,
                                 sr_v, events)


@njit(cache=True, _nrt=False)
def node_synapses_general(layer, geo, d, now, then, use_ring, gate, pert, a_d, bcast, valid,
                          update_edge, do_update, integrator, optimizer, kappa, eta, gamma,
                          beta, lam, weight_sigma, theta, G, V, p_ring, wnoise, fmts, sr_theta,
                          sr_g, sr_v, events):
    """Every neuron's correlator and synapses of a node-perturbation layer, by
    integrate_and_update (the bias takes e_j itself: x = 1)."""
    fan_in, fan_out = geo[layer, G_FAN_IN], geo[layer, G_FAN_OUT]
    w_off, b_off, gen_off = geo[layer, G_W_OFF], geo[layer, G_B_OFF], geo[layer, G_GEN_OFF]
    fc_w, fc_b = format_constants(fmts[F_WEIGHT]), format_constants(fmts[F_BIAS])
    fc_g, fc_v = format_constants(fmts[F_INTEGRATOR]), format_constants(fmts[F_VELOCITY])
    for j in range(fan_out):
        p_now = pert[gen_off + j] * gate
        p_d = p_now if d == 0 else p_ring[then, gen_off + j]
        if use_ring:
            p_ring[now, gen_off + j] = p_now
        ej = bcast * p_d * kappa if valid else 0.0
        if not do_update:
            continue
        row = w_off + j * fan_in
        n = fan_in + (1 if b_off >= 0 else 0)
        for k in range(n):
            bias = k == fan_in
            integrate_and_update(b_off + j if bias else row + k, bias, layer,
                                 ej if bias else ej * a_d[k], valid, update_edge, integrator,
                                 optimizer, eta, gamma, beta, lam, weight_sigma, theta, G, V,
                                 wnoise, fc_w, fc_b, fc_g, fc_v, sr_theta, sr_g, sr_v, events)


@njit(cache=True, _nrt=False)
def synapse_layer(layer, geo, mode, cycle, ring, gate, pert, a_in, bcast, valid,
                  update_edge, measure, integrator, optimizer, kappa, eta, gamma, beta,
                  lam, weight_sigma, theta, G, V, p_ring, in_ring, wnoise,
                  fmts, sr_theta, sr_g, sr_v, events, fast=False, parallel=False):
    """Every synapse of one layer for one cycle.

    weight mode: e_i = C~ * p_i(n - d) * kappa
    node mode:   e_jk = C~ * p_j(n - d) * kappa * a_k(n - d), bias: a = 1
    Parameters update only in measurement cycles (analog) or at update edges.
    fast: the chip is the common one of integrate_and_update_fast (decided
    at build); its synapses then take the branch-free rows, with the same
    bits as the general path. parallel (with fast, node mode): the neurons
    are shared among numba's threads, with the same bits again. (Each path
    is a function of its own: together in one they were slow to compile.)
    """
    d, in_off, fan_in = geo[layer, G_DELAY], geo[layer, G_IN_OFF], geo[layer, G_FAN_IN]
    now = cycle % ring
    then = (cycle - d) % ring
    use_ring = ring > 0 and p_ring.shape[0] > 0
    do_update = measure or integrator == INTEG_DIGITAL
    if mode == MODE_WEIGHT:
        if fast:
            weight_synapses_fast(layer, geo, d, now, then, use_ring, gate, pert, bcast, valid,
                                 update_edge, kappa, eta, theta, G, p_ring, sr_theta, sr_g, fmts,
                                 events)
        else:
            weight_synapses_general(layer, geo, d, now, then, use_ring, gate, pert, bcast, valid,
                                    update_edge, do_update, integrator, optimizer, kappa, eta,
                                    gamma, beta, lam, weight_sigma, theta, G, V, p_ring, wnoise,
                                    fmts, sr_theta, sr_g, sr_v, events)
        return
    # node perturbation: the correlator sits at the neuron, the synapse
    # multiplies its neuron's error signal by its presynaptic activity.
    # a_k(n - d) is read from the delay line before this cycle's activity is
    # shifted in (after the layer), so d == ring reads the oldest stage.
    a_d = a_in if d == 0 else in_ring[then, in_off:in_off + fan_in]
    if fast and parallel:
        node_synapses_parallel(layer, geo, d, now, then, use_ring, gate, pert, a_d, bcast, valid,
                               update_edge, kappa, eta, theta, G, p_ring, sr_theta, sr_g, fmts,
                               events)
    elif fast:
        node_synapses_serial(layer, geo, d, now, then, use_ring, gate, pert, a_d, bcast, valid,
                             update_edge, kappa, eta, theta, G, p_ring, sr_theta, sr_g, fmts,
                             events)
    else:
        node_synapses_general(layer, geo, d, now, then, use_ring, gate, pert, a_d, bcast, valid,
                              update_edge, do_update, integrator, optimizer, kappa, eta, gamma,
                              beta, lam, weight_sigma, theta, G, V, p_ring, wnoise, fmts,
                              sr_theta, sr_g, sr_v, events)
    if use_ring:
        for k in range(fan_in):
            in_ring[now, in_off + k] = a_in[k]
