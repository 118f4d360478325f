"""Specification of the seeded hardware-like generators (mgd_emu.blocks.prng).

Known answers come from independent big-integer implementations written here
(Python ints masked to 64 bits) and from published constants.  From plain
Python, states are passed back as np.uint64: the kernels return Python ints,
and one of 2**63 or more cannot go to an int64 specialisation compiled before.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgd_emu.blocks.prng import (
    derive_seed,
    gaussian,
    lfsr32_step,
    splitmix64,
    uniform01,
    xorshift64star_next,
)

MASK64 = (1 << 64) - 1
MULT = 0x2545F4914F6CDD1D
TAPS = 0x80200003
SETTINGS = settings(max_examples=200, deadline=None)
words = st.integers(0, MASK64)
nonzero_states = st.integers(1, MASK64)


# --------------------------------------------------------------------------
# Independent reference implementations
# --------------------------------------------------------------------------
def splitmix64_ref(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def xorshift64star_ref(state: int):
    x = state
    x ^= x >> 12
    x ^= (x << 25) & MASK64
    x ^= x >> 27
    return x, (x * MULT) & MASK64


def lfsr32_ref(state: int):
    bit = state & 1
    state >>= 1
    if bit:
        state ^= TAPS
    return state, bit


# --------------------------------------------------------------------------
# SplitMix64 and derive_seed
# --------------------------------------------------------------------------
def test_splitmix64_known_answer_for_seed_zero():
    """The published first output of SplitMix64 seeded with 0."""
    assert int(splitmix64(np.uint64(0))) == 0xE220A8397B1DCDAF


@SETTINGS
@given(words)
def test_splitmix64_matches_reference(x):
    assert int(splitmix64(np.uint64(x))) == splitmix64_ref(x)


@SETTINGS
@given(st.integers(0, 2**63 - 1), st.integers(0, 2**20), st.integers(0, 2**32))
def test_derive_seed_is_the_splitmix_chain_and_nonzero(seed, stream, index):
    z = splitmix64_ref(seed)
    z = splitmix64_ref(z ^ stream)
    z = splitmix64_ref(z ^ index)
    got = int(derive_seed(seed, stream, index))
    assert got == (z or 0x9E3779B97F4A7C15)
    assert got != 0


def test_derive_seed_is_distinct_for_distinct_stream_and_index():
    got = {int(derive_seed(42, stream, index)) for stream in range(16) for index in range(1000)}
    assert len(got) == 16 * 1000


def test_derive_seed_depends_on_the_seed():
    assert int(derive_seed(1, 3, 5)) != int(derive_seed(2, 3, 5))


# --------------------------------------------------------------------------
# xorshift64*
# --------------------------------------------------------------------------
def test_xorshift64star_known_answers_from_state_one():
    """By hand from state 1: 1 ^ (1 << 25) = 0x2000001 (the >> 12 and >> 27
    steps change nothing), output 0x2000001 * 0x2545F4914F6CDD1D mod 2**64."""
    expected = [
        (0x2000001, 0x47E4CE4B896CDD1D),
        (0x4004000802801, 0xABCFA6A8E079651D),
        (0xD004003202803, 0xB9D10D8FEB731F57),
    ]
    assert expected[0][1] == (0x2000001 * MULT) & MASK64
    state = np.uint64(1)
    for new_state, output in expected:
        state, out = xorshift64star_next(state)
        assert (int(state), int(out)) == (new_state, output)


@SETTINGS
@given(nonzero_states)
def test_xorshift64star_matches_reference(state):
    s, out = xorshift64star_next(np.uint64(state))
    assert (int(s), int(out)) == xorshift64star_ref(state)


@SETTINGS
@given(nonzero_states)
def test_xorshift64star_never_reaches_zero(state):
    s = np.uint64(state)
    for _ in range(8):
        s, _ = xorshift64star_next(np.uint64(s))
        assert int(s) != 0


# --------------------------------------------------------------------------
# 32-bit Galois LFSR
# --------------------------------------------------------------------------
def test_lfsr32_known_answers():
    """out = lsb; state >>= 1; state ^= 0x80200003 when out is 1."""
    cases = [
        (1, 0x80200003, 1),
        (2, 1, 0),
        (0x80200003, 0xC0300002, 1),  # 0x40100001 ^ 0x80200003
        (0xFFFFFFFF, 0x7FFFFFFF ^ TAPS, 1),
    ]
    for state, new_state, bit in cases:
        s, b = lfsr32_step(np.uint64(state))
        assert (int(s), int(b)) == (new_state, bit)


@SETTINGS
@given(st.integers(1, 2**32 - 1))
def test_lfsr32_matches_reference_and_stays_a_nonzero_32_bit_state(state):
    s, b = lfsr32_step(np.uint64(state))
    assert (int(s), int(b)) == lfsr32_ref(state)
    assert 0 < int(s) < 2**32


# GF(2)[x] polynomials as Python ints (bit i = coefficient of x**i).
POLY = (1 << 32) | (1 << 22) | (1 << 2) | (1 << 1) | 1  # x^32 + x^22 + x^2 + x + 1


def gf2_mulmod(a: int, b: int, p: int) -> int:
    deg = p.bit_length() - 1
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a >> deg & 1:
            a ^= p
    return result


def gf2_powmod(a: int, e: int, p: int) -> int:
    result = 1
    while e:
        if e & 1:
            result = gf2_mulmod(result, a, p)
        a = gf2_mulmod(a, a, p)
        e >>= 1
    return result


@SETTINGS
@given(st.integers(1, 2**32 - 1))
def test_lfsr32_step_is_division_by_x_modulo_the_polynomial(state):
    """x * S'(x) = S(x) mod P(x), P = 1 + x * taps(x) = x^32 + x^22 + x^2 + x + 1."""
    assert POLY == 1 | (TAPS << 1)
    s, _ = lfsr32_step(np.uint64(state))
    assert gf2_mulmod(int(s), 0b10, POLY) == state


