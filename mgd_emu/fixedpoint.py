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
# --------------------------------------------------------------------------
import math  # noqa: E402

from numba import njit  # noqa: E402


@njit(cache=True)
def _round_scaled(s, rounding, rnd):
    """Integer (as float64) that the rounding mode makes of scaled value s."""
    fl = math.floor(s)
    if rounding == ROUND_TRUNCATE:
        return fl
    r = s - fl
    if rounding == ROUND_NEAREST_EVEN:
        if r > 0.5:
            return fl + 1.0
        if r < 0.5:
            return fl
        return fl if fl == 2.0 * math.floor(fl * 0.5) else fl + 1.0
    u = float(rnd >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return fl + 1.0 if u < r else fl


@njit(cache=True)
def quantize_code(x, fmt, rnd):
    """(code, event) of full-precision x in fixed format `fmt`.

    Rounding: truncate = floor; nearest-even; stochastic = up iff
    uniform(rnd) < fractional part. Overflow: saturate (event 1) or two's
    complement wrap (event 2). NaN becomes 0 with a saturation event.
    """
    if math.isnan(x):
        return np.int64(0), np.int64(EVENT_SATURATE)
    frac, ib = fmt[FRAC_BITS], fmt[INT_BITS]
    signed = fmt[SIGNED] != 0
    s = x * 2.0 ** frac
    v = _round_scaled(s, fmt[ROUNDING], rnd) if math.isfinite(s) else s
    width = ib + frac + (1 if signed else 0)
    hi = 2.0 ** (ib + frac) - 1.0
    lo = -(2.0 ** (ib + frac)) if signed else 0.0
    if lo <= v <= hi:
        return np.int64(v), np.int64(EVENT_NONE)
    if fmt[OVERFLOW] == OVERFLOW_SATURATE or not math.isfinite(v):
        return np.int64(hi if v > hi else lo), np.int64(EVENT_SATURATE)
    # Reduce modulo 2**width while the value is large (exact: every step
    # is a power-of-two scaling or an exactly representable difference).
    span = 2.0 ** width
    m = v - span * math.floor(v / span)
    m = m - lo
    m = m - span * math.floor(m / span)
    return np.int64(m + lo), np.int64(EVENT_WRAP)


@njit(cache=True)
def quantize(x, fmt, rnd):
    """(value, event): x as a register of `fmt` holds it (identity for float)."""
    if fmt[KIND] != KIND_FIXED:
        return x, np.int64(EVENT_NONE)
    code, event = quantize_code(x, fmt, rnd)
    return code * 2.0 ** -fmt[FRAC_BITS], event
