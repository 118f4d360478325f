"""Example 4: an exact sign-only update, written as a user rule and compiled
into the chip's cycle kernel, property-tested for range, step size and
gradient alignment on the shipped xor_8bit chip.

theta <- theta - eta * sign(step): every update moves a weight by one fixed
step against the sign of its gradient estimate, whatever the estimate's size.
"""
from pathlib import Path

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mgd_emu import Emulator, load_chip
from mgd_emu.rules import SynapseRules
from mgd_emu.testing import assert_registers_in_range, cosine, gradient_estimate, seeds


@numba.njit
def sign_only(theta, step, eta):
    return theta - eta * np.sign(step)


RULES = SynapseRules(updater=sign_only)
XOR8 = load_chip(Path(__file__).resolve().parents[1] / "hw_models" / "xor_8bit.toml")
LSB = XOR8.formats.weight.lsb  # 1/32


def parameters(emu):
    return np.concatenate([np.ravel(v) for k, v in emu.registers.items() if k.endswith((".weight", ".bias"))])


@settings(max_examples=6, deadline=None)
@given(seeds(), st.sampled_from([1, 2, 4]))
def test_each_update_moves_a_weight_by_its_step_or_not_at_all_and_stays_in_range(seed, lsbs):
    # a learning rate of `lsbs` weight LSBs: the sign update moves by exactly that
    chip = XOR8.replace({"optimizer.learning_rate": lsbs * LSB, "formats.weight.rounding": "nearest-even",
                         "formats.bias.rounding": "nearest-even", "timing.tau_theta": 8})
    emu = Emulator(chip, seed, rules=RULES)
    for _ in range(20):
        before = parameters(emu)
        emu.run_steps(8)
        moved = np.abs(parameters(emu) - before) / LSB
        # one step of `lsbs` LSBs, or less where the weight sits at its rail
        assert np.all(moved <= lsbs + 1e-9) and np.all(np.isin(moved[moved > 0], np.arange(1, lsbs + 1)))
    assert_registers_in_range(emu)


@settings(max_examples=5, deadline=None)
@given(seeds())
def test_the_sign_of_the_estimate_points_along_the_gradient(seed):
    """What the sign rule acts on: the integrators summed over a window, at
    frozen weights. The sign vector of a good estimate still points along
    the gradient (a sign vector loses the magnitudes, so the bound is lower
    than for the estimate itself)."""
    tau = 32
    est = gradient_estimate(XOR8.replace({"timing.tau_theta": tau}), seed, steps=100 * tau, window=tau)
    assert cosine(np.sign(est.total), est.gradient) >= 0.5