def test_lfsr32_polynomial_is_primitive():
    """x has multiplicative order exactly 2**32 - 1 modulo P, so the step
    (multiplication by x**-1) cycles through all 2**32 - 1 nonzero states.
    2**32 - 1 = 3 * 5 * 17 * 257 * 65537."""
    order = 2**32 - 1
    primes = [3, 5, 17, 257, 65537]
    assert math.prod(primes) == order
    assert gf2_powmod(0b10, order, POLY) == 1
    for q in primes:
        assert gf2_powmod(0b10, order // q, POLY) != 1


def lfsr_bits(seed: int, n: int) -> np.ndarray:
    bits = np.empty(n, dtype=np.int64)
    s = np.uint64(seed)
    for i in range(n):
        s, bits[i] = lfsr32_step(np.uint64(s))
    return bits


def test_lfsr32_bits_are_balanced():
    """Over 100000 steps |mean - 1/2| < 0.01 (the standard error is 0.0016)."""
    bits = lfsr_bits(int(derive_seed(7, 2, 0)) & 0xFFFFFFFF or 1, 100_000)
    assert abs(bits.mean() - 0.5) < 0.01


def test_lfsr32_different_seeds_give_different_sequences():
    a = lfsr_bits(0x12345678, 256)
    b = lfsr_bits(0x12345679, 256)
    assert not np.array_equal(a, b)


# --------------------------------------------------------------------------
# uniform01 and gaussian
# --------------------------------------------------------------------------
@SETTINGS
@given(words)
def test_uniform01_is_top_53_bits_over_2_pow_53(word):
    u = uniform01(np.uint64(word))
    assert u == (word >> 11) / 2**53
    assert 0.0 <= u < 1.0


def test_uniform01_extremes():
    assert uniform01(np.uint64(0)) == 0.0
    assert uniform01(np.uint64(MASK64)) == 1.0 - 2.0**-53


def gaussian_ref(state: int):
    state, w1 = xorshift64star_ref(state)
    state, w2 = xorshift64star_ref(state)
    u1 = 1.0 - (w1 >> 11) / 2**53
    u2 = (w2 >> 11) / 2**53
    return state, math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@SETTINGS
@given(nonzero_states)
def test_gaussian_is_box_muller_of_the_next_two_outputs(state):
    s, z = gaussian(np.uint64(state))
    ref_state, ref_z = gaussian_ref(state)
    assert int(s) == ref_state
    assert z == pytest.approx(ref_z, rel=1e-12, abs=1e-12)


def _unshift_right(y: int, k: int) -> int:
    x = y
    for _ in range(64 // k + 1):
        x = y ^ (x >> k)
    return x


def _unshift_left(y: int, k: int) -> int:
    x = y
    for _ in range(64 // k + 1):
        x = y ^ ((x << k) & MASK64)
    return x


def state_before_output(word: int) -> int:
    """The state whose next xorshift64* output is `word` (inverting the step)."""
    x = (word * pow(MULT, -1, 1 << 64)) & MASK64
    return _unshift_right(_unshift_left(_unshift_right(x, 27), 25), 12)


def test_gaussian_guards_log_zero():
    """First output all ones gives u1 = 2**-53, the smallest value: the draw is
    finite, |z| <= sqrt(-2 ln 2**-53) (about 8.57)."""
    state = state_before_output(MASK64)
    assert xorshift64star_ref(state)[1] == MASK64
    _, z = gaussian(np.uint64(state))
    assert math.isfinite(z)
    assert abs(z) <= math.sqrt(-2.0 * math.log(2.0**-53)) + 1e-12


def test_gaussian_moments():
    """N = 100000 draws of one stream: |mean| < 5 / sqrt(N) (0.016) and
    |std - 1| < 5 / sqrt(2 N) (0.011), five standard errors each."""
    n = 100_000
    s = derive_seed(11, 9, 0)
    z = np.empty(n)
    for i in range(n):
        s, z[i] = gaussian(np.uint64(s))
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.std() - 1.0) < 5 / math.sqrt(2 * n)


def test_gaussian_is_reproducible_and_seed_dependent():
    def draws(seed):
        s, out = derive_seed(seed, 9, 0), []
        for _ in range(16):
            s, z = gaussian(np.uint64(s))
            out.append(z)
        return out

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
