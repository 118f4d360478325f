"""Perturbation generators, one per channel (weight or neuron).

Each multiplexing scheme's state: a 32-bit Galois LFSR per generator (code);
time, frequency and Walsh codes are functions of the code counter and of
tables fixed at build (the order, the frequency plan, the Walsh rows).
"""
import math

import numpy as np
from numba import njit

from .declare import GENERATOR, NEXT, ROM, Reg, record
from .layout import E_PER_LAYER, E_PERT, F_PERTURBATION, MUX_CODE, MUX_FREQUENCY, MUX_TIME
from .prng import lfsr32_step
from ..fixedpoint import format_constants
from .register import store_fc

REGISTERS = (
    Reg("pert", np.float64, ("n_gen",), "perturbation generator outputs p", fmt="perturbation",
        public="generators"),
    Reg("pert_next", np.float64, ("n_gen",), "the next code, committed at a perturbation edge",
        fmt="perturbation", role=NEXT),
    Reg("code", np.int64, (), "codes generated (the code counter)"),
    Reg("lfsr", np.uint64, ("n_gen",), "code multiplexing: each generator's 32-bit LFSR", role=GENERATOR),
    Reg("time_order", np.int64, ("n_gen",), "time multiplexing: the order generators take turns in", role=ROM),
    Reg("freqs", np.float64, ("n_gen",), "frequency multiplexing: each generator's frequency, cycles^-1",
        role=ROM),
    Reg("phases", np.float64, ("n_gen",), "frequency multiplexing: each generator's phase, radians",
        role=ROM),
    Reg("walsh_rows", np.int64, ("n_gen",), "Walsh multiplexing: each generator's Hadamard row", role=ROM),
    Reg("sr", np.uint64, ("n_gen",), "p's stochastic-rounding generators", role=GENERATOR),
)
Generators = record("Generators", REGISTERS, __name__)


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
def generate_codes(gen, mux, code, cfg, lay, fmts, events, p_next):
    """Write code number `code` of every generator into p_next.

    code: LFSR step, bit 1 -> +A, 0 -> -A.   time: only order[code % P] is +A.
    frequency: A sin(2 pi f_i code tau_p + phi_i).   walsh: A H[r_i, code mod N].
    """
    n_gen = p_next.shape[0]
    amplitude = cfg.amplitude
    if mux == MUX_CODE:
        for i in range(n_gen):
            gen.lfsr[i], bit = lfsr32_step(gen.lfsr[i])
            p_next[i] = amplitude if bit else -amplitude
    elif mux == MUX_TIME:
        p_next[:] = 0.0
        p_next[gen.time_order[code % n_gen]] = amplitude
    elif mux == MUX_FREQUENCY:
        t = float(code) * cfg.tau_p
        fc_p = format_constants(fmts[F_PERTURBATION])
        for layer in range(lay.gen_off.shape[0]):
            start, count = lay.gen_off[layer], lay.gen_count[layer]
            row = E_PER_LAYER * layer + E_PERT
            for i in range(start, start + count):
                v = amplitude * math.sin(2.0 * math.pi * gen.freqs[i] * t + gen.phases[i])
                p_next[i] = store_fc(v, fc_p, gen.sr, i, events, row)
    else:
        column = code % cfg.walsh_n
        for i in range(n_gen):
            p_next[i] = amplitude * walsh_sign(gen.walsh_rows[i], column)


@njit(cache=True, _nrt=False)
def generator_step(gen, mux, p_edge, cfg, lay, fmts, events):
    """At a perturbation edge, count the code and write it into pert_next."""
    if p_edge:
        gen.code[0] += 1
        generate_codes(gen, mux, gen.code[0], cfg, lay, fmts, events, gen.pert_next)
