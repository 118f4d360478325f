"""What an integer datapath would buy the node-mode synapse row (issue 12).

One cycle of 200,704 node-perturbation synapses (256 neurons, 784
presynaptic activations each, u0.8) with digits_8bit's formats, updated every cycle
(tau_theta = 1): each synapse integrates e_j a_k into G (s4.11, round to
nearest even, saturate), the weight takes theta - eta G (s2.5, stochastic
rounding from the synapse's own xorshift64* generator, saturate), G clears.

* `float64 row`: the engine's own row (`synapse.node_synapse_row`, the one
  the cycle kernel runs) on float64 registers, its rounding modes constants
  as in the cycle kernel; timed as the engine runs a chip that updates every
  cycle (G holds 0 at the cycle's start, so it is neither read nor written:
  `Config.g_clear`);
* `integer row`: the same arithmetic on integer codes (theta int8, G int16,
  activation codes uint8, the same uint64 generators), quantisation as
  shifts, rounding and saturation as selects, on int64 lanes; timed with G
  skipped as well;
* `generator only`: each synapse's xorshift64* stepped and its top bits
  compared with a code: the least the chip's stochastic weight rounding
  costs.

It checks that the integer row gives the float64 row's bits (exit status 1
if not), both reading and writing G: two cycles that only integrate, with e_j over the chip's range (G
saturates) and rounding ties, then an update, comparing G, the weights, the
generators and the saturation counts; and the weights and generators again
after the timed cycles. It prints ns per synapse, the rows timed in
alternation, median of 3.

    python benchmarks/integer_row.py
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

from mgd_emu.blocks import layout as L
from mgd_emu.blocks.prng import xorshift64star_next
from mgd_emu.blocks.synapse import node_synapse_row
from mgd_emu.chipmap import format_table
from mgd_emu.fixedpoint import ROUND_NEAREST_EVEN, ROUND_STOCHASTIC, format_constants, with_rounding
from mgd_emu.spec import load_chip

FAN_IN, FAN_OUT = 784, 256
FW, FG, FA, FL = 5, 11, 8, 12     # fraction bits: weight s2.5, integrator s4.11, activation u0.8, eta u0.12
FE = 15 + 7                       # e_j = C~ (s0.15) * p_j (s0.7) * kappa (u15.0)
G_SHIFT = FE + FA - FG            # e_j a_k has FE + FA fraction bits; G has FG
T_SHIFT = FL + FG - FW            # eta G has FL + FG; theta has FW


@njit(boundscheck=False)
def float_layer(n_cycles, update, g_clear, ej, a, eta, theta, G, sr_theta, sr_g, fmts):
    # the rounding modes as constants, as the cycle kernel has them (chipmap.Variant.roundings)
    fc_w = with_rounding(format_constants(fmts[L.F_WEIGHT]), ROUND_STOCHASTIC)
    fc_g = with_rounding(format_constants(fmts[L.F_INTEGRATOR]), ROUND_NEAREST_EVEN)
    saturations = 0
    for _ in range(n_cycles):
        for j in range(FAN_OUT):
            r = j * FAN_IN
            th, g, srt, srg = theta[r:r + FAN_IN], G[r:r + FAN_IN], sr_theta[r:r + FAN_IN], sr_g[r:r + FAN_IN]
            # constants in each copy of the row, as node_neuron_synapses calls it
            if update and g_clear:
                n_g, n_p = node_synapse_row(FAN_IN, ej[j], a, True, True, True, eta, th, g, srt, srg, fc_w,
                                            fc_g, True, False)
            elif update:
                n_g, n_p = node_synapse_row(FAN_IN, ej[j], a, True, True, False, eta, th, g, srt, srg, fc_w,
                                            fc_g, True, False)
            else:
                n_g, n_p = node_synapse_row(FAN_IN, ej[j], a, True, False, False, eta, th, g, srt, srg, fc_w,
                                            fc_g, True, False)
            saturations += n_g + n_p
    return saturations


@njit(boundscheck=False, inline="always")
def integer_row(update, g_clear, ej, a, eta, theta, G, sr_theta):
    """G <- sat(rne(G + e_j a_k)); on an update, theta <- sat(sto(theta -
    eta G)) and G <- 0; on codes (int64 arithmetic: e_j a_k reaches 2^38).
    g_clear: G holds 0 (neither read nor written), as in the engine's row.
    Returns the saturations."""
    half = np.int64(1) << (G_SHIFT - 1)
    g_mask = (np.int64(1) << G_SHIFT) - 1
    t_mask = (np.int64(1) << T_SHIFT) - 1
    saturations = 0
    for k in range(np.uint64(0), np.uint64(FAN_IN)):
        e = ej * np.int64(a[k])
        low = e & g_mask          # G is a whole code: the dropped bits are e's
        q = (np.int64(0) if g_clear else np.int64(G[k])) + (e >> G_SHIFT)
        q = q + np.int64((low > half) | ((low == half) & ((q & 1) == 1)))
        sat_g = (q < -32768) | (q > 32767)
        q = min(max(q, -32768), 32767)
        if not update:
            G[k] = np.int16(q)
            saturations += np.int64(sat_g)
            continue
        sr_theta[k], rnd = xorshift64star_next(sr_theta[k])
        u = np.int64(rnd >> np.uint64(64 - T_SHIFT))
        y = (np.int64(theta[k]) << T_SHIFT) - eta * q
        t = (y >> T_SHIFT) + np.int64(u < (y & t_mask))
        sat_t = (t < -128) | (t > 127)
        theta[k] = np.int8(min(max(t, -128), 127))
        if not g_clear:
            G[k] = 0
        saturations += np.int64(sat_g) + np.int64(sat_t)
    return saturations


@njit(boundscheck=False)
def integer_layer(n_cycles, update, g_clear, ej, a, eta, theta, G, sr_theta):
    saturations = 0
    for _ in range(n_cycles):
        for j in range(FAN_OUT):
            r = j * FAN_IN
            th, g, srt = theta[r:r + FAN_IN], G[r:r + FAN_IN], sr_theta[r:r + FAN_IN]
            if update and g_clear:
                saturations += integer_row(True, True, ej[j], a, eta, th, g, srt)
            elif update:
                saturations += integer_row(True, False, ej[j], a, eta, th, g, srt)
            else:
                saturations += integer_row(False, False, ej[j], a, eta, th, g, srt)
    return saturations


@njit(boundscheck=False)
def generator_only(n_cycles, sr_theta, theta):
    for _ in range(n_cycles):
        for k in range(np.uint64(0), np.uint64(sr_theta.shape[0])):
            sr_theta[k], rnd = xorshift64star_next(sr_theta[k])
            theta[k] = np.int8(theta[k] + np.int8(np.int64(rnd >> np.uint64(46)) < 5))
    return 0


def main() -> int:
    chip = load_chip(Path(__file__).resolve().parents[1] / "hw_models" / "digits_8bit.toml")
    fmts = format_table(chip)
    assert (format_constants(fmts[L.F_WEIGHT])[1], format_constants(fmts[L.F_INTEGRATOR])[1]) == (FW, FG), \
        "digits_8bit's formats changed"
    rng = np.random.default_rng(1)
    n = FAN_IN * FAN_OUT
    # e_j codes as the chip forms them, C~ (s0.15) x p (+-1 or +-2 LSB of s0.7) x kappa (2^14 in
    # u15.0): |e_j a_k| reaches 16, so G saturates. A quarter of the rows are odd multiples of
    # 2^11 and the first 64 activations are 128 (0.5): e_j a_k then ends in exactly half an LSB of
    # G, a tie for round-to-nearest-even.
    ej = (rng.integers(-2 ** 15, 2 ** 15, FAN_OUT) * rng.choice([-2, -1, 1, 2], FAN_OUT) * 2 ** 14)
    ties = rng.random(FAN_OUT) < 0.25
    ej[ties] = (2 * rng.integers(-2 ** 12, 2 ** 12, ties.sum()) + 1) * 2 ** 11
    ej = ej.astype(np.int64)
    a = rng.integers(0, 256, FAN_IN).astype(np.uint8)
    a[:64] = 128
    theta0 = rng.integers(-128, 128, n).astype(np.int8)
    sr0 = rng.integers(1, 2 ** 63, n).astype(np.uint64)
    eta = 205   # 0.05 in u0.12
    f_args = (ej * 2.0 ** -FE, a * 2.0 ** -FA, eta * 2.0 ** -FL, theta0 * 2.0 ** -FW, np.zeros(n),
              sr0.copy(), np.ones(n, np.uint64), fmts)
    i_args = (ej, a, eta, theta0.copy(), np.zeros(n, np.int16), sr0.copy())

    # The same bits: two cycles that only integrate (G accumulates, rounds, saturates), then one
    # that updates; G, the weights, the generators and the saturation counts compared.
    same = True
    for update in (False, False, True):
        sat_f = float_layer(1, update, False, *f_args)
        sat_i = integer_layer(1, update, False, *i_args)
        same &= (sat_f == sat_i and np.array_equal(f_args[4], i_args[4] * 2.0 ** -FG)
                 and np.array_equal(f_args[3], i_args[3] * 2.0 ** -FW)
                 and np.array_equal(f_args[5], i_args[5]))
    ties_seen = int(np.count_nonzero((np.outer(ej, a.astype(np.int64)) & ((1 << G_SHIFT) - 1))
                                     == 1 << (G_SHIFT - 1)))

    g_args = (sr0.copy(), theta0.copy())
    # timed as the engine runs such a chip: G holds 0 (Config.g_clear)
    rows = (("float64 row", lambda c: float_layer(c, True, True, *f_args)),
            ("integer row", lambda c: integer_layer(c, True, True, *i_args)),
            ("generator only", lambda c: generator_only(c, *g_args)))
    for _, fn in rows:
        fn(1)
    times = {name: [] for name, _ in rows}
    for _ in range(3):
        for name, fn in rows:
            t = time.perf_counter()
            fn(50)
            times[name].append((time.perf_counter() - t) / 50)
    same &= np.array_equal(f_args[3], i_args[3] * 2.0 ** -FW) and np.array_equal(f_args[5], i_args[5])
    base = statistics.median(times["float64 row"])
    print(f"node-mode synapse row, {n:,} synapses, tau_theta = 1 (median of 3, alternating)")
    for name, _ in rows:
        t = statistics.median(times[name])
        print(f"  {name:15s} {t * 1e3:7.3f} ms a cycle  {t / n * 1e9:5.2f} ns a synapse  {base / t:5.2f}x")
    print(f"integer row leaves the float64 row's bits (G, weights, generators, saturation counts; "
          f"{sat_f:,} saturations and {ties_seen:,} rounding ties in the last checked cycle): "
          f"{'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    sys.exit(main())
