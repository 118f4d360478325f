"""Example 1: a hardware invariant of your own, checked by the stateful machine.

`EmulatorMachine` drives one emulator through random runs, checkpoints,
restores, evaluations and register reads, checking as it goes that every
register stays in its format and that the emulator agrees bit for bit with
one uninterrupted run. Here we add what a designer of xor_4bit knows must
hold: the integrators clear at every weight update, so whenever the step
count is a multiple of tau_theta every integrator reads zero. We also add a
rule that runs to the next update, so the invariant is exercised often.

Copy this file next to your chip, change CHIP and the invariant, run pytest.
"""
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, rule

from mgd_emu import load_chip
from mgd_emu.testing import EmulatorMachine

CHIP = load_chip(Path(__file__).resolve().parents[1] / "hw_models" / "xor_4bit.toml")  # tau_theta = 10


class IntegratorsClearAtUpdates(EmulatorMachine):
    chip = CHIP
    max_cycles = 100  # the most one run rule advances

    @rule()
    def run_to_the_next_update(self):
        tau = self.chip.timing.tau_theta
        self.emu.run_steps(tau - self.emu.step % tau)

    @invariant()
    def integrators_are_zero_after_an_update(self):
        if self.emu.step % self.chip.timing.tau_theta:
            return
        for name, value in self.emu.registers.items():
            if name.endswith("_integrator"):
                assert np.all(value == 0), f"{name} = {value} at step {self.emu.step}, just after an update"


TestIntegratorsClearAtUpdates = IntegratorsClearAtUpdates.TestCase
TestIntegratorsClearAtUpdates.settings = settings(max_examples=10, stateful_step_count=10, deadline=None,
                                                  suppress_health_check=[HealthCheck.too_slow])
