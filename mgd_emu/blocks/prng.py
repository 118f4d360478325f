"""Seeded hardware-like random generators.

- xorshift64* (Marsaglia/Vigna): shifts 12, 25, 27 then multiply by
  0x2545F4914F6CDD1D; a cheap generator a chip can place per register element
  for stochastic rounding, and the source of every noise draw.
- A 32-bit Galois LFSR (x^32 + x^22 + x^2 + x + 1, mask 0x80200003, maximal
  length 2^32 - 1): the per-synapse pseudo-random code generator.
- SplitMix64, to derive independent nonzero seeds from (seed, stream, index).
"""
import math

import numpy as np
from numba import njit

_MASK64 = 0xFFFFFFFFFFFFFFFF


@njit(cache=True, inline="always")
def splitmix64(x):
    """SplitMix64 finaliser of x + 0x9E3779B97F4A7C15 (uint64 arithmetic)."""
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def derive_seed(seed, stream, index):
    """A nonzero uint64 seed for generator `index` of `stream`."""
    z = splitmix64(np.uint64(seed))
    z = splitmix64(z ^ np.uint64(stream))
    z = splitmix64(z ^ np.uint64(index))
    return z if z != np.uint64(0) else np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def xorshift64star_next(state):
    """(next state, 64-bit output) of xorshift64*; state must be nonzero."""
    x = np.uint64(state)
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    return x, x * np.uint64(0x2545F4914F6CDD1D)


@njit(cache=True, inline="always")
def lfsr32_step(state):
    """(next state, output bit) of the 32-bit Galois LFSR.

    The output is the bit shifted out (the state's lsb before the step); when
    it is 1 the taps 0x80200003 are xored into the shifted state.
    """
    s = np.uint64(state)
    bit = s & np.uint64(1)
    s >>= np.uint64(1)
    if bit:
        s ^= np.uint64(0x80200003)
    return s, np.int64(bit)


@njit(cache=True, inline="always")
def uniform01(word):
    """Uniform on [0, 1) from the top 53 bits of a 64-bit word."""
    return float(np.uint64(word) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def gaussian(state):
    """(next state, standard normal) by Box-Muller from two xorshift64* outputs.

    u1 = 1 - uniform01(first output) (in (0, 1], so log is finite),
    u2 = uniform01(second output); z = sqrt(-2 ln u1) cos(2 pi u2).
    """
    state, w1 = xorshift64star_next(state)
    state, w2 = xorshift64star_next(state)
    u1 = 1.0 - uniform01(w1)
    u2 = uniform01(w2)
    return state, math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
