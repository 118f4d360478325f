"""The "speed of light": the least compiled work one MGD cycle can cost.

`SpeedOfLight(sizes, mode, fixed=True)` runs n cycles of multiplexed
gradient descent on a multilayer perceptron of a chip's layer sizes, doing
only the work every emulator of that chip must do per synapse and per
cycle, in the fastest number representation, with no quantisation, no
saturation, no registers, no latencies, no event counting, no probes and no
block structure:

* weight perturbation (``mode="weight"``): per synapse, one xorshift32 step
  for its +-A code; the perturbed ((w + p) a) and the unperturbed (w a0)
  multiply-accumulate; the correlation C~ p, the integration G += C~ p and,
  every tau_theta cycles, the update w -= eta G, G = 0.
* node perturbation (``mode="node"``): per neuron one xorshift32 step; per
  synapse both paths' multiply-accumulate (one where both paths read the
  same input, the first layer), the correlation e_j a_k, the integration
  and the amortised update.

Per neuron: the nonlinearity (both paths); per cycle: the sample fetch and
the cost of both paths.

Fixed-point chips (``fixed=True``, kernel `sol_int`): every register is the
integer code in the narrowest type that holds it: int8 weights (s2.5), int16
integrators (s4.11), uint8 activations and inputs (u0.8, u1.7), one uint32
xorshift32 state per generator; the multiply-accumulates sum into int32, the
nonlinearity is a 4096-entry table of activation codes (a lookup per neuron
and path), the cost is an integer sum of squares. Float chips
(``fixed=False``, kernel `sol_float`): float64 registers, the sigmoid by
`exp`, compiled with fastmath so that the sums may be reassociated (the
emulator may not: a limit, not a model).

The work of a cycle is fused into one pass over each layer's synapses: at
synapse (j, k) the previous cycle's correlation is integrated (and, on an
update cycle, applied to the weight), then the generator steps and the new
weight enters both multiply-accumulates. The results are those of doing the
phases one after another (the update of cycle t lands before cycle t+1
reads the weight); one pass reads and writes each synapse's registers once
per cycle, which is the least memory traffic the work allows. Every inner
loop is branch-free (an update cycle picks a second copy of the loop), and
the per-synapse generators are an array of uint32 lanes stepped inside the
row loop, so the row loops vectorise (benchmarks/README.md shows it: the
same kernels compiled with LLVM's vectorisers off, and the vector
instructions in their assembly).

`SpeedOfLight(..., stochastic=True)` adds what the
emulated 8-bit chips also must do: their weights round stochastically on
every update, each from its own xorshift64* generator, so every update steps
one 64-bit generator per weight and rounds by its top bits. Benchmarks
report the emulator against both (`SoL` and `SoL+sr`).

With tau_theta = 1 every cycle updates, so the integrators hold 0 between
cycles: the kernels are then compiled not to read or write them (as the
emulator's synapse rows do on such a chip).

The previous, float64 kernel with branches in its inner loops is kept as
`SpeedOfLightV1` (`sol_v1_serial`, `sol_v1_parallel`), for the old column of
the benchmarks. Each kernel is compiled serial and with `prange` over a
layer's neurons (`parallel=True`), to show what a second thread can give.

The emulator's throughput is reported as a fraction of this kernel's on the
same layer sizes (``benchmarks/run.py``).
"""
from __future__ import annotations

import contextlib
import functools
import math

import numba
import numpy as np
from numba import njit, prange

from mgd_emu.blocks.prng import xorshift64star_next

# ---------------------------------------------------------------- v2: integer and float kernels

LUT_BITS = 12            # the activation table: 4096 entries over z in [-8, 8)
LUT_SIZE = 1 << LUT_BITS
Z_SHIFT = 7              # z (units 2^-15) >> 7: units 2^-8, the table's step
ETA_SHIFT = 16           # w -= (eta * G) >> 16
CORR_SHIFT = 8           # G += (e_j * a_k) >> 8


@njit(inline="always")
def xorshift32(s):
    """One xorshift32 step (13, 17, 5) of a uint32 state."""
    s = np.uint32(s ^ np.uint32(s << np.uint32(13)))
    s = np.uint32(s ^ np.uint32(s >> np.uint32(17)))
    return np.uint32(s ^ np.uint32(s << np.uint32(5)))


