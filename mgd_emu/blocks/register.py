"""Writing a register: quantise a full-width value into the register's format.

Every write goes through `store`, which draws stochastic-rounding bits from
the register element's own xorshift64* generator (only when the format rounds
stochastically) and counts saturation and wrap events per register.
"""
import numpy as np
from numba import njit

from ..fixedpoint import KIND, KIND_FIXED, ROUND_STOCHASTIC, ROUNDING, quantize
from .prng import xorshift64star_next


@njit(cache=True, _nrt=False, inline="always")
def store(x, fmts, cls, sr, idx, events, row):
    """Value register `row` holds after writing full-width `x` in format `cls`.

    sr[idx]: this element's rounding generator (uint64); events[row, 1|2]:
    saturation / wrap counters.
    """
    fmt = fmts[cls]
    if fmt[KIND] != KIND_FIXED:
        return x
    rnd = np.uint64(0)
    if fmt[ROUNDING] == ROUND_STOCHASTIC:
        sr[idx], rnd = xorshift64star_next(sr[idx])
    value, event = quantize(x, fmt, rnd)
    if event != 0:
        events[row, event] += 1
    return value
