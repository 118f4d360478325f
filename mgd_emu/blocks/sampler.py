"""Input sampler: presents the dataset to the chip in a seeded shuffled order.

Registers owned: the input register x (formats.input), the target y*, the
epoch order, the position in it, the epoch count, the current sample index,
and the sampler's xorshift64* generator.
"""
import numpy as np
from numba import njit

from .layout import C_EPOCH, C_POS, C_SAMPLE, F_INPUT
from .prng import xorshift64star_next
from ..fixedpoint import format_constants
from .register import store_fc


@njit(cache=True, _nrt=False)
def shuffle(order, state):
    """Fisher-Yates: for i = n-1..1: j = next() % (i+1); swap. Returns the state."""
    for i in range(order.shape[0] - 1, 0, -1):
        state, word = xorshift64star_next(state)
        j = np.int64(word % np.uint64(i + 1))
        tmp = order[i]
        order[i] = order[j]
        order[j] = tmp
    return state


@njit(cache=True, _nrt=False)
def load_sample(index, X, Y, x, y, fmts, sr, events, row):
    """x <- q_in(X[index]); y* <- Y[index]."""
    fc_in = format_constants(fmts[F_INPUT])
    for k in range(x.shape[0]):
        x[k] = store_fc(X[index, k], fc_in, sr, k, events, row)
    for k in range(y.shape[0]):
        y[k] = Y[index, k]


@njit(cache=True, _nrt=False)
def sampler_step(x_edge, ctr, order, rng, X, Y, x_next, y_next, fmts, sr, events, row):
    """At an input edge, load the next sample into x_next, y_next (reshuffling
    at the end of an epoch); the engine commits them at the end of the cycle."""
    if not x_edge:
        return
    pos = ctr[C_POS] + 1
    if pos == order.shape[0]:
        pos = 0
        ctr[C_EPOCH] += 1
        rng[0] = shuffle(order, rng[0])
    ctr[C_POS] = pos
    ctr[C_SAMPLE] = order[pos]
    load_sample(order[pos], X, Y, x_next, y_next, fmts, sr, events, row)