ETA_MASK = np.int32((1 << ETA_SHIFT) - 1)


@njit(inline="always")
def updated_weight(th, g, eta, sr, k, stochastic):
    """The weight code after w -= eta G: (eta G) >> ETA_SHIFT (floor); or,
    when stochastic, rounded as the emulated chips round their weights:
    synapse k's xorshift64* (in sr) stepped, and the result one code up
    with probability (the dropped bits) / 2**ETA_SHIFT."""
    if not stochastic:
        return th - ((g * eta) >> ETA_SHIFT)
    full = (th << ETA_SHIFT) - g * eta
    sr[k], rnd = xorshift64star_next(sr[k])
    u = np.int32(rnd >> np.uint64(64 - ETA_SHIFT))
    return (full >> ETA_SHIFT) + np.int32(u < (full & ETA_MASK))


@njit(inline="always")
def sign_code(s):
    """+1 or -1 (int32) from a generator state's top bit, without a branch."""
    return np.int32(np.int32(s >> np.uint32(31)) * np.int32(2) - np.int32(1))


@njit(inline="always")
def cycle_rows(cycle, n_samples, acts):
    """(s, s_prev, a_cur, a_prev): this and the last cycle's sample, and the
    perturbed path's activations of this and the last cycle (acts alternates)."""
    cur = cycle & 1
    return cycle % n_samples, (cycle - 1) % n_samples, acts[cur], acts[1 - cur]


@njit(inline="always")
def layer_inputs(layer, X, s, s_prev, a_cur, a_prev, act0, in_off, fan_in):
    """(a_in, a0_in, ap_in): a layer's input on the perturbed path, on the
    unperturbed path, and on the perturbed path a cycle ago (node mode
    correlates with it)."""
    if layer == 0:
        return X[s], X[s], X[s_prev]
    return (a_cur[in_off:in_off + fan_in], act0[in_off:in_off + fan_in],
            a_prev[in_off:in_off + fan_in])


