"""Example 2: a sign-like weight update, property-tested for range and
gradient alignment on the shipped xor_8bit chip.

A sign update moves each weight by a fixed step against the sign of its
gradient estimate: theta <- theta - eta * sign(G). Chip keys alone give a
close relative: an 8-bit integrator s0.7 that saturates at -1 and +127/128,
with power normalisation and 32 steps per update, so that G often sums
beyond a rail and the update eta * G is then eta * sign(G): a clipped,
sign-like update. How often G reaches a rail depends on the gradient's size:
at the initial weights of seeds 0-3, 30-55 % of the integrators sit at a
rail when the updater reads them, about a quarter later in training as the
gradient shrinks, and under 10 % for some seeds whose held sample has a
small gradient. The exact sign function is a user-written update rule:
examples/test_sign_only_rule.py.

Properties: every register stays in its format while the integrators are
actually clipping; and, at frozen weights, the clipped integrators,
summed over windows of tau_theta steps as the updater reads them, point
along the exact gradient (cosine >= 0.9).
"""
from pathlib import Path

from hypothesis import given, settings

from mgd_emu import Emulator, load_chip
from mgd_emu.testing import assert_gradient_aligned, assert_registers_in_range, chips, seeds

XOR8 = load_chip(Path(__file__).resolve().parents[1] / "hw_models" / "xor_8bit.toml")
SIGN_LIKE = {
    "formats.integrator": {"kind": "fixed", "int_bits": 0, "frac_bits": 7},  # saturates at -1 and +127/128
    "perturbation.normalization": "power",  # G sums to the gradient times the steps: well beyond the rails
    # power normalisation divides by A^2 = (2/128)^2: the correlator's constant 4096 needs 13 integer bits
    "formats.correlator_gain": {"kind": "fixed", "signed": False, "int_bits": 13, "frac_bits": 0},
}
CHIP = XOR8.replace({**SIGN_LIKE, "timing.tau_theta": 32})

# the same rule with 16, 32 or 64 steps per update, and a learning rate from 0.01 to 0.1
VARIANTS = chips(CHIP, {"timing.tau_theta": [16, 32, 64], "optimizer.learning_rate": [0.01, 0.05, 0.1]})


@settings(max_examples=8, deadline=None)
@given(VARIANTS, seeds())
def test_every_register_stays_in_its_format_while_the_integrators_clip(chip, seed):
    emu = Emulator(chip, seed).run(20_000)
    assert_registers_in_range(emu)
    saturations = sum(emu.events[f"layer{i}.weight_integrator"][0] for i in range(2))
    assert saturations > 0, "the integrators never clipped: this is not a sign-like update"


@settings(max_examples=5, deadline=None)
@given(seeds())
def test_the_clipped_update_points_along_the_gradient(seed):
    tau = CHIP.timing.tau_theta
    assert_gradient_aligned(CHIP, seed, steps=100 * tau, min_cosine=0.9, window=tau)

