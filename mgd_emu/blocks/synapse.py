"""Synapse: perturbation delay line, correlator, integrator and updater.

Per parameter i (weights and biases, flat): theta[i] the parameter, G[i]
the integrator, V[i] the momentum register. p_ring delays the perturbation
each synapse (weight mode) or neuron (node mode) applied by the layer's
correlator delay; in node mode in_ring delays the presynaptic activity too.

The cycle kernel calls one of the layer kernels below, chosen when the chip
is built (cycle.py): the branch-free rows of the common chip
(`weight_synapses_fast`, `node_synapses_serial`, `parallel_node_synapses`),
compiled for the chip's rounding modes, or the general ones, with the same
bits.
"""
import functools
from collections import namedtuple

import numpy as np
from numba import njit, prange

from .declare import GENERATOR, Reg, record
from .layout import (E_B_INTEG, E_B_VEL, E_BIAS, E_PER_LAYER, E_W_INTEG, E_W_VEL,
                     E_WEIGHT, F_BIAS, F_INTEGRATOR, F_VELOCITY, F_WEIGHT,
                     INTEG_DIGITAL, OPT_MOMENTUM)
from .prng import gaussian, xorshift64star_next
from ..fixedpoint import (FC_FIXED, FC_ROUNDING, ROUND_STOCHASTIC, format_constants,
                          quantize_sat_fc, rounding_tag, with_rounding)
from .register import store_fc
from ..kernel_cache import cached, name_apart

REGISTERS = (
    Reg("theta", np.float64, ("n_params",), "parameters theta", fmt="weight",
        public="params:weight,bias"),
    Reg("G", np.float64, ("n_params",), "integrators G", fmt="integrator",
        public="params:weight_integrator,bias_integrator"),
    Reg("V", np.float64, ("n_params",), "momentum registers v", fmt="velocity",
        public="params:weight_velocity,bias_velocity"),
    Reg("p_ring", np.float64, ("ring", "n_gen"), "each correlator's perturbation delay line",
        fmt="perturbation"),
    Reg("in_ring", np.float64, ("in_ring", "n_layer_inputs"),
        "node mode: each layer's presynaptic-activity delay line", fmt="activation"),
    Reg("sr_theta", np.uint64, ("n_params",), "theta's stochastic-rounding generators", role=GENERATOR),
    Reg("sr_g", np.uint64, ("n_params",), "G's stochastic-rounding generators", role=GENERATOR),
    Reg("sr_v", np.uint64, ("n_params",), "v's stochastic-rounding generators", role=GENERATOR),
    Reg("noise", np.uint64, (), "weight-update noise generator (shared)", role=GENERATOR),
)
Synapses = record("Synapses", REGISTERS, __name__)

# The wires a layer of synapses reads in a cycle: gate (1.0 when its
# perturbations applied), the broadcast C~ and its valid bit, the update edge,
# and whether the controller's slot is a measurement (analog integrators
# update only then).
Wires = namedtuple("Wires", ["gate", "bcast", "valid", "update_edge", "measure"])


@njit(cache=True, _nrt=False, inline="always")
def delay_slots(lay, layer, cycle, ring):
    """(d, now, then): the layer's correlator delay, the delay-line stage
    written this cycle and the one written d cycles ago."""
    d = lay.delay[layer]
    return d, cycle % ring, (cycle - d) % ring


@njit(cache=True, _nrt=False, inline="always")
def delayed_perturbation(p_ring, g, p_now, d, now, then):
    """p(n - d) of generator g, shifting p(n) (gated) into its delay line."""
    p_d = p_now if d == 0 else p_ring[then, g]
    if p_ring.shape[0] > 0:
        p_ring[now, g] = p_now
    return p_d


@njit(cache=True, _nrt=False)
def correlate(c, p, kappa):
    """The built-in correlator: e = C~ * p(n - d) * kappa."""
    return c * p * kappa


@njit(cache=True, _nrt=False)
def accumulate(g, e, beta, lam):
    """The built-in digital integrator: G + e."""
    return g + e


@njit(cache=True, _nrt=False)
def leak(g, e, beta, lam):
    """The built-in analog integrator: beta * G + lambda * e."""
    return beta * g + lam * e


@njit(cache=True, _nrt=False)
def descend(theta, step, eta):
    """The built-in updater: theta - step (step = eta * G, or the momentum register)."""
    return theta - step


