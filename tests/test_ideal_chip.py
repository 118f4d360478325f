"""An ideal chip (float formats, zero latency, no noise) is textbook MGD: the
engine and the float64 reference oracle agree register by register, step by step,
for every perturbation scheme, baseline, integrator and optimiser."""
import pytest
from hypothesis import HealthCheck, given, settings

from mgd_emu import loads_chip
from mgd_emu.engine import Emulator
from mgd_emu.reference import Reference
from mgd_emu.testing import assert_matches_reference, assert_registers_match, ideal_chip, ideal_chip_parameters

# -- an ideal chip follows the reference step for step ----------------------
# The drawn chips (`ideal_chip_parameters`, `ideal_chip`), the register
# comparison (`assert_registers_match`) and the step-for-step property
# (`assert_matches_reference`) are mgd_emu.testing's.

IDEAL = ideal_chip_parameters()
STEPS = 300


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(IDEAL)
def test_an_ideal_chip_is_textbook_mgd_step_for_step(p):
    # at reset, then after every 37th step and the last
    assert_matches_reference(ideal_chip(p), p["seed"], STEPS, check_every=37)


IDEAL_EXAMPLE = dict(hidden=[2], outputs=1, activation="sigmoid", output_activation="sigmoid", bias=True,
                     init="uniform", cost="mse", mode="weight", multiplexing="code", normalization="power",
                     amplitude_is="norm", baseline="dual_path", integrator="digital", optimizer="plain",
                     tau_x=1, tau_p=1, windows=1, divide=False, presynaptic="live", limit=0.0, seed=0)


def test_the_register_comparison_fails_when_the_chip_lacks_a_register():
    chip = ideal_chip(IDEAL_EXAMPLE)
    emu, ref = Emulator(chip, 0), Reference(chip, 0)

    class Lacking:
        registers = {k: v for k, v in emu.registers.items() if k != "layer0.weight_integrator"}

    with pytest.raises(AssertionError, match="layer0.weight_integrator"):
        assert_registers_match(Lacking, ref, "at reset")


def test_an_ideal_xor_chip_matches_the_reference_over_thousands_of_steps():
    chip = loads_chip(open("hw_models/xor_ideal.toml").read(), "xor_ideal.toml")
    emu, ref = Emulator(chip, 1), Reference(chip, 1)
    for _ in range(5):
        emu.run(1000)
        ref.step(1000)
        assert_registers_match(emu, ref, f"after step {ref.k}")

