"""Specification of the fixed-point quantisation kernels (mgd_emu.fixedpoint).

Every kernel result is checked against an exact oracle written here with
Python integers and fractions.Fraction -- never against the kernels.

Semantics, for a fixed format of n = int_bits + frac_bits and width
w = signed + n:
  codes       signed [-2**n, 2**n - 1], unsigned [0, 2**n - 1];
  value       code * 2**-frac_bits;
  rounding    of the exact scaled value S = x * 2**frac_bits:
              truncate floor(S); nearest-even: ties to even;
              stochastic: floor(S) + 1 iff (rnd >> 11) / 2**53 < S - floor(S);
  overflow    of the exact rounded integer N: saturate clamps (event 1),
              wrap takes N modulo 2**w into the code range (event 2);
  NaN         code 0, event saturate; +-inf: max/min code, event saturate.
"""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from numba import njit

from mgd_emu.blocks.prng import derive_seed
from mgd_emu.fixedpoint import (
    EVENT_NONE,
    EVENT_SATURATE,
    EVENT_WRAP,
    FLOAT,
    OVERFLOWS,
    Format,
    quantize,
    quantize_array,
    quantize_code,
    quantize_sat_fc,
    format_constants,
    representable,
    requantize_code,
    to_code,
    to_value,
)
from mgd_emu.testing import fixed_formats

MASK64 = (1 << 64) - 1
SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------
# Exact oracle (plain Python integers and Fractions)
# --------------------------------------------------------------------------
def code_range(fmt):
    """(lo, hi, width) from the format's fields."""
    n = fmt.int_bits + fmt.frac_bits
    if fmt.signed:
        return -(1 << n), (1 << n) - 1, n + 1
    return 0, (1 << n) - 1, n


def floor_frac(q: Fraction):
    fl = q.numerator // q.denominator
    return fl, q - fl


def round_exact(q: Fraction, rounding: str, rnd: int) -> int:
    """The integer the rounding mode makes of the exact rational q."""
    fl, r = floor_frac(q)
    if rounding == "truncate":
        return fl
    if rounding == "nearest-even":
        if r > Fraction(1, 2) or (r == Fraction(1, 2) and fl % 2 == 1):
            return fl + 1
        return fl
    return fl + 1 if Fraction(rnd >> 11, 1 << 53) < r else fl


def wrap(n: int, fmt) -> int:
    """The code congruent to n modulo 2**width inside the code range."""
    lo, _, width = code_range(fmt)
    return (n - lo) % (1 << width) + lo


def overflow(n: int, fmt):
    """(code, event) of the exact integer n."""
    lo, hi, _ = code_range(fmt)
    if lo <= n <= hi:
        return n, EVENT_NONE
    if fmt.overflow == "saturate":
        return min(max(n, lo), hi), EVENT_SATURATE
    return wrap(n, fmt), EVENT_WRAP


def oracle_code(x: float, fmt, rnd: int):
    lo, hi, _ = code_range(fmt)
    if math.isnan(x):
        return 0, EVENT_SATURATE
    if math.isinf(x):
        return (hi if x > 0 else lo), EVENT_SATURATE
    return overflow(round_exact(Fraction(x) * 2**fmt.frac_bits, fmt.rounding, rnd), fmt)


def exact_integer(x: float, fmt, rnd: int) -> int:
    """The exact rounded integer N, before overflow."""
    return round_exact(Fraction(x) * 2**fmt.frac_bits, fmt.rounding, rnd)


def oracle_requantize(code: int, frac_in: int, fmt, rnd: int):
    """Integer rule: d = frac_in - frac dropped bits; stochastic rounds up iff
    (rnd >> (64 - d)) < code mod 2**d."""
    d = frac_in - fmt.frac_bits
    if d <= 0:
        n = code << -d
    else:
        fl, low = code >> d, code & ((1 << d) - 1)
        if fmt.rounding == "truncate":
            n = fl
        elif fmt.rounding == "nearest-even":
            half = 1 << (d - 1)
            n = fl + 1 if low > half or (low == half and fl % 2 == 1) else fl
        else:
            n = fl + 1 if (rnd >> (64 - d)) < low else fl
    assert abs(Fraction(code) * Fraction(2)**(fmt.frac_bits - frac_in) - n) < 1  # oracle sanity
    return overflow(n, fmt)


def xorshift64star_ref(state: int):
    """Independent xorshift64*: (new state, output), 64-bit masked big ints."""
    x = state
    x ^= x >> 12
    x ^= (x << 25) & MASK64
    x ^= x >> 27
    return x, (x * 0x2545F4914F6CDD1D) & MASK64