@njit(cache=True, _nrt=False, inline="always")
def integrate_and_update_fast(k, e, valid, update_edge, eta, theta, G, sr_theta, sr_g,
                              fc_p, fc_g, sto_p, sto_g, g_clear=False):
    """integrate_and_update of synapse k for the common chip, without a
    branch, so that loops over synapses vectorise: a digital integrator, the
    plain updater, no update noise, formats that saturate (or float).

    G_k <- q_G(G_k + e) when valid; at an update edge theta_k <-
    q_p(theta_k - eta * G_k) and G_k <- 0. sto_p, sto_g: the formats round
    stochastically (a generator steps only when its register is written).
    g_clear (a constant, with update_edge): G_k is known to hold 0, as on a
    chip that clears its integrators every cycle (Config.g_clear), so G is
    neither read nor written. Returns (G saturated, theta saturated) as 0/1.
    """
    g_now = 0.0 if g_clear else G[k]
    state, rnd = xorshift64star_next(sr_g[k])
    sr_g[k] = state if (sto_g and valid) else sr_g[k]
    g, sat = quantize_sat_fc(g_now + e, fc_g, rnd)
    g = g if valid else g_now
    sat_g = 1 if (sat and valid) else 0
    if not update_edge:
        G[k] = g
        return sat_g, 0
    state, rnd = xorshift64star_next(sr_theta[k])
    sr_theta[k] = state if sto_p else sr_theta[k]
    t, sat = quantize_sat_fc(theta[k] - eta * g, fc_p, rnd)
    theta[k] = t
    if not g_clear:
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
def synapse_formats(fmts):
    """format_constants of the (weight, bias, integrator, velocity) formats."""
    return (format_constants(fmts[F_WEIGHT]), format_constants(fmts[F_BIAS]),
            format_constants(fmts[F_INTEGRATOR]), format_constants(fmts[F_VELOCITY]))


@njit(cache=True, _nrt=False, inline="always")
def fast_formats(fmts, roundings):
    """format_constants of the (weight, bias, integrator) formats for the
    fast rows, with the rounding modes of the chip's variant (roundings:
    chipmap.Variant.roundings, constants of the cycle kernel)."""
    return (with_rounding(format_constants(fmts[F_WEIGHT]), roundings[0]),
            with_rounding(format_constants(fmts[F_BIAS]), roundings[1]),
            with_rounding(format_constants(fmts[F_INTEGRATOR]), roundings[2]))


@njit(cache=True, _nrt=False, inline="always")
def node_synapse_row(n, ej, a, valid, update_edge, g_clear, eta, theta, G, sr_theta, sr_g,
                     fc_p, fc_g, sto_p, sto_g):
    """The n synapses of one neuron in node mode, e_k = e_j * a_k, by
    integrate_and_update_fast on views of their registers. Returns the
    saturations of (G, theta)."""
    n_g = 0
    n_p = 0
    for k in range(n):
        s_g, s_p = integrate_and_update_fast(k, ej * a[k], valid, update_edge, eta, theta, G,
                                             sr_theta, sr_g, fc_p, fc_g, sto_p, sto_g, g_clear)
        n_g += s_g
        n_p += s_p
    return n_g, n_p


@njit(cache=True, _nrt=False, inline="always")
def node_neuron_synapses(syn, j, layer, lay, slots, pert, a_d, w, cfg, fc_w, fc_b, fc_g):
    """Neuron j's correlator and its synapses (weights, then bias) in node
    mode on the common chip. Returns the saturations of (weight integrators,
    weights, bias integrator, bias)."""
    d, now, then = slots
    fan_in, w_off, b_off = lay.fan_in[layer], lay.w_off[layer], lay.b_off[layer]
    gen = lay.gen_off[layer] + j
    p_d = delayed_perturbation(syn.p_ring, gen, pert[gen] * w.gate, d, now, then)
    valid, update_edge, eta = w.valid, w.update_edge, cfg.eta
    ej = w.bcast * p_d * cfg.kappa if valid else 0.0
    row = w_off + j * fan_in
    th, g = syn.theta[row:row + fan_in], syn.G[row:row + fan_in]
    srt, srg = syn.sr_theta[row:row + fan_in], syn.sr_g[row:row + fan_in]
    sto_w, sto_b, sto_g = stochastic(fc_w), stochastic(fc_b), stochastic(fc_g)
    # One copy of the row per case, each with its branches resolved.
    if update_edge and cfg.g_clear:
        wg, wp = node_synapse_row(fan_in, ej, a_d, valid, True, True, eta, th, g, srt, srg,
                                  fc_w, fc_g, sto_w, sto_g)
    elif update_edge:
        wg, wp = node_synapse_row(fan_in, ej, a_d, valid, True, False, eta, th, g, srt, srg,
                                  fc_w, fc_g, sto_w, sto_g)
    else:
        wg, wp = node_synapse_row(fan_in, ej, a_d, valid, False, False, eta, th, g, srt, srg,
                                  fc_w, fc_g, sto_w, sto_g)
    bg = 0
    bp = 0
    if b_off >= 0:
        bg, bp = integrate_and_update_fast(b_off + j, ej, valid, update_edge, eta, syn.theta,
                                           syn.G, syn.sr_theta, syn.sr_g, fc_b, fc_g, sto_b, sto_g)
    return wg, wp, bg, bp


