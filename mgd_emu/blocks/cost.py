"""Cost unit: cost function, baseline removal (dual path, remeasure or
high-pass), clamp, and digitisation of the cost change.

Registers owned (cu array): cost C and baseline C0 (formats.cost), the cost
change C~ (formats.cost_change), the high-pass state (its output and the
previous cost).
"""
import math

from numba import njit

from .layout import (BASE_DUAL, BASE_HIGHPASS, BASE_REMEASURE, COST_MSE, F_COST,
                     F_COST_CHANGE, TAG_BASELINE, TAG_MEASURE, U_COST, U_COST0,
                     U_CHANGE, U_HP_OUT, U_HP_PREV)
from .prng import gaussian
from .register import store


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
def measure_cost(kind, y, target, sigma, noise_state, fmts, sr, idx, events, row):
    """C = q_cost(cost(y, y*) + sigma * N(0,1))."""
    c = cost_function(kind, y, target)
    if sigma != 0.0:
        noise_state[0], xi = gaussian(noise_state[0])
        c += sigma * xi
    return store(c, fmts, F_COST, sr, idx, events, row)


@njit(cache=True, _nrt=False)
def cost_change(baseline, tag, new_sample, c, c0_path, cu, a_hp, limit, fmts, sr, events, row):
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
        d = c - cu[U_COST0]
    else:
        prev = c if new_sample else cu[U_HP_PREV]
        d = a_hp * (cu[U_HP_OUT] + c - prev)
    if limit > 0.0:
        d = min(max(d, -limit), limit)
    return store(d, fmts, F_COST_CHANGE, sr, 2, events, row), True


@njit(cache=True, _nrt=False)
def cost_unit_step(baseline, tag, c, c0_path, change, valid, cu):
    """Next values of the cost unit's registers."""
    if tag == TAG_MEASURE or tag == TAG_BASELINE:
        cu[U_COST] = c
    if baseline == BASE_DUAL and tag == TAG_MEASURE:
        cu[U_COST0] = c0_path
    elif baseline == BASE_REMEASURE and tag == TAG_BASELINE:
        cu[U_COST0] = c
    elif baseline == BASE_HIGHPASS and valid:
        cu[U_HP_OUT] = change
        cu[U_HP_PREV] = c
    if valid:
        cu[U_CHANGE] = change