def row(fmt):
    return fmt.row


def call_code(x, fmt, rnd=0):
    code, event = quantize_code(float(x), row(fmt), np.uint64(rnd))
    return int(code), int(event)


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------
# fixed_formats (mgd_emu.testing): widths 1..32, int_bits and frac_bits 0..16,
# signed, rounding and overflow drawn unless pinned.


binary_fractions = st.builds(
    lambda k, j: math.ldexp(float(k), -j),
    st.integers(-(2**40), 2**40), st.integers(0, 40),
)
any_finite = st.floats(allow_nan=False, allow_infinity=False)
huge = st.builds(lambda m, s: s * m, st.floats(1e15, 1.7e308), st.sampled_from([1.0, -1.0]))
words = st.integers(0, MASK64)


@st.composite
def near_range(draw, fmt):
    """Quarter-LSB grid points around (and a few ranges beyond) the code range:
    hits ties, both range ends and wraps by several multiples of 2**width."""
    lo, hi, width = code_range(fmt)
    k = draw(st.integers(4 * lo - 8 * (1 << width), 4 * hi + 8 * (1 << width)))
    return math.ldexp(float(k), -(fmt.frac_bits + 2))


@st.composite
def cases(draw, rounding=None, overflow=None):
    """(format, x) with x exact binary fractions, arbitrary and huge floats."""
    fmt = draw(fixed_formats(rounding=rounding, overflow=overflow))
    x = draw(st.one_of(near_range(fmt), binary_fractions, any_finite, huge))
    return fmt, x


# --------------------------------------------------------------------------
# quantize_code / quantize
# --------------------------------------------------------------------------
@SETTINGS
@given(cases(), words)
def test_code_lies_in_the_format_range(case, rnd):
    fmt, x = case
    code, _ = call_code(x, fmt, rnd)
    assert fmt.min_code <= code <= fmt.max_code


@SETTINGS
@given(cases(), words)
def test_code_and_event_match_the_exact_oracle(case, rnd):
    fmt, x = case
    assert call_code(x, fmt, rnd) == oracle_code(x, fmt, rnd)


@SETTINGS
@given(cases(), words)
def test_quantize_value_is_code_times_lsb_exactly(case, rnd):
    fmt, x = case
    code, event = call_code(x, fmt, rnd)
    value, event2 = quantize(float(x), row(fmt), np.uint64(rnd))
    assert Fraction(value) == Fraction(code, 2**fmt.frac_bits)
    assert math.copysign(1.0, value) == math.copysign(1.0, code)   # code 0 is +0.0, never -0.0
    assert event2 == event


@SETTINGS
@given(cases(rounding="truncate"))
def test_truncate_is_floor_toward_minus_infinity(case):
    fmt, x = case
    n = math.floor(Fraction(x) * 2**fmt.frac_bits)
    assume(fmt.min_code <= n <= fmt.max_code)
    assert call_code(x, fmt) == (n, EVENT_NONE)


@SETTINGS
@given(cases(rounding="nearest-even"))
def test_nearest_even_is_exact_round_half_even(case):
    fmt, x = case
    n = round(Fraction(x) * 2**fmt.frac_bits)  # Fraction.__round__: half to even
    assume(fmt.min_code <= n <= fmt.max_code)
    assert call_code(x, fmt) == (n, EVENT_NONE)


@SETTINGS
@given(fixed_formats(rounding="nearest-even"), st.data())
def test_nearest_even_ties_go_to_the_even_code(fmt, data):
    m = data.draw(st.integers(fmt.min_code, fmt.max_code - 1))
    x = math.ldexp(2 * m + 1, -(fmt.frac_bits + 1))  # exactly halfway m .. m+1
    code, event = call_code(x, fmt)
    assert code == (m if m % 2 == 0 else m + 1)
    assert event == EVENT_NONE


@SETTINGS
@given(cases(rounding="stochastic"), words)
def test_stochastic_rounds_up_iff_uniform_word_below_exact_fraction(case, rnd):
    fmt, x = case
    fl, r = floor_frac(Fraction(x) * 2**fmt.frac_bits)
    n = fl + 1 if Fraction(rnd >> 11, 2**53) < r else fl
    assume(fmt.min_code <= n <= fmt.max_code)
    assert call_code(x, fmt, rnd) == (n, EVENT_NONE)