@njit(cache=True, _nrt=False)
def node_synapses_serial(syn, layer, lay, slots, pert, a_d, w, cfg, fmts, roundings, events):
    """node_neuron_synapses for every neuron of the layer, on one thread.
    (The rows are compiled in a function of their own: inside the cycle
    kernel they made it slow to compile.)"""
    fc_w, fc_b, fc_g = fast_formats(fmts, roundings)
    n_wg = 0
    n_wp = 0
    n_bg = 0
    n_bp = 0
    for j in range(lay.fan_out[layer]):
        wg, wp, bg, bp = node_neuron_synapses(syn, j, layer, lay, slots, pert, a_d, w, cfg, fc_w, fc_b,
                                              fc_g)
        n_wg += wg
        n_wp += wp
        n_bg += bg
        n_bp += bp
    count_saturations(events, layer, n_wg, n_wp, n_bg, n_bp)


@njit(cache=True, _nrt=False)
def node_neuron_synapses_call(syn, j, layer, lay, slots, pert, a_d, w, cfg, fmts, roundings):
    """node_neuron_synapses as a call, for the body of a parallel loop
    (inlined into a prange loop, Numba 0.68 loses writes made through a
    tuple's arrays; a call keeps them), the formats derived here from the
    variant's rounding modes: LLVM compiles this into the loop's body
    (cycle.py), where they are constants."""
    fc_w, fc_b, fc_g = fast_formats(fmts, roundings)
    return node_neuron_synapses(syn, j, layer, lay, slots, pert, a_d, w, cfg, fc_w, fc_b, fc_g)


@functools.cache
def parallel_node_synapses(roundings):
    """node_synapses_parallel(syn, layer, lay, slots, pert, a_d, w, cfg,
    fmts, events) for the fast rows' rounding modes `roundings`
    (chipmap.Variant.roundings, constants of the kernel): node_neuron_synapses
    for every neuron of the layer, shared among numba's threads; the same
    bits as one thread (the neurons are independent, the event counts are
    sums). Compiled for the chip's argument types before the cycle kernel
    that calls it (cycle.prepare): a kernel compiled without the Numba
    runtime cannot compile a parallel one on demand."""
    ROUNDINGS = roundings   # np.int64, as chipmap.fast_roundings makes them

    @njit(parallel=True)
    def node_synapses_parallel(syn, layer, lay, slots, pert, a_d, w, cfg, fmts, events):
        n_wg = 0
        n_wp = 0
        n_bg = 0
        n_bp = 0
        for j in prange(lay.fan_out[layer]):
            wg, wp, bg, bp = node_neuron_synapses_call(syn, j, layer, lay, slots, pert, a_d, w, cfg, fmts,
                                                       ROUNDINGS)
            n_wg += wg
            n_wp += wp
            n_bg += bg
            n_bp += bp
        count_saturations(events, layer, n_wg, n_wp, n_bg, n_bp)

    return cached(node_synapses_parallel, "node_synapses_parallel-" + rounding_tag(roundings))


