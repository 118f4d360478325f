"""Seeded hardware-like random generators.

Every random number the emulated chip uses comes from one of these small,
fully specified generators, so that a run is reproducible bit for bit from
its seed and an independent implementation can reproduce it.  All arithmetic
is on uint64, modulo 2**64; all functions are Numba kernels (callable from
plain Python too).

xorshift64* (Marsaglia's xorshift, with Vigna's multiplicative output)
    state ^= state >> 12; state ^= state << 25; state ^= state >> 27;
    output = state * 0x2545F4914F6CDD1D.
    Three shifts, three xors and one multiply: cheap enough for a chip to
    place one per register element (the bits of stochastic rounding) and per
    noise source, with period 2**64 - 1 and good statistical quality of the
    output (the multiply hides the weak low bits of plain xorshift).  The
    state must be nonzero (zero is a fixed point).

32-bit Galois LFSR, polynomial x^32 + x^22 + x^2 + x + 1
    Right-shifting Galois form: out = state & 1; state >>= 1; if out:
    state ^= 0x80200003.  The mask's bits 31, 21, 1, 0 are the taps 32, 22,
    2, 1 (the maximal-length 32-bit entry of Xilinx XAPP 052): the step is
    multiplication by x^-1 modulo P(x) = 1 + x * M(x) = x^32 + x^22 + x^2 +
    x + 1 (M: the mask as a polynomial), and P is primitive, so every nonzero
    state lies on one cycle of period 2**32 - 1 (checked algebraically in the
    tests and by running the full cycle).  An LFSR is a shift register and a
    few XOR gates: the classic per-synapse generator of +-1 codes
    (code-multiplexed perturbations).  The state must be nonzero.

SplitMix64 (Steele, Lea & Flood)
    splitmix64(x): z = x + 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) *
    0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
    return z ^ (z >> 31) -- i.e. the output of a SplitMix64 generator whose
    state was x (so splitmix64(0) = 0xE220A8397B1DCDAF, the well-known first
    output for seed 0).  A bijective, strongly mixing hash used only at build
    time to derive the independent seed of every on-chip generator from the
    one user seed (as a chip's seeds would be loaded by its host).

uniform01 and gaussian turn 64-bit words into floats the same way everywhere.

From plain Python, pass states as np.uint64 (e.g. ``s, out =
xorshift64star_next(np.uint64(s))``): the kernels return Python ints, and a
Python int of 2**63 or more fails to dispatch ("int too big to convert") once
an int64 specialisation of the kernel exists.
"""
import math

import numpy as np
from numba import njit

LFSR32_TAPS = 0x80200003  # Galois mask of x^32 + x^22 + x^2 + x + 1


@njit(cache=True, _nrt=False, inline="always")
def splitmix64(x):
    """SplitMix64 output for state x: mix64(x + 0x9E3779B97F4A7C15), uint64.

    z = x + 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)          (all modulo 2**64)
    """
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, _nrt=False)
def derive_seed(seed, stream, index):
    """A nonzero uint64 seed for generator `index` of `stream`.

    z = splitmix64(seed); z = splitmix64(z ^ stream); z = splitmix64(z ^ index)
    (seed, stream, index taken modulo 2**64); a zero result (probability
    2**-64) is replaced by 0x9E3779B97F4A7C15, so the value is always a valid
    xorshift64* state.
    """
    z = splitmix64(np.uint64(seed))
    z = splitmix64(z ^ np.uint64(stream))
    z = splitmix64(z ^ np.uint64(index))
    return z if z != np.uint64(0) else np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, _nrt=False, inline="always")
def xorshift64star_next(state):
    """(new state, 64-bit output) of one xorshift64* step; state must be nonzero.

    x ^= x >> 12; x ^= x << 25; x ^= x >> 27; new state = x;
    output = x * 0x2545F4914F6CDD1D (mod 2**64).
    """
    x = np.uint64(state)
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    return x, x * np.uint64(0x2545F4914F6CDD1D)


@njit(cache=True, _nrt=False, inline="always")
def lfsr32_step(state):
    """(new state, output bit) of the 32-bit Galois LFSR; state nonzero, < 2**32.

    The output is the bit shifted out (the state's lsb before the step); when
    it is 1 the taps 0x80200003 are xored into the right-shifted state.
    The state is held in a uint64; the bit is returned as an int64 (0 or 1).
    """
    s = np.uint64(state)
    bit = s & np.uint64(1)
    s >>= np.uint64(1)
    if bit:
        s ^= np.uint64(LFSR32_TAPS)
    return s, np.int64(bit)


@njit(cache=True, _nrt=False, inline="always")
def uniform01(word):
    """Uniform on [0, 1): (word >> 11) * 2**-53, the top 53 bits of a word."""
    return float(np.uint64(word) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, _nrt=False)
def gaussian(state):
    """(new state, standard normal) by Box-Muller from two xorshift64* outputs.

    state, w1 = xorshift64star_next(state)     (first output)
    state, w2 = xorshift64star_next(state)     (second output)
    u1 = 1 - uniform01(w1)                     in [2**-53, 1], so log(u1) is finite
    u2 = uniform01(w2)                         in [0, 1)
    z  = sqrt(-2 ln u1) * cos(2 pi u2)         (the sine partner is discarded)
    """
    state, w1 = xorshift64star_next(state)
    state, w2 = xorshift64star_next(state)
    u1 = 1.0 - uniform01(w1)
    u2 = uniform01(w2)
    return state, math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