@SETTINGS
@given(cases(rounding="stochastic", overflow="saturate"), words)
def test_stochastic_lands_on_floor_or_floor_plus_one(case, rnd):
    fmt, x = case
    fl = math.floor(Fraction(x) * 2**fmt.frac_bits)
    assume(fmt.min_code <= fl and fl + 1 <= fmt.max_code)
    code, _ = call_code(x, fmt, rnd)
    assert code in (fl, fl + 1)


def test_stochastic_fraction_is_exact_just_below_zero():
    """S = -(2**-11 + 2**-53 - 2**-62): the exact fraction r = 1 + S is
    g + 2**-62 with g = 1 - 2**-11 - 2**-53 on the 2**-53 grid, so the word
    with u = g rounds up (a float64 1 + S would round r down to g)."""
    fmt = Format("fixed", True, 4, 0, "stochastic", "saturate")
    x = -(2.0**-11 + 2.0**-53 - 2.0**-62)
    k = 2**53 - 2**42 - 1  # u = k / 2**53 = g
    assert Fraction(k, 2**53) == 1 - Fraction(1, 2**11) - Fraction(1, 2**53)
    assert call_code(x, fmt, k << 11) == (0, EVENT_NONE)
    assert call_code(x, fmt, (k + 1) << 11) == (-1, EVENT_NONE)


@SETTINGS
@given(cases(overflow="saturate"), words)
def test_saturate_clamps_to_min_or_max_code_and_reports_it(case, rnd):
    fmt, x = case
    n = exact_integer(x, fmt, rnd)
    assume(not fmt.min_code <= n <= fmt.max_code)
    expected = fmt.max_code if n > fmt.max_code else fmt.min_code
    assert call_code(x, fmt, rnd) == (expected, EVENT_SATURATE)


@SETTINGS
@given(cases(overflow="wrap"), words)
def test_wrap_is_twos_complement_modulo_of_the_exact_integer(case, rnd):
    fmt, x = case
    n = exact_integer(x, fmt, rnd)
    assume(not fmt.min_code <= n <= fmt.max_code)
    _, _, width = code_range(fmt)
    code, event = call_code(x, fmt, rnd)
    assert (code - n) % (1 << width) == 0
    assert code == wrap(n, fmt)
    assert event == EVENT_WRAP


@SETTINGS
@given(cases(), words)
def test_event_is_reported_exactly_when_the_exact_integer_is_out_of_range(case, rnd):
    fmt, x = case
    n = exact_integer(x, fmt, rnd)
    _, event = call_code(x, fmt, rnd)
    in_range = fmt.min_code <= n <= fmt.max_code
    assert (event == EVENT_NONE) == in_range


@pytest.mark.parametrize("x", [1e30, -1e30, 2.0**100 + 2.0**48, -(2.0**62) - 2.0**11,
                               1.7976931348623157e308, -1.7976931348623157e308,
                               2.0**53 + 2.0, 3.0 * 2.0**60 + 2.0**9 + 2.0**8 - 2.0**7])
@pytest.mark.parametrize("fmt", [
    Format("fixed", True, 3, 4, "nearest-even", "wrap"),
    Format("fixed", True, 0, 16, "truncate", "wrap"),
    Format("fixed", False, 5, 16, "nearest-even", "wrap"),
    Format("fixed", True, 15, 16, "truncate", "wrap"),
    Format("fixed", False, 0, 1, "truncate", "wrap"),
    Format("fixed", True, 3, 4, "nearest-even", "saturate"),
    Format("fixed", False, 16, 16, "stochastic", "saturate"),
])
def test_huge_values_saturate_and_wrap_exactly(x, fmt):
    """Scaled values beyond int64 (and beyond float64 range for x ~ 1.8e308)."""
    assert call_code(x, fmt, 12345 << 11) == oracle_code(x, fmt, 12345 << 11)


@njit
def quantize_sat(x, fmt, rnd):
    return quantize_sat_fc(x, format_constants(fmt), rnd)


@SETTINGS
@given(cases(overflow="saturate"), words)
@example((Format("fixed", True, 3, 4, "stochastic"), math.nan), 0)
@example((Format("fixed", False, 3, 4, "truncate"), -math.inf), 0)
@example((Format("fixed", True, 0, 7, "nearest-even"), -1e-300), 0)
def test_branchless_saturating_quantiser_equals_the_exact_oracle(case, rnd):
    """quantize_sat_fc, the form of the vectorised register rows, gives the
    oracle's value, its saturation flag, and +0.0 for code 0."""
    fmt, x = case
    value, saturated = quantize_sat(float(x), fmt.row, np.uint64(rnd))
    code, event = oracle_code(x, fmt, rnd)
    assert np.float64(value).tobytes() == np.float64(math.ldexp(float(code), -fmt.frac_bits)).tobytes()
    assert saturated == (event == EVENT_SATURATE)


@SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True), words)
def test_branchless_saturating_quantiser_passes_floats_through(x, rnd):
    value, saturated = quantize_sat(x, FLOAT.row, np.uint64(rnd))
    assert np.float64(value).tobytes() == np.float64(x).tobytes() and not saturated


@pytest.mark.parametrize("overflow_mode", OVERFLOWS)
def test_nan_is_zero_with_a_saturation_event(overflow_mode):
    fmt = Format("fixed", True, 3, 4, "nearest-even", overflow_mode)
    assert call_code(math.nan, fmt) == (0, EVENT_SATURATE)


@pytest.mark.parametrize("overflow_mode", OVERFLOWS)
@pytest.mark.parametrize("signed", [True, False])
def test_infinities_saturate_in_either_overflow_mode(overflow_mode, signed):
    fmt = Format("fixed", signed, 3, 4, "truncate", overflow_mode)
    assert call_code(math.inf, fmt) == (fmt.max_code, EVENT_SATURATE)
    assert call_code(-math.inf, fmt) == (fmt.min_code, EVENT_SATURATE)


@SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True), words)
def test_float_format_is_the_identity(x, rnd):
    value, event = quantize(x, FLOAT.row, np.uint64(rnd))
    assert np.float64(value).tobytes() == np.float64(x).tobytes()
    assert event == EVENT_NONE


# --------------------------------------------------------------------------
# Stochastic rounding statistics
# --------------------------------------------------------------------------
N_DRAWS = 200_000


def seeds(seed, n):
    return np.array([derive_seed(seed, 7, i) for i in range(n)], dtype=np.uint64)


@pytest.mark.parametrize("x", [2.3, -0.01, -3.97, 0.5 / 16 + 2.0**-20])
def test_stochastic_rounding_is_unbiased(x):
    """s3.4 stochastic: S = x * 16 rounds to floor(S) (error -r) or
    floor(S) + 1 (error 1 - r), a Bernoulli(r) draw per element, so the
    rounding error has mean 0 and standard deviation sqrt(r (1 - r)).
    With N = 200000 independent element generators the mean error must be
    within 5 standard errors: |mean| < 5 sqrt(r (1 - r) / N) (about 0.005)."""
    fmt = Format("fixed", True, 3, 4, "stochastic", "saturate")
    s = Fraction(x) * 16
    fl, r = floor_frac(s)
    out = np.empty(N_DRAWS)
    events = np.zeros(3, dtype=np.int64)
    quantize_array(np.full(N_DRAWS, x), fmt.row, seeds(2024, N_DRAWS), out, events)
    codes = out * 16
    assert set(np.unique(codes)) <= {fl, fl + 1}
    mean_error = (codes - fl).mean() - float(r)
    bound = 5 * math.sqrt(float(r * (1 - r)) / N_DRAWS)
    assert abs(mean_error) < bound
    assert events.tolist() == [0, 0, 0]


def test_stochastic_rounding_is_reproducible_from_the_seed():
    fmt = Format("fixed", True, 3, 4, "stochastic", "wrap")
    x = np.linspace(-9.0, 9.0, 1001)
    runs = []
    for seed in (5, 5, 6):
        state = seeds(seed, x.size)
        out = np.empty_like(x)
        quantize_array(x, fmt.row, state, out, np.zeros(3, dtype=np.int64))
        runs.append((out, state))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[2][0])


# --------------------------------------------------------------------------
# quantize_array
# --------------------------------------------------------------------------
nonzero_states = st.integers(1, MASK64)