@njit(cache=True, _nrt=False, inline="always")
def weight_synapse_row(syn, lo, hi, slots, pert, w, cfg, fc_p, fc_g, sto_p, sto_g, g_clear):
    """Synapses lo..hi-1 in weight mode: e_i = C~ p_i(n - d) kappa, and
    integrate_and_update_fast; then this cycle's gated perturbations enter
    the delay line. g_clear (a constant): an update edge that finds G at 0
    (Config.g_clear), so G is neither read nor written. Returns the
    saturations of (G, theta).

    Written so that the loops vectorise: p_i(n - d) comes from one source
    row (the perturbations themselves, gated, when d == 0; else the delay
    line's stage written d cycles ago, read for the whole row before the row
    writes its stage of this cycle, as each synapse did before it), and the
    indices are unsigned (a signed index checks for wrap-around)."""
    d, now, then = slots
    src, scale = (pert, w.gate) if d == 0 else (syn.p_ring[then], 1.0)
    coef, valid, eta = w.bcast, w.valid, cfg.eta
    update_edge = True if g_clear else w.update_edge
    kappa = cfg.kappa
    n_g = 0
    n_p = 0
    for i in range(np.uint64(lo), np.uint64(hi)):
        s_g, s_p = integrate_and_update_fast(i, coef * (src[i] * scale) * kappa, valid, update_edge,
                                             eta, syn.theta, syn.G, syn.sr_theta, syn.sr_g,
                                             fc_p, fc_g, sto_p, sto_g, g_clear)
        n_g += s_g
        n_p += s_p
    if syn.p_ring.shape[0] > 0:
        for i in range(np.uint64(lo), np.uint64(hi)):
            syn.p_ring[now, i] = pert[i] * w.gate
    return n_g, n_p


@njit(cache=True, _nrt=False)
def weight_synapses_fast(syn, layer, lay, slots, pert, w, cfg, fmts, roundings, events):
    """Every synapse of a weight-perturbation layer of the common chip, by
    weight_synapse_row over its weights, then its biases."""
    fan_in, fan_out = lay.fan_in[layer], lay.fan_out[layer]
    w_off, b_off = lay.w_off[layer], lay.b_off[layer]
    fc_w, fc_b, fc_g = fast_formats(fmts, roundings)
    n_weights = fan_out * fan_in
    n_par = n_weights + (fan_out if b_off >= 0 else 0)
    wg = wp = bg = bp = 0
    # One row loop for the weights, then the biases (one copy of the row to
    # compile rather than two).
    for biases in (False, True):
        lo, hi = (w_off + n_weights, w_off + n_par) if biases else (w_off, w_off + n_weights)
        fc_p = fc_b if biases else fc_w
        if cfg.g_clear and w.update_edge:
            n_g, n_p = weight_synapse_row(syn, lo, hi, slots, pert, w, cfg, fc_p, fc_g, stochastic(fc_p),
                                          stochastic(fc_g), True)
        else:
            n_g, n_p = weight_synapse_row(syn, lo, hi, slots, pert, w, cfg, fc_p, fc_g, stochastic(fc_p),
                                          stochastic(fc_g), False)
        if biases:
            bg, bp = n_g, n_p
        else:
            wg, wp = n_g, n_p
    count_saturations(events, layer, wg, wp, bg, bp)


