"""Example 3: is a truncating 10-bit integrator biased, and by how much?

A designer proposes integrators of 10 bits (s4.5: sign, 4 integer bits,
5 fraction bits, LSB = 1/32) that truncate (drop the low bits, as a plain
right shift does) instead of keeping full precision. The integrator
requantises G + e every step, so truncation loses between 0 and 1 LSB per
step, on average half an LSB: the mean correlator output, which with power
normalisation is an unbiased estimate of the gradient, becomes
gradient - LSB/2 in every component, a bias vector of length
3 LSB/2 = 0.047 on the 9-parameter XOR chip, from about 12 % to over half
of the gradient's length at its initial weights, depending on the sample.

The properties below show it. With the integrators cleared every 16 steps
(`window`, which keeps them inside their +-16 range and lets the property
measure the statistical noise), the float integrator passes the ready-made
unbiasedness property with a tolerance of 2 % of |gradient| beyond four
standard errors, and the truncating one fails it. Run side by side on the
same seed (the same perturbations, so the noise cancels), truncation lowers
the mean estimate by LSB/2 = 1/64 per step, averaged over the components, to
within 0.08 LSB (measured: 0.46-0.53 LSB on 60 seeds).

(Rounding to nearest is no cure at this width: a correlation smaller than
half an LSB rounds to nothing, so a 10-bit nearest-even integrator is biased
too wherever the gradient is small; try it with rounding = "nearest-even".)
"""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from mgd_emu import load_chip
from mgd_emu.testing import assert_correlator_unbiased, gradient_estimate, seeds

FLOAT = load_chip(Path(__file__).resolve().parents[1] / "hw_models" / "xor_ideal.toml",
                  {"perturbation.normalization": "power"})  # the mean correlator output is then the gradient
TRUNCATING = FLOAT.replace({"formats.integrator": {"kind": "fixed", "int_bits": 4, "frac_bits": 5,
                                                   "rounding": "truncate"}})
LSB = 2.0**-5
STEPS, WINDOW = 60_000, 16


@settings(max_examples=3, deadline=None)
@given(seeds(10**6))
def test_a_float_integrator_is_unbiased(seed):
    assert_correlator_unbiased(FLOAT, seed, STEPS, tolerance=0.02, window=WINDOW)


@settings(max_examples=3, deadline=None)
@given(seeds(10**6))
def test_a_truncating_10_bit_integrator_is_not(seed):
    with pytest.raises(AssertionError, match="above the tolerance 0.02"):
        assert_correlator_unbiased(TRUNCATING, seed, STEPS, tolerance=0.02, window=WINDOW)


@settings(max_examples=3, deadline=None)
@given(seeds(10**6))
def test_truncation_lowers_the_estimate_by_half_an_lsb_per_step(seed):
    truncated = gradient_estimate(TRUNCATING, seed, STEPS, window=WINDOW)
    exact = gradient_estimate(FLOAT, seed, STEPS, window=WINDOW)
    bias = truncated.mean - exact.mean
    assert np.all(bias < 0), f"truncation should lower every component, got {bias / LSB} LSB"
    assert bias.mean() == pytest.approx(-LSB / 2, abs=0.08 * LSB)
