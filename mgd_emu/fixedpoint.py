"""Number formats and the quantisation kernels every register goes through.

A register of a fixed-point format holds an integer *code*; its value is
``code * 2**-frac_bits``.  Width = signed + int_bits + frac_bits (int_bits
excludes the sign bit).  A float format is the ideal, infinite-precision case:
quantisation is the identity.

For the compiled kernels a format is packed into one int64 row (``Format.row``):

    [KIND, SIGNED, INT_BITS, FRAC_BITS, ROUNDING, OVERFLOW]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Row layout and enumerations shared with the kernels.
KIND, SIGNED, INT_BITS, FRAC_BITS, ROUNDING, OVERFLOW = range(6)
ROW_LEN = 6

KIND_FLOAT, KIND_FIXED = 0, 1
ROUND_TRUNCATE, ROUND_NEAREST_EVEN, ROUND_STOCHASTIC = 0, 1, 2
OVERFLOW_SATURATE, OVERFLOW_WRAP = 0, 1

ROUNDINGS = ("truncate", "nearest-even", "stochastic")
OVERFLOWS = ("saturate", "wrap")
KINDS = ("float", "fixed")

# Quantisation events, as counted per register.
EVENT_NONE, EVENT_SATURATE, EVENT_WRAP = 0, 1, 2

MAX_WIDTH = 32


@dataclass(frozen=True)
class Format:
    """A signal's number format.

    kind: "float" (ideal) or "fixed".
    signed: two's-complement signed (True) or unsigned.
    int_bits: integer bits, excluding the sign bit.
    frac_bits: fraction bits; one LSB is 2**-frac_bits.
    rounding: "truncate" (toward minus infinity, as a hardware shift),
        "nearest-even", or "stochastic" (fed by a seeded on-chip generator).
    overflow: "saturate" (clamp to the range) or "wrap" (two's complement).
    """

    kind: str = "float"
    signed: bool = True
    int_bits: int = 0
    frac_bits: int = 0
    rounding: str = "nearest-even"
    overflow: str = "saturate"

    @property
    def is_fixed(self) -> bool:
        return self.kind == "fixed"

    @property
    def width(self) -> int:
        """Total bits of the register (0 for a float format)."""
        if not self.is_fixed:
            return 0
        return int(self.signed) + self.int_bits + self.frac_bits

    @property
    def lsb(self) -> float:
        """Value of one code step (0.0 for a float format)."""
        return 2.0 ** -self.frac_bits if self.is_fixed else 0.0

    @property
    def min_code(self) -> int:
        if not self.is_fixed:
            raise ValueError("a float format has no codes")
        return -(1 << (self.int_bits + self.frac_bits)) if self.signed else 0

    @property
    def max_code(self) -> int:
        if not self.is_fixed:
            raise ValueError("a float format has no codes")
        return (1 << (self.int_bits + self.frac_bits)) - 1

    @property
    def min_value(self) -> float:
        return self.min_code * self.lsb if self.is_fixed else -np.inf

    @property
    def max_value(self) -> float:
        return self.max_code * self.lsb if self.is_fixed else np.inf

    @property
    def row(self) -> np.ndarray:
        """The format packed for the compiled kernels (int64[ROW_LEN])."""
        return np.array(
            [
                KINDS.index(self.kind),
                int(self.signed),
                self.int_bits,
                self.frac_bits,
                ROUNDINGS.index(self.rounding),
                OVERFLOWS.index(self.overflow),
            ],
            dtype=np.int64,
        )

    def describe(self) -> str:
        """Short human form, e.g. ``s1.6 nearest-even saturate`` or ``float``."""
        if not self.is_fixed:
            return "float"
        return (
            f"{'s' if self.signed else 'u'}{self.int_bits}.{self.frac_bits} "
            f"{self.rounding} {self.overflow}"
        )


FLOAT = Format()



# --------------------------------------------------------------------------
# Kernels
#
# Exact semantics (shared by every kernel below; a fixed format of width
# w = signed + int_bits + frac_bits, n = int_bits + frac_bits):
#
#   code range   signed: [-2**n, 2**n - 1]      unsigned: [0, 2**n - 1]
#   scaling      s = x * 2**frac_bits, exact (a power-of-two scaling).
#   rounding     truncate      floor(s) (toward minus infinity, as an
#                              arithmetic right shift does);
#                nearest-even  nearest integer, ties to the even one;
#                stochastic    floor(s) + 1 iff u < r, where r = s - floor(s)
#                              is the exact fractional part and
#                              u = (rnd >> 11) * 2**-53 (the top 53 bits of the
#                              64-bit random word `rnd`), so P(up) is r rounded
#                              up to a multiple of 2**-53 (exactly r whenever r
#                              is such a multiple, e.g. for |s| >= 1).
#   overflow     applied to the exact rounded integer N:
#                saturate  clamp to [min_code, max_code], EVENT_SATURATE;
#                wrap      two's complement: the code congruent to N modulo
#                          2**w in the code range (unsigned: N mod 2**w),
#                          EVENT_WRAP.
#                An in-range N gives EVENT_NONE.
#   NaN          becomes code 0 with EVENT_SATURATE (any overflow mode).
#   +-inf        saturates to max_code / min_code with EVENT_SATURATE in
#                either overflow mode (there is no integer to wrap).
#
# requantize_code applies the same rules to an integer code with frac_in
# fraction bits, in pure integer arithmetic (see its docstring for the
# stochastic rule with integer random bits).
# --------------------------------------------------------------------------
import math  # noqa: E402

from numba import njit  # noqa: E402

from .blocks.prng import xorshift64star_next  # noqa: E402

_TWO_52 = 4503599627370496.0           # 2**52: floats at least this are integers
_TWO_62 = 4611686018427387904.0        # 2**62: below it a rounded float fits int64
_TWO_M53 = 1.0 / 9007199254740992.0    # 2**-53


@njit(cache=True, _nrt=False, inline="always")
def _pow2(k):
    """2.0**k, exactly: a shift for 0 <= k <= 62 (math.ldexp is a library call)."""
    if 0 <= k <= 62:
        return float(np.int64(1) << k)
    return math.ldexp(1.0, k)


@njit(cache=True, _nrt=False, inline="always")
def _code_range(fmt):
    """(min_code, max_code, width) of fixed format row `fmt` (int64s)."""
    n = fmt[INT_BITS] + fmt[FRAC_BITS]
    hi = (np.int64(1) << n) - 1
    if fmt[SIGNED] != 0:
        return -(np.int64(1) << n), hi, n + 1
    return np.int64(0), hi, n


@njit(cache=True, _nrt=False, inline="always")
def format_constants(fmt):
    """The constants of format row `fmt` that the kernels use, derived once
    (a tuple, passed by value, hoisted out of the per-element loops):

        (fixed, frac_bits, min_code, max_code, width, rounding, overflow,
         2**frac_bits, 2**-frac_bits, float(min_code), float(max_code))

    For a float format only `fixed` (False) matters.
    """
    lo, hi, width = _code_range(fmt)
    frac = fmt[FRAC_BITS]
    return (fmt[KIND] == KIND_FIXED, frac, lo, hi, width, fmt[ROUNDING], fmt[OVERFLOW],
            _pow2(frac), 1.0 / _pow2(frac), float(lo), float(hi))


# Fields of format_constants(fmt).
(FC_FIXED, FC_FRAC, FC_LO, FC_HI, FC_WIDTH, FC_ROUNDING, FC_OVERFLOW, FC_SCALE, FC_LSB,
 FC_LO_F, FC_HI_F) = range(11)


def rounding_tag(roundings) -> str:
    """A name for kernels compiled for these rounding modes: "round-" and
    each mode's initial (t, n, s), e.g. "round-ssn"."""
    return "round-" + "".join(ROUNDINGS[r][0] for r in roundings)


@njit(cache=True, _nrt=False, inline="always")
def with_rounding(fc, rounding):
    """fc with its rounding mode replaced by `rounding`: the same mode, given
    as a constant of the calling kernel, so that the compiler keeps only
    that rounding in each quantisation (chipmap.Variant.roundings)."""
    fixed, frac, lo, hi, width, _, overflow, scale, lsb, lo_f, hi_f = fc
    return fixed, frac, lo, hi, width, rounding, overflow, scale, lsb, lo_f, hi_f


@njit(cache=True, _nrt=False, inline="always")
def _overflow(v, lo, hi, width, overflow):
    """(code, event) of the exact integer v (int64) under overflow mode
    `overflow` of a format with code range [lo, hi] and `width` bits."""
    if v >= lo and v <= hi:
        return v, np.int64(EVENT_NONE)
    if overflow == OVERFLOW_SATURATE:
        return (hi if v > hi else lo), np.int64(EVENT_SATURATE)
    # Low `width` bits of v's two's complement, sign-extended when signed.
    m = v & ((np.int64(1) << width) - 1)
    if m > hi:
        m -= np.int64(1) << width
    return m, np.int64(EVENT_WRAP)


@njit(cache=True, _nrt=False)
def _round_scaled(s, rounding, rnd):
    """The integer (as a float64) that `rounding` makes of finite s, |s| < 2**62.

    Every operation is exact: for |s| >= 2**52 s is already an integer; below,
    floor(s) + 0.5 is representable, s - floor(s) is exact except when
    floor(s) == -1, where the stochastic test is rewritten as u - 1 < s.
    """
    if abs(s) >= _TWO_52:
        return s
    fl = math.floor(s)
    if rounding == ROUND_TRUNCATE:
        return fl
    if rounding == ROUND_NEAREST_EVEN:
        half = fl + 0.5
        if s > half:
            return fl + 1.0
        if s < half:
            return fl
        return fl if fl == 2.0 * math.floor(0.5 * fl) else fl + 1.0
    return _round_stochastic(s, rnd)


@njit(cache=True, _nrt=False, inline="always")
def _round_stochastic(s, rnd):
    """floor(s) + 1 iff u < s - floor(s), u = (rnd >> 11) * 2**-53.

    For |s| >= 2**52 s is an integer, s - floor(s) = 0 and s comes back;
    so do NaN and the infinities.
    """
    fl = np.floor(s)   # a float (math.floor gives an int64)
    u = float(rnd >> np.uint64(11)) * _TWO_M53
    # up = u < s - fl, which is exact unless fl == -1; there it is u - 1 < s
    # (u - 1 exact). Written as selects: `up` is a coin flip, a branch on it
    # would be mispredicted half the time.
    minus_one = fl == -1.0
    lhs = u - 1.0 if minus_one else u
    rhs = s if minus_one else s - fl
    return fl + (1.0 if lhs < rhs else 0.0)


@njit(cache=True, _nrt=False)
def quantize_code(x, fmt, rnd):
    """(code, event) of the full-precision float64 x written in fixed format `fmt`.

    fmt: int64 row (Format.row) of a fixed format; rnd: uint64 random word,
    used only by stochastic rounding (u = (rnd >> 11) * 2**-53, up iff u < r).
    Exact for every finite x, including |x * 2**frac| >= 2**62 (saturate
    clamps; wrap reduces x modulo 2**(w - frac) with np.fmod, which is
    exact, so the result is the exact two's complement of the exact integer).
    NaN -> (0, EVENT_SATURATE); +-inf -> (max/min code, EVENT_SATURATE).
    """
    return quantize_code_fc(x, format_constants(fmt), rnd)


@njit(cache=True, _nrt=False, inline="always")
def quantize_code_fc(x, fc, rnd):
    """quantize_code, given the format's constants fc = format_constants(fmt).

    The scaling x * 2**frac is a multiplication by an exact power of two: it
    rounds exactly as ldexp does (both give the correctly rounded x * 2**frac).
    """
    lo, hi, width = fc[FC_LO], fc[FC_HI], fc[FC_WIDTH]
    if math.isnan(x):
        return np.int64(0), np.int64(EVENT_SATURATE)
    if math.isinf(x):
        return (hi if x > 0.0 else lo), np.int64(EVENT_SATURATE)
    frac = fc[FC_FRAC]
    s = x * fc[FC_SCALE]
    if abs(s) < _TWO_62:
        v = _round_scaled(s, fc[FC_ROUNDING], rnd)
        return _overflow(np.int64(v), lo, hi, width, fc[FC_OVERFLOW])
    # |s| >= 2**62 (possibly inf): s is an integer far out of range.
    if fc[FC_OVERFLOW] == OVERFLOW_SATURATE:
        return (hi if x > 0.0 else lo), np.int64(EVENT_SATURATE)
    # x = q * 2**(w - frac) + r exactly, so x * 2**frac = q * 2**w + r * 2**frac
    # with r * 2**frac an integer (s is one) of magnitude < 2**w.
    r = math.ldexp(np.fmod(x, math.ldexp(1.0, width - frac)), frac)
    code, _ = _overflow(np.int64(r), lo, hi, width, fc[FC_OVERFLOW])
    return code, np.int64(EVENT_WRAP)


@njit(cache=True, _nrt=False)
def quantize(x, fmt, rnd):
    """(value, event): x as a register of format `fmt` holds it.

    Float format: (x, EVENT_NONE), unchanged. Fixed format: the code of
    quantize_code times 2**-frac_bits, exact as a float64 (codes <= 32 bits).
    """
    return quantize_fc(x, format_constants(fmt), rnd)


@njit(cache=True, _nrt=False, inline="always")
def quantize_fc(x, fc, rnd):
    """quantize, given the format's constants fc = format_constants(fmt).

    The common case, a finite x whose rounded code is in range, takes a few
    instructions inline (rint is IEEE round-half-even; floor is truncate);
    NaN, infinities and overflow fall through to the exact general path.
    """
    if not fc[FC_FIXED]:
        return x, np.int64(EVENT_NONE)
    s = x * fc[FC_SCALE]
    rounding = fc[FC_ROUNDING]
    if rounding == ROUND_NEAREST_EVEN:
        r = np.rint(s)
    elif rounding == ROUND_TRUNCATE:
        r = np.floor(s)
    else:
        r = _round_stochastic(s, rnd)
    if r >= fc[FC_LO_F] and r <= fc[FC_HI_F]:     # false for NaN
        return r * fc[FC_LSB] + 0.0, np.int64(EVENT_NONE)   # + 0.0: code 0 is +0.0
    code, event = _quantize_code_general(x, fc, rnd)
    return float(code) * fc[FC_LSB], event


@njit(cache=True, _nrt=False, inline="always")
def quantize_sat_fc(x, fc, rnd):
    """(value, saturated) of quantize_fc for a format that saturates (or a
    float format), computed without a branch, so that loops over register
    elements vectorise: every rounding is formed and the format's selected,
    and the clamp is a pair of selects. Equal to quantize_fc bit for bit
    when fc's overflow mode is saturate (NaN -> +0.0, +-inf and |x| out of
    range -> the nearest end, each counted as a saturation); for a float
    format it returns (x, False). Wrap formats need quantize_fc.
    """
    s = x * fc[FC_SCALE]
    fl = np.floor(s)
    rounding = fc[FC_ROUNDING]
    r = (np.rint(s) if rounding == ROUND_NEAREST_EVEN else
         fl if rounding == ROUND_TRUNCATE else _round_stochastic(s, rnd))
    lo, hi = fc[FC_LO_F], fc[FC_HI_F]
    nan, under, over = r != r, r < lo, r > hi
    code = 0.0 if nan else (lo if under else (hi if over else r))
    fixed = fc[FC_FIXED]
    return (code * fc[FC_LSB] + 0.0 if fixed else x), fixed and (nan or under or over)


@njit(cache=True, _nrt=False)
def _quantize_code_general(x, fc, rnd):
    """quantize_code_fc, out of line: the rare path of quantize_fc."""
    return quantize_code_fc(x, fc, rnd)


@njit(cache=True, _nrt=False)
def requantize_code(code, frac_in, fmt, rnd):
    """(code, event) of integer `code` with `frac_in` fraction bits in format `fmt`.

    Pure integer arithmetic. With d = frac_in - frac_bits:
      d <= 0: exact left shift by -d (then overflow; a shifted value that does
              not fit int64 is still classified and wrapped exactly);
      d >= 1: q = code >> d (floor), low = code - q * 2**d in [0, 2**d);
              truncate: q;  nearest-even: q + 1 iff low > 2**(d-1), or
              low == 2**(d-1) and q is odd;  stochastic: q + 1 iff
              (rnd >> (64 - d)) < low, for d <= 63 (P(up) = low / 2**d exactly).
      d >= 64: the code is first arithmetically shifted right by d - 63 (capped
              at 63) and then rounded with d = 63; exact for truncate and
              nearest-even, stochastic loses the dropped bits (bias < 2**-63).
    """
    frac = fmt[FRAC_BITS]
    d = frac_in - frac
    if d <= 0:
        sh = -d
        lo, hi, width = _code_range(fmt)
        shc = min(sh, np.int64(63))
        # code * 2**sh in range  <=>  ceil(lo / 2**sh) <= code <= floor(hi / 2**sh)
        if code <= (hi >> shc) and code >= -((-lo) >> shc):
            return code << shc, np.int64(EVENT_NONE)   # shc == sh unless code == 0
        if fmt[OVERFLOW] == OVERFLOW_SATURATE:
            return (hi if code > 0 else lo), np.int64(EVENT_SATURATE)
        low = np.int64(0)
        if sh < width:     # else every one of the low `width` bits is 0
            low = (code & ((np.int64(1) << (width - sh)) - 1)) << sh
        wrapped, _ = _overflow(low, lo, hi, width, fmt[OVERFLOW])
        return wrapped, np.int64(EVENT_WRAP)
    if d > 63:
        code = code >> min(d - 63, np.int64(63))
        d = np.int64(63)
    q = code >> d
    low = code & ((np.int64(1) << d) - 1)
    rounding = fmt[ROUNDING]
    if rounding == ROUND_NEAREST_EVEN:
        half = np.int64(1) << (d - 1)
        if low > half or (low == half and (q & 1) == 1):
            q += 1
    elif rounding == ROUND_STOCHASTIC:
        if np.int64(rnd >> np.uint64(64 - d)) < low:
            q += 1
    lo, hi, width = _code_range(fmt)
    return _overflow(q, lo, hi, width, fmt[OVERFLOW])


@njit(cache=True, _nrt=False)
def quantize_array(x, fmt, rng_state, out, events):
    """out[i] = quantize(x[i], fmt, rnd_i); events[1|2] += saturations | wraps.

    rng_state: one nonzero xorshift64* state per element (len(x)); only when
    fmt is fixed with stochastic rounding, element i steps its state once and
    uses that step's 64-bit output as rnd_i (otherwise rnd_i = 0 and the
    states are untouched). events: int64[3], indexed by EVENT_*.
    """
    stochastic = fmt[KIND] == KIND_FIXED and fmt[ROUNDING] == ROUND_STOCHASTIC
    for i in range(x.shape[0]):
        rnd = np.uint64(0)
        if stochastic:
            rng_state[i], rnd = xorshift64star_next(rng_state[i])
        value, event = quantize(x[i], fmt, rnd)
        out[i] = value
        if event != EVENT_NONE:
            events[event] += 1


# --------------------------------------------------------------------------
# Plain-Python helpers
# --------------------------------------------------------------------------
def to_code(value: float, fmt: Format, rnd: int = 0) -> int:
    """The code a register of fixed format `fmt` holds after writing `value`.

    Same rules as quantize_code (rnd: the 64-bit random word for stochastic
    rounding; with the default 0, u = 0 and any nonzero fraction rounds up).
    """
    if not fmt.is_fixed:
        raise ValueError("a float format has no codes")
    code, _ = quantize_code(float(value), fmt.row, np.uint64(rnd))
    return int(code)


def to_value(code: int, fmt: Format) -> float:
    """Value of `code` in fixed format `fmt`: code * 2**-frac_bits (exact)."""
    if not fmt.is_fixed:
        raise ValueError("a float format has no codes")
    code = int(code)
    if not fmt.min_code <= code <= fmt.max_code:
        raise ValueError(f"code {code} is out of range for {fmt.describe()}")
    return math.ldexp(float(code), -fmt.frac_bits)


def representable(value: float, fmt: Format) -> bool:
    """Whether `value` is exactly a value of `fmt` (any float for a float format)."""
    if not fmt.is_fixed:
        return True
    value = float(value)
    if not fmt.min_value <= value <= fmt.max_value:   # also rejects NaN, inf
        return False
    return math.ldexp(value, fmt.frac_bits).is_integer()