@functools.cache
def general_synapses(correlator, integrator, updater):
    """(weight_synapses_general, node_synapses_general): every synapse of a
    layer by the given rules (mgd_emu.rules: the built-in ones or a user's),
    one synapse at a time, for any integrator, optimizer, noise and overflow.
    The rules are constants of these kernels (a function passed as an
    argument would make the cycle kernel uncacheable)."""

    @njit(_nrt=False, inline="always")
    def update(syn, i, step, optimizer, cfg, fc_p, fc_v, events, p_row, v_row):
        """theta_i <- q_p(updater(theta_i, step) + noise), the step through the
        velocity register first under momentum."""
        if optimizer == OPT_MOMENTUM:
            syn.V[i] = store_fc(cfg.gamma * syn.V[i] + step, fc_v, syn.sr_v, i, events, v_row)
            step = syn.V[i]
        new = updater(syn.theta[i], step, cfg.eta)
        if cfg.weight_sigma != 0.0:
            syn.noise[0], xi = gaussian(syn.noise[0])
            new += cfg.weight_sigma * xi
        syn.theta[i] = store_fc(new, fc_p, syn.sr_theta, i, events, p_row)

    @njit(_nrt=False, inline="always")
    def integrate_and_update(syn, i, is_bias, layer, e, w, kinds, cfg, fcs, events):
        """Integrator G and updater for parameter i, given its correlation e;
        each rule's result is written through its register's format.
        kinds: (integrator, optimizer); fcs: constants of the (weight, bias,
        integrator, velocity) formats (fixedpoint.format_constants)."""
        kind, optimizer = kinds
        fc_w, fc_b, fc_g, fc_v = fcs
        G = syn.G
        base = E_PER_LAYER * layer
        fc_p, p_row = (fc_b, base + E_BIAS) if is_bias else (fc_w, base + E_WEIGHT)
        g_row = base + (E_B_INTEG if is_bias else E_W_INTEG)
        v_row = base + (E_B_VEL if is_bias else E_W_VEL)
        if kind == INTEG_DIGITAL:
            s = store_fc(integrator(G[i], e, cfg.beta, cfg.lam), fc_g, syn.sr_g, i, events, g_row) \
                if w.valid else G[i]
            if w.update_edge:
                update(syn, i, cfg.eta * s, optimizer, cfg, fc_p, fc_v, events, p_row, v_row)
                G[i] = 0.0
            else:
                G[i] = s
        else:
            update(syn, i, cfg.eta * G[i], optimizer, cfg, fc_p, fc_v, events, p_row, v_row)
            G[i] = store_fc(integrator(G[i], e, cfg.beta, cfg.lam), fc_g, syn.sr_g, i, events, g_row)

    @njit(_nrt=False)
    def weight_synapses_general(syn, layer, lay, slots, pert, w, kinds, cfg, fmts, events):
        """Every synapse of a weight-perturbation layer: e_i = correlator(C~,
        p_i(n - d), kappa), then integrate_and_update."""
        d, now, then = slots
        fan_in, fan_out = lay.fan_in[layer], lay.fan_out[layer]
        w_off, b_off = lay.w_off[layer], lay.b_off[layer]
        fcs = synapse_formats(fmts)
        n_weights = fan_out * fan_in
        do_update = w.measure or kinds[0] == INTEG_DIGITAL
        for i in range(w_off, w_off + n_weights + (fan_out if b_off >= 0 else 0)):
            p_d = delayed_perturbation(syn.p_ring, i, pert[i] * w.gate, d, now, then)
            e = correlator(w.bcast, p_d, cfg.kappa) if w.valid else 0.0
            if do_update:
                integrate_and_update(syn, i, i >= w_off + n_weights, layer, e, w, kinds, cfg, fcs, events)

    @njit(_nrt=False)
    def node_synapses_general(syn, layer, lay, slots, pert, a_d, w, kinds, cfg, fmts, events):
        """Every neuron's correlator and synapses of a node-perturbation layer:
        e_j = correlator(C~, p_j(n - d), kappa), e_jk = e_j a_k(n - d) (the
        bias takes e_j itself: x = 1), then integrate_and_update."""
        d, now, then = slots
        fan_in, fan_out = lay.fan_in[layer], lay.fan_out[layer]
        w_off, b_off, gen_off = lay.w_off[layer], lay.b_off[layer], lay.gen_off[layer]
        fcs = synapse_formats(fmts)
        do_update = w.measure or kinds[0] == INTEG_DIGITAL
        for j in range(fan_out):
            p_d = delayed_perturbation(syn.p_ring, gen_off + j, pert[gen_off + j] * w.gate, d, now, then)
            ej = correlator(w.bcast, p_d, cfg.kappa) if w.valid else 0.0
            if not do_update:
                continue
            row = w_off + j * fan_in
            n = fan_in + (1 if b_off >= 0 else 0)
            for k in range(n):
                bias = k == fan_in
                integrate_and_update(syn, b_off + j if bias else row + k, bias, layer,
                                     ej if bias else ej * a_d[k], w, kinds, cfg, fcs, events)

    rules = ",".join(f"{r.py_func.__module__}.{r.py_func.__qualname__}" for r in (correlator, integrator, updater))
    return name_apart(weight_synapses_general, rules), name_apart(node_synapses_general, rules)


@njit(cache=True, _nrt=False, inline="always")
def presynaptic_delayed(syn, layer, lay, slots, a_in):
    """Node mode: a_k(n - d), the layer's presynaptic activity as it was when
    the perturbation now leaving the delay line was applied. Read before this
    cycle's activity is shifted in (presynaptic_shift, after the layer), so
    d == ring reads the oldest stage."""
    d, now, then = slots
    in_off, fan_in = lay.in_off[layer], lay.fan_in[layer]
    return a_in if d == 0 else syn.in_ring[then, in_off:in_off + fan_in]


@njit(cache=True, _nrt=False, inline="always")
def presynaptic_shift(syn, layer, lay, slots, a_in):
    """Node mode: shift this cycle's presynaptic activity into the delay line."""
    d, now, then = slots
    if syn.p_ring.shape[0] > 0:
        in_off = lay.in_off[layer]
        for k in range(lay.fan_in[layer]):
            syn.in_ring[now, in_off + k] = a_in[k]