def _sol_int_for(STOCHASTIC, CLEARS):
    """_sol_int, its weights rounded stochastically on update or truncated;
    CLEARS: every cycle updates (tau_theta = 1), so the integrators hold 0
    between cycles and an update neither reads nor writes them. Both are
    constants of the kernel: the loops stay branch-free."""

    def _sol_int(n_cycles, sizes, theta, G, gen, sr, X, Y, node, tau_theta, eta, lut, acts, act0, e, carry):
        """n_cycles of MGD on integer codes; returns the last cost code.

        theta int8 [n_params], G int16 [n_params] (per layer the weights
        row-major [fan_out, fan_in], then the biases); gen uint32 [n_generators]
        (n_params in weight mode, n_neurons in node mode); sr uint64 [n_params]
        the weights' stochastic-rounding generators, or empty for updates that
        truncate (updated_weight); X uint8 [samples,
        n_in], Y uint8 [samples, n_out]; lut uint8 [LUT_SIZE]; acts uint8
        [2, n_neurons] (this cycle's and the last cycle's perturbed path,
        alternating), act0 uint8 [n_neurons]; e int32 [n_neurons] (node mode:
        the last cycle's e_j); carry int64 [3]: cycle, last change, last cost.
        """
        n_layers = sizes.shape[0] - 1
        n_samples = X.shape[0]
        n_out = sizes[n_layers]
        cost = np.int32(0)
        for _ in range(n_cycles):
            cycle = carry[0]
            s, s_prev, a_cur, a_prev = cycle_rows(cycle, n_samples, acts)
            chg = np.int32(carry[1])          # the last cycle's C~ (0 before the first)
            update = (cycle % tau_theta) == 0
            w_off = 0
            n_off = 0
            in_off = 0
            for layer in range(n_layers):
                fan_in, fan_out = sizes[layer], sizes[layer + 1]
                b_off = w_off + fan_in * fan_out
                a_in, a0_in, ap_in = layer_inputs(layer, X, s, s_prev, a_cur, a_prev, act0, in_off, fan_in)
                if node:   # one generator step per neuron (a vector loop over the layer)
                    for j in range(fan_out):
                        gen[n_off + j] = xorshift32(gen[n_off + j])
                for j in prange(fan_out):
                    base = w_off + j * fan_in
                    # row views indexed by k >= 0: no negative-index select, the loops vectorise
                    th_r = theta[base:base + fan_in]
                    g_r = G[base:base + fan_in]
                    gen_r = gen[base:base + fan_in] if not node else gen[:0]
                    sr_r = sr[base:base + fan_in] if STOCHASTIC else sr[:0]
                    z = np.int32(0)
                    z0 = np.int32(0)
                    if not node:
                        if update:
                            for k in range(fan_in):
                                st = gen_r[k]
                                g = (np.int32(0) if CLEARS else np.int32(g_r[k])) + chg * sign_code(st)
                                th = updated_weight(np.int32(th_r[k]), g, eta, sr_r, k, STOCHASTIC)
                                th_r[k] = np.int8(th)
                                if not CLEARS:
                                    g_r[k] = np.int16(0)
                                st = xorshift32(st)
                                gen_r[k] = st
                                th = np.int32(np.int8(th)) << 2
                                z = np.int32(z + (th + sign_code(st)) * np.int32(a_in[k]))
                                z0 = np.int32(z0 + th * np.int32(a0_in[k]))
                        else:
                            for k in range(fan_in):
                                st = gen_r[k]
                                g_r[k] = np.int16(np.int32(g_r[k]) + chg * sign_code(st))
                                st = xorshift32(st)
                                gen_r[k] = st
                                th = np.int32(th_r[k]) << 2
                                z = np.int32(z + (th + sign_code(st)) * np.int32(a_in[k]))
                                z0 = np.int32(z0 + th * np.int32(a0_in[k]))
                        # bias: a synapse whose input is 1
                        st = gen[b_off + j]
                        g = np.int32(G[b_off + j]) + chg * sign_code(st)
                        th = np.int32(theta[b_off + j])
                        if update:
                            th = updated_weight(th, g, eta, sr, b_off + j, STOCHASTIC)
                            g = np.int32(0)
                        theta[b_off + j] = np.int8(th)
                        G[b_off + j] = np.int16(g)
                        st = xorshift32(st)
                        gen[b_off + j] = st
                        th = np.int32(np.int8(th)) << 10          # units 2^-15
                        z = z + th + (sign_code(st) << 8)
                        z0 = z0 + th
                    else:
                        ej = e[n_off + j]
                        if layer == 0 and update:
                            for k in range(fan_in):
                                g = ((np.int32(0) if CLEARS else np.int32(g_r[k]))
                                     + ((ej * np.int32(ap_in[k])) >> CORR_SHIFT))
                                th = updated_weight(np.int32(th_r[k]), g, eta, sr_r, k, STOCHASTIC)
                                th_r[k] = np.int8(th)
                                if not CLEARS:
                                    g_r[k] = np.int16(0)
                                z = np.int32(z + (np.int32(np.int8(th)) << 2) * np.int32(a_in[k]))
                            z0 = z
                        elif layer == 0:
                            for k in range(fan_in):
                                g_r[k] = np.int16(np.int32(g_r[k])
                                                       + ((ej * np.int32(ap_in[k])) >> CORR_SHIFT))
                                z = np.int32(z + (np.int32(th_r[k]) << 2) * np.int32(a_in[k]))
                            z0 = z
                        elif update:
                            for k in range(fan_in):
                                g = ((np.int32(0) if CLEARS else np.int32(g_r[k]))
                                     + ((ej * np.int32(ap_in[k])) >> CORR_SHIFT))
                                th = updated_weight(np.int32(th_r[k]), g, eta, sr_r, k, STOCHASTIC)
                                th_r[k] = np.int8(th)
                                if not CLEARS:
                                    g_r[k] = np.int16(0)
                                th = np.int32(np.int8(th)) << 2
                                z = np.int32(z + th * np.int32(a_in[k]))
                                z0 = np.int32(z0 + th * np.int32(a0_in[k]))
                        else:
                            for k in range(fan_in):
                                g_r[k] = np.int16(np.int32(g_r[k])
                                                       + ((ej * np.int32(ap_in[k])) >> CORR_SHIFT))
                                th = np.int32(th_r[k]) << 2
                                z = np.int32(z + th * np.int32(a_in[k]))
                                z0 = np.int32(z0 + th * np.int32(a0_in[k]))
                        g = np.int32(G[b_off + j]) + (ej >> CORR_SHIFT)
                        th = np.int32(theta[b_off + j])
                        if update:
                            th = updated_weight(th, g, eta, sr, b_off + j, STOCHASTIC)
                            g = np.int32(0)
                        theta[b_off + j] = np.int8(th)
                        G[b_off + j] = np.int16(g)
                        th = np.int32(np.int8(th)) << 10
                        z = z + th + (sign_code(gen[n_off + j]) << 8)
                        z0 = z0 + th
                    # the nonlinearity: a table lookup per path
                    i = min(max((z >> Z_SHIFT) + LUT_SIZE // 2, 0), LUT_SIZE - 1)
                    i0 = min(max((z0 >> Z_SHIFT) + LUT_SIZE // 2, 0), LUT_SIZE - 1)
                    a_cur[n_off + j] = lut[i]
                    act0[n_off + j] = lut[i0]
                if layer > 0:
                    in_off += fan_in
                w_off = b_off + fan_out
                n_off += fan_out
            # ---- cost unit, both paths
            out = n_off - n_out
            c = np.int32(0)
            c0 = np.int32(0)
            for j in range(n_out):
                d = np.int32(a_cur[out + j]) - np.int32(Y[s, j])
                d0 = np.int32(act0[out + j]) - np.int32(Y[s, j])
                c += d * d
                c0 += d0 * d0
            change = (c - c0) >> 4
            cost = c
            if node:   # each neuron's e_j = C~ p_j, for next cycle's correlation
                for n in range(e.shape[0]):
                    e[n] = change * sign_code(gen[n])
            carry[0] = cycle + 1
            carry[1] = change
        carry[2] = cost
        return cost

    return _sol_int


@njit(inline="always")
def mse_both_paths(act, act0, Y, s, out, n_out):
    """The MSE of the perturbed and of the unperturbed outputs against Y[s]."""
    c = 0.0
    c0 = 0.0
    for j in range(n_out):
        d = act[out + j] - Y[s, j]
        d0 = act0[out + j] - Y[s, j]
        c += d * d
        c0 += d0 * d0
    return c / n_out, c0 / n_out


@njit(inline="always")
def sign_float(s):
    """+1.0 or -1.0 from a generator state's top bit, without a branch."""
    return float(np.int32(s >> np.uint32(31)) * np.int32(2) - np.int32(1))


def _sol_float_for(CLEARS):
    """_sol_float; CLEARS as in _sol_int_for."""

    def _sol_float(n_cycles, sizes, theta, G, gen, X, Y, node, tau_theta, eta, amplitude, acts, act0, e,
                   carry, last):
        """n_cycles of MGD in float64 (the layout of _sol_int; acts, act0, e
        float64, carry[0] the cycle, last[0] the last change, last[1] the last
        cost); returns the last cost."""
        n_layers = sizes.shape[0] - 1
        n_samples = X.shape[0]
        n_out = sizes[n_layers]
        cost = 0.0
        for _ in range(n_cycles):
            cycle = carry[0]
            s, s_prev, a_cur, a_prev = cycle_rows(cycle, n_samples, acts)
            chg = last[0] * amplitude
            update = (cycle % tau_theta) == 0
            w_off = 0
            n_off = 0
            in_off = 0
            for layer in range(n_layers):
                fan_in, fan_out = sizes[layer], sizes[layer + 1]
                b_off = w_off + fan_in * fan_out
                a_in, a0_in, ap_in = layer_inputs(layer, X, s, s_prev, a_cur, a_prev, act0, in_off, fan_in)
                if node:
                    for j in range(fan_out):
                        gen[n_off + j] = xorshift32(gen[n_off + j])
                for j in prange(fan_out):
                    base = w_off + j * fan_in
                    # row views indexed by k >= 0: no negative-index select, the loops vectorise
                    th_r = theta[base:base + fan_in]
                    g_r = G[base:base + fan_in]
                    gen_r = gen[base:base + fan_in] if not node else gen[:0]
                    z = 0.0
                    z0 = 0.0
                    if not node:
                        if update:
                            for k in range(fan_in):
                                st = gen_r[k]
                                th = th_r[k] - eta * ((0.0 if CLEARS else g_r[k]) + chg * sign_float(st))
                                th_r[k] = th
                                if not CLEARS:
                                    g_r[k] = 0.0
                                st = xorshift32(st)
                                gen_r[k] = st
                                z += (th + amplitude * sign_float(st)) * a_in[k]
                                z0 += th * a0_in[k]
                        else:
                            for k in range(fan_in):
                                st = gen_r[k]
                                g_r[k] += chg * sign_float(st)
                                st = xorshift32(st)
                                gen_r[k] = st
                                th = th_r[k]
                                z += (th + amplitude * sign_float(st)) * a_in[k]
                                z0 += th * a0_in[k]
                        st = gen[b_off + j]
                        g = G[b_off + j] + chg * sign_float(st)
                        th = theta[b_off + j]
                        if update:
                            th -= eta * g
                            g = 0.0
                        theta[b_off + j] = th
                        G[b_off + j] = g
                        st = xorshift32(st)
                        gen[b_off + j] = st
                        z += th + amplitude * sign_float(st)
                        z0 += th
                    else:
                        ej = e[n_off + j]
                        if layer == 0 and update:
                            for k in range(fan_in):
                                th = th_r[k] - eta * ((0.0 if CLEARS else g_r[k]) + ej * ap_in[k])
                                th_r[k] = th
                                if not CLEARS:
                                    g_r[k] = 0.0
                                z += th * a_in[k]
                            z0 = z
                        elif layer == 0:
                            for k in range(fan_in):
                                g_r[k] += ej * ap_in[k]
                                z += th_r[k] * a_in[k]
                            z0 = z
                        elif update:
                            for k in range(fan_in):
                                th = th_r[k] - eta * ((0.0 if CLEARS else g_r[k]) + ej * ap_in[k])
                                th_r[k] = th
                                if not CLEARS:
                                    g_r[k] = 0.0
                                z += th * a_in[k]
                                z0 += th * a0_in[k]
                        else:
                            for k in range(fan_in):
                                g_r[k] += ej * ap_in[k]
                                th = th_r[k]
                                z += th * a_in[k]
                                z0 += th * a0_in[k]
                        g = G[b_off + j] + ej
                        th = theta[b_off + j]
                        if update:
                            th -= eta * g
                            g = 0.0
                        theta[b_off + j] = th
                        G[b_off + j] = g
                        z += th + amplitude * sign_float(gen[n_off + j])
                        z0 += th
                    a_cur[n_off + j] = 1.0 / (1.0 + math.exp(-z))
                    act0[n_off + j] = 1.0 / (1.0 + math.exp(-z0))
                if layer > 0:
                    in_off += fan_in
                w_off = b_off + fan_out
                n_off += fan_out
            out = n_off - n_out
            cost, cost0 = mse_both_paths(a_cur, act0, Y, s, out, n_out)
            change = cost - cost0
            if node:
                for n in range(e.shape[0]):
                    e[n] = change * amplitude * sign_float(gen[n])
            carry[0] = cycle + 1
            last[0] = change
        last[1] = cost
        return cost

    return _sol_float


@functools.cache
def sol_kernel(fixed=True, stochastic=False, clears=False, parallel=False, vectorize=True):
    """The v2 kernel, compiled serial or with `prange` over a layer's
    neurons; `vectorize=False`: a serial copy to be compiled with LLVM's loop
    and SLP vectorisers off (`SpeedOfLight(..., vectorize=False)`), the
    evidence that the rows vectorise. fixed: the integer kernel, else the
    float64 one; stochastic, clears: as in _sol_int_for."""
    if parallel and not vectorize:
        raise ValueError("the copy without vectorisers is serial")
    if fixed:
        return njit(nogil=True, parallel=parallel)(_sol_int_for(stochastic, clears))
    if stochastic:
        raise ValueError("stochastic rounding is for the integer kernel (fixed-point chips)")
    return njit(nogil=True, fastmath=True, parallel=parallel)(_sol_float_for(clears))


@contextlib.contextmanager
def vectorisers_off():
    """Compile with LLVM's loop and SLP vectorisers off (numba reads
    config.LOOP_VECTORIZE / SLP_VECTORIZE when it builds a module's passes,
    as NUMBA_LOOP_VECTORIZE=0 NUMBA_SLP_VECTORIZE=0 would for a process)."""
    saved = numba.config.LOOP_VECTORIZE, numba.config.SLP_VECTORIZE
    numba.config.LOOP_VECTORIZE = numba.config.SLP_VECTORIZE = 0
    try:
        yield
    finally:
        numba.config.LOOP_VECTORIZE, numba.config.SLP_VECTORIZE = saved


def vector_instructions(dispatcher) -> int:
    """Instructions on 256- or 512-bit vector registers (ymm, zmm) in the
    assembly of every compiled signature of `dispatcher`."""
    n = 0
    for sig in dispatcher.signatures:
        n += sum(1 for line in dispatcher.inspect_asm(sig).splitlines()
                 if ("%ymm" in line or "%zmm" in line) and not line.lstrip().startswith((".", "#")))
    return n


def sigmoid_table() -> np.ndarray:
    """u0.8 codes of the sigmoid at z = (i - LUT_SIZE / 2) * 2^-8."""
    z = (np.arange(LUT_SIZE) - LUT_SIZE // 2) / 256.0
    return np.clip(np.rint(255.0 / (1.0 + np.exp(-z))), 0, 255).astype(np.uint8)


class SpeedOfLight:
    """Arrays of one network shape, ready for `run(n)` (module docstring).

    sizes: layer sizes (input first); mode: "weight" or "node"; fixed: the
    integer kernel (fixed-point chips) or the float64 one; 64 random
    samples with one-hot targets; tau_theta: cycles per update;
    stochastic: the weights round stochastically on every update, as the
    emulated 8-bit chips' weight format does (one xorshift64* step a
    weight, `updated_weight`); else the update truncates.
    """

    def __init__(self, sizes, mode="weight", fixed=True, seed=0, parallel=False, tau_theta=1,
                 amplitude=2.0 ** -7, eta=0.1, vectorize=True, stochastic=False):
        sizes = np.asarray(sizes, dtype=np.int64)
        rng = np.random.default_rng(seed)
        n_params = int(sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:])))
        n_neurons = int(sizes[1:].sum())
        n_gen = n_params if mode == "weight" else n_neurons
        self.sizes, self.n_params, self.fixed = sizes, n_params, bool(fixed)
        self.node = mode == "node"
        self.tau_theta = int(tau_theta)
        X = rng.random((64, int(sizes[0]))) < 0.5
        Y = np.eye(int(sizes[-1]))[rng.integers(0, int(sizes[-1]), 64)]
        self.gen = rng.integers(1, 2 ** 32, n_gen, dtype=np.uint64).astype(np.uint32)
        if stochastic and not fixed:
            raise ValueError("stochastic rounding is for the integer kernel (fixed-point chips)")
        if stochastic and not vectorize:
            raise ValueError("the stochastic kernel has no copy compiled without vectorisers")
        # the weights' stochastic-rounding generators (xorshift64*, one a weight), or none
        self.sr = np.random.default_rng(seed + 1).integers(1, 2 ** 63, n_params if stochastic else 0,
                                                           dtype=np.uint64)
        self.carry = np.zeros(3, dtype=np.int64)
        if self.fixed:
            self.X = np.ascontiguousarray(X * 128, dtype=np.uint8)          # u1.7 codes of 0/1
            self.Y = np.ascontiguousarray(Y * 255, dtype=np.uint8)          # u0.8 codes
            self.theta = rng.integers(-64, 64, n_params).astype(np.int8)    # s2.5 codes
            self.G = np.zeros(n_params, dtype=np.int16)                     # s4.11 codes
            self.acts = np.zeros((2, n_neurons), dtype=np.uint8)
            self.act0 = np.zeros(n_neurons, dtype=np.uint8)
            self.e = np.zeros(n_neurons, dtype=np.int32)
            self.eta = np.int32(round(eta * 2 ** 12))
            self.lut = sigmoid_table()
        else:
            self.X = np.ascontiguousarray(X, dtype=np.float64)
            self.Y = np.ascontiguousarray(Y, dtype=np.float64)
            self.theta = rng.uniform(-0.5, 0.5, n_params)
            self.G = np.zeros(n_params)
            self.acts = np.zeros((2, n_neurons))
            self.act0 = np.zeros(n_neurons)
            self.e = np.zeros(n_neurons)
            self.last = np.zeros(2)
            self.eta, self.amplitude = float(eta), float(amplitude)
        self.kernel = sol_kernel(self.fixed, bool(stochastic), self.tau_theta == 1, bool(parallel), bool(vectorize))
        if not vectorize:   # compile (or find) the copy without vectorisers now
            with vectorisers_off():
                self.kernel.compile(tuple(numba.typeof(a) for a in self.args(1)))

    def args(self, n_cycles: int) -> tuple:
        if self.fixed:
            return (int(n_cycles), self.sizes, self.theta, self.G, self.gen, self.sr, self.X, self.Y, self.node,
                    self.tau_theta, self.eta, self.lut, self.acts, self.act0, self.e, self.carry)
        return (int(n_cycles), self.sizes, self.theta, self.G, self.gen, self.X, self.Y, self.node,
                self.tau_theta, self.eta, self.amplitude, self.acts, self.act0, self.e, self.carry,
                self.last)

    def run(self, n_cycles: int):
        return self.kernel(*self.args(n_cycles))


# ---------------------------------------------------------------- v1: float64, branches inside

LFSR32_TAPS = np.uint64(0x80200003)


def _sol(n_cycles, sizes, theta, G, lfsr, X, Y, mode, amplitude, kappa, eta, tau_theta,
         act, act0, pert):
    """Run n_cycles of MGD; returns the last cost (so nothing is optimised away).

    sizes: int64 layer sizes; theta, G: float64 [n_params] (per layer the
    weights row-major [fan_out, fan_in], then the biases); lfsr: uint64, one
    state per generator (n_params in weight mode, n_neurons in node mode);
    act, act0: float64 [n_neurons] scratch (perturbed / unperturbed path);
    pert: float64 [n_generators] scratch, this cycle's codes.
    """
    n_layers = sizes.shape[0] - 1
    n_samples = X.shape[0]
    n_out = sizes[n_layers]
    n_gen = pert.shape[0]
    last_cost = 0.0
    for cycle in range(n_cycles):
        s = cycle % n_samples
        # ---- perturbation generators: one LFSR step each
        for i in prange(n_gen):
            st = lfsr[i]
            bit = st & np.uint64(1)
            st >>= np.uint64(1)
            if bit:
                st ^= LFSR32_TAPS
            lfsr[i] = st
            pert[i] = amplitude if bit else -amplitude
        # ---- forward, both paths
        w_off = 0
        n_off = 0
        in_off = 0
        for layer in range(n_layers):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            b_off = w_off + fan_in * fan_out
            for j in prange(fan_out):
                z = 0.0
                z0 = 0.0
                base = w_off + j * fan_in
                if layer == 0:
                    if mode == 0:
                        for k in range(fan_in):
                            a = X[s, k]
                            z += (theta[base + k] + pert[base + k]) * a
                            z0 += theta[base + k] * a
                    else:
                        for k in range(fan_in):
                            a = X[s, k]
                            z += theta[base + k] * a
                            z0 += theta[base + k] * a
                else:
                    if mode == 0:
                        for k in range(fan_in):
                            z += (theta[base + k] + pert[base + k]) * act[in_off + k]
                            z0 += theta[base + k] * act0[in_off + k]
                    else:
                        for k in range(fan_in):
                            z += theta[base + k] * act[in_off + k]
                            z0 += theta[base + k] * act0[in_off + k]
                z += theta[b_off + j]
                z0 += theta[b_off + j]
                if mode == 0:
                    z += pert[b_off + j]
                else:
                    z += pert[n_off + j]
                act[n_off + j] = 1.0 / (1.0 + math.exp(-z))
                act0[n_off + j] = 1.0 / (1.0 + math.exp(-z0))
            if layer > 0:
                in_off += fan_in
            w_off = b_off + fan_out
            n_off += fan_out
        # ---- cost unit, dual path
        out = n_off - n_out
        last_cost, cost0 = mse_both_paths(act, act0, Y, s, out, n_out)
        change = last_cost - cost0
        update = (cycle + 1) % tau_theta == 0
        # ---- synapses: correlate, integrate, update (amortised)
        w_off = 0
        n_off = 0
        in_off = 0
        for layer in range(n_layers):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            b_off = w_off + fan_in * fan_out
            for j in prange(fan_out):
                base = w_off + j * fan_in
                if mode == 0:
                    for k in range(fan_in):
                        g = G[base + k] + change * pert[base + k] * kappa
                        if update:
                            theta[base + k] -= eta * g
                            g = 0.0
                        G[base + k] = g
                    g = G[b_off + j] + change * pert[b_off + j] * kappa
                else:
                    ej = change * pert[n_off + j] * kappa
                    for k in range(fan_in):
                        a = X[s, k] if layer == 0 else act[in_off + k]
                        g = G[base + k] + ej * a
                        if update:
                            theta[base + k] -= eta * g
                            g = 0.0
                        G[base + k] = g
                    g = G[b_off + j] + ej
                if update:
                    theta[b_off + j] -= eta * g
                    g = 0.0
                G[b_off + j] = g
            if layer > 0:
                in_off += fan_in
            w_off = b_off + fan_out
            n_off += fan_out
    return last_cost


sol_v1_serial = njit(cache=False, nogil=True)(_sol)
sol_v1_parallel = njit(cache=False, nogil=True, parallel=True)(_sol)


class SpeedOfLightV1:
    """Arrays of one network shape, ready for `run(n)`.

    sizes: layer sizes (input first); mode: "weight" or "node"; X, Y: the
    dataset (default: 64 random 0/1 samples with one-hot targets).
    """

    def __init__(self, sizes, mode="weight", X=None, Y=None, seed=0, parallel=False,
                 tau_theta=1, amplitude=2.0 ** -7, eta=0.1):
        sizes = np.asarray(sizes, dtype=np.int64)
        rng = np.random.default_rng(seed)
        n_params = int(sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:])))
        n_neurons = int(sizes[1:].sum())
        n_gen = n_params if mode == "weight" else n_neurons
        if X is None:
            X = (rng.random((64, int(sizes[0]))) < 0.5).astype(np.float64)
            Y = np.eye(int(sizes[-1]))[rng.integers(0, int(sizes[-1]), 64)]
        self.sizes = sizes
        self.n_params = n_params
        self.mode = 0 if mode == "weight" else 1
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.Y = np.ascontiguousarray(Y, dtype=np.float64)
        self.theta = rng.uniform(-0.5, 0.5, n_params)
        self.G = np.zeros(n_params)
        self.lfsr = rng.integers(1, 2 ** 32, n_gen, dtype=np.uint64)
        self.act = np.zeros(n_neurons)
        self.act0 = np.zeros(n_neurons)
        self.pert = np.zeros(n_gen)
        self.amplitude, self.eta, self.tau_theta = float(amplitude), float(eta), int(tau_theta)
        self.kappa = 1.0 / (amplitude * amplitude)
        self.kernel = sol_v1_parallel if parallel else sol_v1_serial

    def run(self, n_cycles: int) -> float:
        return self.kernel(int(n_cycles), self.sizes, self.theta, self.G, self.lfsr, self.X,
                           self.Y, self.mode, self.amplitude, self.kappa, self.eta,
                           self.tau_theta, self.act, self.act0, self.pert)


