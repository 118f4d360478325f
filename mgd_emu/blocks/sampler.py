"""Input sampler: presents the dataset to the chip in a seeded shuffled order.

At an input edge it loads the next sample into x_next, y_next (reshuffling at
the end of an epoch); the engine commits them at the end of the cycle.
"""
import numpy as np
from numba import njit

from .declare import GENERATOR, NEXT, ROM, Reg, record
from .layout import F_INPUT
from .prng import xorshift64star_next
from ..fixedpoint import format_constants
from .register import store_fc

REGISTERS = (
    Reg("X", np.float64, ("n_samples", "n_in"), "training inputs", role=ROM),
    Reg("Y", np.float64, ("n_samples", "n_out"), "training targets", role=ROM),
    Reg("order", np.int64, ("n_samples",), "this epoch's order of the samples"),
    Reg("pos", np.int64, (), "position in the epoch's order"),
    Reg("epoch", np.int64, (), "epochs begun after the first"),
    Reg("sample", np.int64, (), "dataset index of the current sample", public="sample_index",
        unit="index"),
    Reg("rng", np.uint64, (), "the shuffle's xorshift64* state", role=GENERATOR),
    Reg("x", np.float64, ("n_in",), "input sample register x", fmt="input", public="input"),
    Reg("y", np.float64, ("n_out",), "target y* of the current sample", public="target"),
    Reg("x_next", np.float64, ("n_in",), "x loaded at an input edge", fmt="input", role=NEXT),
    Reg("y_next", np.float64, ("n_out",), "y* loaded at an input edge", role=NEXT),
    Reg("sr", np.uint64, ("n_in",), "x's stochastic-rounding generators", role=GENERATOR),
)
Sampler = record("Sampler", REGISTERS, __name__)


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
def sampler_step(smp, x_edge, fmts, events, row):
    """At an input edge, load the next sample into x_next, y_next."""
    if not x_edge:
        return
    pos = smp.pos[0] + 1
    if pos == smp.order.shape[0]:
        pos = 0
        smp.epoch[0] += 1
        smp.rng[0] = shuffle(smp.order, smp.rng[0])
    smp.pos[0] = pos
    smp.sample[0] = smp.order[pos]
    load_sample(smp.order[pos], smp.X, smp.Y, smp.x_next, smp.y_next, fmts, smp.sr, events, row)
