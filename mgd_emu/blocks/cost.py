"""Cost unit: cost function, baseline removal (dual path, remeasure or
high-pass), clamp, and digitisation of the cost change.
"""
import math

import numpy as np
from numba import njit

from .declare import GENERATOR, Reg, record
from .layout import (BASE_DUAL, BASE_HIGHPASS, BASE_REMEASURE, COST_MSE, F_COST,
                     F_COST_CHANGE, TAG_BASELINE, TAG_MEASURE)
from .prng import gaussian
from .register import store

# The cost unit's rounding generators, one per quantiser. (int64 values, not
# Python ints: a kernel given a Python int constant is compiled once per value.)
ROUND_COST, ROUND_COST0, ROUND_CHANGE = np.int64(0), np.int64(1), np.int64(2)

REGISTERS = (
    Reg("cost", np.float64, (), "cost C of the last measurement", fmt="cost", public="cost"),
    Reg("cost0", np.float64, (), "unperturbed cost C0 (baseline)", fmt="cost", public="cost_baseline"),
    Reg("change", np.float64, (), "cost change C~ = C - C0 (or high-passed)", fmt="cost_change",
        public="cost_change"),
    Reg("hp_out", np.float64, (), "high-pass: its last output", fmt="cost_change"),
    Reg("hp_prev", np.float64, (), "high-pass: the previous cost", fmt="cost"),
    Reg("sr", np.uint64, (3,), "stochastic-rounding generators of C, C0 and C~", role=GENERATOR),
    Reg("noise", np.uint64, (), "cost-noise generator", role=GENERATOR),
)
CostUnit = record("CostUnit", REGISTERS, __name__)


@njit(cache=True, _nrt=False)
def cost_function(kind, y, target):
    """mse: mean of (y - y*)^2; cross_entropy: -sum y* log softmax(y)."""
    n = y.shape[0]
    if kind == COST_MSE:
        s = 0.0
        for i in range(n):
            d = y[i] - target[i]
            s += d * d
        return s / n
    m = y[0]
    for i in range(n):
        m = max(m, y[i])
    lse = 0.0
    for i in range(n):
        lse += math.exp(y[i] - m)
    lse = m + math.log(lse)
    s = 0.0
    for i in range(n):
        s -= target[i] * (y[i] - lse)
    return s


@njit(cache=True, _nrt=False)
def measure_cost(cu, kind, y, target, sigma, rounding, fmts, events, row):
    """C = q_cost(cost(y, y*) + sigma * N(0,1)), rounded by generator `rounding`."""
    c = cost_function(kind, y, target)
    if sigma != 0.0:
        cu.noise[0], xi = gaussian(cu.noise[0])
        c += sigma * xi
    return store(c, fmts, F_COST, cu.sr, rounding, events, row)


@njit(cache=True, _nrt=False)
def cost_change(cu, baseline, tag, new_sample, c, c0_path, cfg, fmts, events, row):
    """Combinational C~ for the slot at the cost unit, and whether it is valid.

    dual_path: C~ = C - C0 (C0 from the second path); remeasure: C~ = C - C0
    register; highpass: C~ = a*(C~_prev + C - C_prev), with C_prev := C on
    the first measurement of a new sample.
    """
    if tag != TAG_MEASURE:
        return 0.0, False
    if baseline == BASE_DUAL:
        d = c - c0_path
    elif baseline == BASE_REMEASURE:
        d = c - cu.cost0[0]
    else:
        prev = c if new_sample else cu.hp_prev[0]
        d = cfg.highpass * (cu.hp_out[0] + c - prev)
    limit = cfg.change_limit
    if limit > 0.0:
        d = min(max(d, -limit), limit)
    return store(d, fmts, F_COST_CHANGE, cu.sr, ROUND_CHANGE, events, row), True


@njit(cache=True, _nrt=False)
def cost_unit_step(cu, baseline, tag, c, c0_path, change, valid):
    """Next values of the cost unit's registers."""
    if tag == TAG_MEASURE or tag == TAG_BASELINE:
        cu.cost[0] = c
    if baseline == BASE_DUAL and tag == TAG_MEASURE:
        cu.cost0[0] = c0_path
    elif baseline == BASE_REMEASURE and tag == TAG_BASELINE:
        cu.cost0[0] = c
    elif baseline == BASE_HIGHPASS and valid:
        cu.hp_out[0] = change
        cu.hp_prev[0] = c
    if valid:
        cu.change[0] = change
