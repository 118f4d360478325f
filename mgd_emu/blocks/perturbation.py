"""Perturbation generators, one per channel (weight or neuron).

Registers owned: the generator outputs p (formats.perturbation), the code
counter, and each scheme's state: a 32-bit Galois LFSR per generator (code),
nothing else (time, frequency and Walsh are functions of the code counter and
of constants fixed at build: the order, the frequency plan, the Walsh rows).
"""
import math

from numba import njit

from .layout import (E_PER_LAYER, E_PERT, F_PERTURBATION, G_GEN_COUNT, G_GEN_OFF,
                     MUX_CODE, MUX_FREQUENCY, MUX_TIME)
from .prng import lfsr32_step
from ..fixedpoint import format_constants
from .register import store_fc


@njit(cache=True, _nrt=False, inline="always")
def walsh_sign(row, column):
    """H[row, column] of the Sylvester Hadamard matrix: (-1)^popcount(row & column)."""
    v = row & column
    parity = 0
    while v:
        parity ^= 1
        v &= v - 1
    return -1.0 if parity else 1.0


@njit(cache=True, _nrt=False)
def generate_codes(mux, code, amplitude, tau_p, lfsr, time_order, freqs, phases,
                   walsh_rows, walsh_n, geo, fmts, sr, events, p_next):
    """Write code number `code` of every generator into p_next.

    code: LFSR step, bit 1 -> +A, 0 -> -A.   time: only order[code % P] is +A.
    frequency: A sin(2 pi f_i code tau_p + phi_i).   walsh: A H[r_i, code mod N].
    """
    n_gen = p_next.shape[0]
    if mux == MUX_CODE:
        for i in range(n_gen):
            lfsr[i], bit = lfsr32_step(lfsr[i])
            p_next[i] = amplitude if bit else -amplitude
    elif mux == MUX_TIME:
        p_next[:] = 0.0
        p_next[time_order[code % n_gen]] = amplitude
    elif mux == MUX_FREQUENCY:
        t = float(code) * tau_p
        fc_p = format_constants(fmts[F_PERTURBATION])
        for layer in range(geo.shape[0]):
            start, count = geo[layer, G_GEN_OFF], geo[layer, G_GEN_COUNT]
            row = E_PER_LAYER * layer + E_PERT
            for i in range(start, start + count):
                v = amplitude * math.sin(2.0 * math.pi * freqs[i] * t + phases[i])
                p_next[i] = store_fc(v, fc_p, sr, i, events, row)
    else:
        column = code % walsh_n
        for i in range(n_gen):
            p_next[i] = amplitude * walsh_sign(walsh_rows[i], column)
