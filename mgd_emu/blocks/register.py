"""Writing a register: quantise a full-width value into the register's format.

Every write goes through `write_fc` (or `store_fc`, `store`, which also count
its event), which draws stochastic-rounding bits from the register element's
own xorshift64* generator (only when the format rounds stochastically);
saturation and wrap events are counted per register. The vectorised synapse
rows use fixedpoint.quantize_sat_fc, the same function without branches.
"""
import numpy as np
from numba import njit

from ..fixedpoint import FC_FIXED, FC_ROUNDING, ROUND_STOCHASTIC, format_constants, quantize_fc
from .declare import Reg, record
from .prng import xorshift64star_next

# Columns of an event-counter row (fixedpoint.EVENT_*: 1 saturate, 2 wrap).
REGISTERS = (
    Reg("events", np.int64, ("n_events", 3), "saturation (column 1) and wrap (column 2) counts "
        "per register: E_PER_LAYER rows a layer (layout.E_*), then the global rows"),
)
Monitor = record("Monitor", REGISTERS, __name__)


@njit(cache=True, _nrt=False, inline="always")
def write_fc(x, fc, sr, idx):
    """(value, event) of writing full-width `x` to a register element in the
    format whose constants are fc (fixedpoint.format_constants).

    sr[idx]: the element's rounding generator (uint64), stepped only when
    the format rounds stochastically. event: fixedpoint.EVENT_*, for the
    caller to count. Loops over register elements take fc once, outside the
    loop, so the format's constants stay in machine registers.
    """
    if not fc[FC_FIXED]:
        return x, np.int64(0)
    rnd = np.uint64(0)
    if fc[FC_ROUNDING] == ROUND_STOCHASTIC:
        sr[idx], rnd = xorshift64star_next(sr[idx])
    return quantize_fc(x, fc, rnd)


@njit(cache=True, _nrt=False, inline="always")
def store_fc(x, fc, sr, idx, events, row):
    """write_fc, counting its saturation or wrap in events[row, 1 | 2]."""
    value, event = write_fc(x, fc, sr, idx)
    if event != 0:
        events[row, event] += 1
    return value


@njit(cache=True, _nrt=False, inline="always")
def store(x, fmts, cls, sr, idx, events, row):
    """store_fc in format class `cls` of the chip's format table `fmts`."""
    return store_fc(x, format_constants(fmts[cls]), sr, idx, events, row)
