"""Writing a register: quantise a full-width value into the register's format.

Every write goes through `store`, which draws stochastic-rounding bits from
the register element's own xorshift64* generator (only when the format rounds
stochastically) and counts saturation and wrap events per register.
"""
import numpy as np
from numba import njit

from ..fixedpoint import FC_FIXED, FC_ROUNDING, ROUND_STOCHASTIC, format_constants, quantize_fc
from .prng import xorshift64star_next


@njit(cache=True, _nrt=False, inline="always")
def store_fc(x, fc, sr, idx, events, row):
    """Value register `row` holds after writing full-width `x` in the format
    whose constants are fc (fixedpoint.format_constants).

    sr[idx]: this element's rounding generator (uint64); events[row, 1|2]:
    saturation / wrap counters. Loops over register elements take fc once,
    outside the loop, so the format's constants stay in machine registers.
    """
    if not fc[FC_FIXED]:
        return x
    rnd = np.uint64(0)
    if fc[FC_ROUNDING] == ROUND_STOCHASTIC:
        sr[idx], rnd = xorshift64star_next(sr[idx])
    value, event = quantize_fc(x, fc, rnd)
    if event != 0:
        events[row, event] += 1
    return value


@njit(cache=True, _nrt=False, inline="always")
def store(x, fmts, cls, sr, idx, events, row):
    """store_fc in format class `cls` of the chip's format table `fmts`."""
    return store_fc(x, format_constants(fmts[cls]), sr, idx, events, row)