@SETTINGS
@given(fixed_formats(), st.data())
def test_quantize_array_matches_oracle_elementwise_and_counts_events(fmt, data):
    """Element i uses rnd_i = output of one xorshift64* step of its own state
    when rounding is stochastic (its state advances by that step), else 0
    (state untouched); events[1] / events[2] grow by the saturations / wraps."""
    n = data.draw(st.integers(0, 24))
    xs = data.draw(st.lists(st.one_of(near_range(fmt), any_finite), min_size=n, max_size=n))
    states = data.draw(st.lists(nonzero_states, min_size=n, max_size=n))
    x = np.array(xs, dtype=np.float64)
    state = np.array(states, dtype=np.uint64)
    out = np.empty(n)
    events = np.array([3, 5, 7], dtype=np.int64)
    quantize_array(x, fmt.row, state, out, events)

    expected_events = [3, 5, 7]
    for i in range(n):
        new_state, rnd = states[i], 0
        if fmt.rounding == "stochastic":
            new_state, rnd = xorshift64star_ref(states[i])
        code, event = oracle_code(xs[i], fmt, rnd)
        assert Fraction(out[i]) == Fraction(code, 2**fmt.frac_bits)
        assert int(state[i]) == new_state
        if event != EVENT_NONE:
            expected_events[event] += 1
    assert events.tolist() == expected_events


@SETTINGS
@given(st.lists(st.floats(allow_nan=True), max_size=16), st.data())
def test_quantize_array_float_format_copies_and_leaves_generators(xs, data):
    states = data.draw(st.lists(nonzero_states, min_size=len(xs), max_size=len(xs)))
    x = np.array(xs, dtype=np.float64)
    state = np.array(states, dtype=np.uint64)
    out = np.empty_like(x)
    events = np.zeros(3, dtype=np.int64)
    quantize_array(x, FLOAT.row, state, out, events)
    assert out.tobytes() == x.tobytes()
    assert state.tolist() == states
    assert events.tolist() == [0, 0, 0]


# --------------------------------------------------------------------------
# requantize_code
# --------------------------------------------------------------------------
@SETTINGS
@given(fixed_formats(), st.integers(-(2**62), 2**62 - 1), st.integers(0, 40), words)
def test_requantize_matches_exact_integer_arithmetic(fmt, code, frac_in, rnd):
    got = requantize_code(np.int64(code), np.int64(frac_in), fmt.row, np.uint64(rnd))
    assert (int(got[0]), int(got[1])) == oracle_requantize(code, frac_in, fmt, rnd)


@SETTINGS
@given(fixed_formats(), st.integers(-(2**62), 2**62 - 1), st.integers(-80, 0))
def test_requantize_left_shifts_beyond_int64_classify_and_wrap_exactly(fmt, code, frac_in):
    """Negative frac_in (code * 2**-frac_in): shifts past 64 bits still give
    the exact saturation / two's complement of the exact integer."""
    got = requantize_code(np.int64(code), np.int64(frac_in), fmt.row, np.uint64(0))
    assert (int(got[0]), int(got[1])) == oracle_requantize(code, frac_in, fmt, 0)


@SETTINGS
@given(fixed_formats(rounding="stochastic"), st.integers(-(2**62), 2**62 - 1),
       st.integers(0, 40), words)
def test_requantize_stochastic_lands_on_floor_or_floor_plus_one(fmt, code, frac_in, rnd):
    fl = math.floor(Fraction(code, 2**frac_in) * 2**fmt.frac_bits)
    assume(fmt.min_code <= fl and fl + 1 <= fmt.max_code)
    got, _ = requantize_code(np.int64(code), np.int64(frac_in), fmt.row, np.uint64(rnd))
    assert got in (fl, fl + 1)


@SETTINGS
@given(fixed_formats(), st.integers(-(2**63), 2**63 - 1), st.integers(63, 140))
def test_requantize_deterministic_rounding_is_exact_for_any_shift(fmt, code, frac_in):
    """Even when more than 63 bits are dropped, truncate is floor and
    nearest-even is round-half-even of the exact rational."""
    assume(fmt.rounding != "stochastic")
    got = requantize_code(np.int64(code), np.int64(frac_in), fmt.row, np.uint64(0))
    n = round_exact(Fraction(code, 2**frac_in) * 2**fmt.frac_bits, fmt.rounding, 0)
    assert (int(got[0]), int(got[1])) == overflow(n, fmt)


@SETTINGS
@given(fixed_formats(), st.integers(-(2**40), 2**40), st.integers(0, 40))
def test_requantize_equals_quantize_of_the_same_exact_value(fmt, code, frac_in):
    """Deterministic rounding sees the same rational through either door."""
    assume(fmt.rounding != "stochastic")
    a = requantize_code(np.int64(code), np.int64(frac_in), fmt.row, np.uint64(0))
    b = quantize_code(math.ldexp(float(code), -frac_in), fmt.row, np.uint64(0))
    assert (int(a[0]), int(a[1])) == (int(b[0]), int(b[1]))