if __name__ == "__main__":  # a quick look: python benchmarks/speed_of_light.py
    import argparse
    import time

    argparse.ArgumentParser(description="A quick look at the speed-of-light kernels: cycles/s and "
                            "synapse-cycles/s of each (v2 integer, v2 integer with stochastic rounding, "
                            "v2 float, v1 float) on four layer shapes, both modes. "
                            "benchmarks/run.py compares the emulator with them.").parse_args()

    for sizes in ([2, 2, 1], [49, 8, 4], [64, 64, 10], [784, 256, 10]):
        for mode in ("weight", "node"):
            for label, sol in (("v2 int", SpeedOfLight(sizes, mode, fixed=True)),
                               ("v2 int sr", SpeedOfLight(sizes, mode, fixed=True, stochastic=True)),
                               ("v2 float", SpeedOfLight(sizes, mode, fixed=False)),
                               ("v1 float", SpeedOfLightV1(sizes, mode))):
                sol.run(10)
                n = max(10, int(2e7 // sol.n_params))
                t = time.perf_counter()
                sol.run(n)
                dt = time.perf_counter() - t
                print(f"{str(sizes):>16} {mode:>6} {label:>8}: {n / dt:12.4g} cycles/s "
                      f"{n * sol.n_params / dt:12.4g} synapse-cycles/s")