# --------------------------------------------------------------------------
# Plain-Python helpers
# --------------------------------------------------------------------------
@SETTINGS
@given(cases(), words)
def test_to_code_is_the_kernel_code(case, rnd):
    fmt, x = case
    assert to_code(x, fmt, rnd) == oracle_code(x, fmt, rnd)[0]


@SETTINGS
@given(fixed_formats(), st.data())
def test_to_value_is_code_times_lsb(fmt, data):
    code = data.draw(st.integers(fmt.min_code, fmt.max_code))
    assert Fraction(to_value(code, fmt)) == Fraction(code, 2**fmt.frac_bits)


def test_to_value_rejects_out_of_range_codes_and_float_formats():
    fmt = Format("fixed", True, 1, 2, "truncate", "saturate")
    with pytest.raises(ValueError):
        to_value(8, fmt)
    with pytest.raises(ValueError):
        to_value(0, FLOAT)
    with pytest.raises(ValueError):
        to_code(0.0, FLOAT)


@SETTINGS
@given(cases())
@example((Format("fixed", True, 1, 2, "truncate", "saturate"), 1.75))
@example((Format("fixed", True, 1, 2, "truncate", "saturate"), 2.0))
@example((Format("fixed", True, 1, 2, "truncate", "saturate"), -2.0))
def test_representable_iff_exact_code_in_range(case):
    fmt, x = case
    s = Fraction(x) * 2**fmt.frac_bits
    expected = s.denominator == 1 and fmt.min_code <= s <= fmt.max_code
    assert representable(x, fmt) == expected


def test_float_format_represents_everything():
    assert representable(0.1, FLOAT) and representable(1e300, FLOAT)


# --------------------------------------------------------------------------
# Second oracle: apytypes (optional; signed formats, deterministic rounding)
# --------------------------------------------------------------------------
@SETTINGS
@given(fixed_formats(signed=True), st.integers(-(2**62), 2**62 - 1), st.integers(0, 40))
def test_requantize_agrees_with_apytypes(fmt, code, frac_in):
    """apytypes' APyFixed.cast (int_bits there include the sign bit):
    truncate = QuantizationMode.TRN, nearest-even = RND_CONV;
    saturate = OverflowMode.SAT, wrap = WRAP.  The source is first widened
    exactly to the target's fraction bits: apytypes 0.5.1 mis-saturates a
    one-step cast whose left shift reaches 2**63 (e.g. 2**54 << 9 -> -1.0)."""
    apy = pytest.importorskip("apytypes")
    assume(fmt.rounding != "stochastic")
    quant = {"truncate": apy.QuantizationMode.TRN,
             "nearest-even": apy.QuantizationMode.RND_CONV}[fmt.rounding]
    ovf = {"saturate": apy.OverflowMode.SAT, "wrap": apy.OverflowMode.WRAP}[fmt.overflow]
    src = apy.APyFixed(code & MASK64, bits=64, frac_bits=frac_in)
    wide_frac = max(frac_in, fmt.frac_bits)
    src = src.cast(int_bits=64 - frac_in, frac_bits=wide_frac)  # exact
    dst = src.cast(int_bits=fmt.int_bits + 1, frac_bits=fmt.frac_bits,
                   quantization=quant, overflow=ovf)
    width = fmt.width
    bits = int(dst.to_bits())
    expected = bits - (1 << width) if bits >> (width - 1) else bits
    got, _ = requantize_code(np.int64(code), np.int64(frac_in), fmt.row, np.uint64(0))
    assert got == expected


@SETTINGS
@given(fixed_formats(signed=True), st.data())
def test_quantize_code_agrees_with_apytypes(fmt, data):
    """Quarter-LSB grid values in and around the range (ties included), made
    exact in apytypes with two extra fraction bits, then cast as above."""
    apy = pytest.importorskip("apytypes")
    assume(fmt.rounding != "stochastic")
    x = data.draw(near_range(fmt))
    quant = {"truncate": apy.QuantizationMode.TRN,
             "nearest-even": apy.QuantizationMode.RND_CONV}[fmt.rounding]
    ovf = {"saturate": apy.OverflowMode.SAT, "wrap": apy.OverflowMode.WRAP}[fmt.overflow]
    src = apy.APyFixed.from_float(x, int_bits=fmt.int_bits + 8, frac_bits=fmt.frac_bits + 2)
    assert float(src) == x
    dst = src.cast(int_bits=fmt.int_bits + 1, frac_bits=fmt.frac_bits,
                   quantization=quant, overflow=ovf)
    assert to_value(call_code(x, fmt)[0], fmt) == float(dst)
