"""A hypothesis stateful machine that drives one emulator through random
sequences of runs, checkpoints, restores, evaluations and register reads.

Subclass it, set `chip`, add ``@invariant()`` methods that read ``self.emu``,
and let pytest collect its TestCase::

    class MyChip(EmulatorMachine):
        chip = load_chip("hw_models/xor_8bit.toml")

        @invariant()
        def cost_is_finite(self):
            assert np.isfinite(self.emu.registers["cost"])

    TestMyChip = MyChip.TestCase
    TestMyChip.settings = settings(max_examples=10, stateful_step_count=12)

Built in, after every rule: every fixed-point register is in its format
(`assert_registers_in_range`). Rules check as they go: evaluating and
reading registers change nothing; a restored checkpoint is the state it was
taken from; and `agrees_with_one_run` checks that the emulator, after any
sequence of split runs and restores, is bit-identical to a fresh one run
straight to the same cycle.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from .properties import _build, _emulator, _restore, assert_registers_in_range, assert_same_state
from .strategies import MAX_SEED


class EmulatorMachine(RuleBasedStateMachine):
    """Random sequences of run / run_steps / checkpoint / restore / evaluate /
    read registers on one emulator of `chip`.

    Class attributes to set: `chip` (required), `max_cycles` (the most one
    run rule advances, default 300), `synapse_rules` (user synapse rules,
    mgd_emu.rules.SynapseRules; default the built-in ones). ``self.emu`` is
    the emulator under test, ``self.seed`` its seed."""

    chip = None
    max_cycles = 300
    synapse_rules = None

    checkpoints = Bundle("checkpoints")

    @initialize(seed=st.integers(0, MAX_SEED))
    def build(self, seed):
        if self.chip is None:
            raise TypeError(f"{type(self).__name__}.chip is not set: subclass EmulatorMachine with chip = ...")
        self.seed = seed
        self.emu = _build(_emulator(), self.chip, seed, rules=self.synapse_rules)

    @rule(data=st.data())
    def run(self, data):
        self.emu.run(data.draw(st.integers(0, self.max_cycles), label="cycles"))

    @rule(data=st.data())
    def run_steps(self, data):
        self.emu.run_steps(data.draw(st.integers(0, self.max_cycles), label="steps"))

    @rule(target=checkpoints)
    def checkpoint(self):
        cp = self.emu.checkpoint()
        # the checkpoint and the state it holds, to compare with later
        return cp, _restore(_emulator(), cp, self.synapse_rules)

    @rule(saved=checkpoints)
    def restore(self, saved):
        cp, at_checkpoint = saved
        self.emu = _restore(_emulator(), cp, self.synapse_rules)
        assert_same_state(self.emu, at_checkpoint, "a restored checkpoint is the state it was taken from")

    @rule()
    def evaluate(self):
        before = self.emu.checkpoint()
        cost, accuracy = self.emu.evaluate()
        assert math.isfinite(cost) or math.isnan(cost), f"evaluate() gave cost {cost}"
        assert 0.0 <= accuracy <= 1.0, f"evaluate() gave accuracy {accuracy}"
        assert_same_state(self.emu, _restore(_emulator(), before, self.synapse_rules),
                          "evaluate() must leave the state untouched")

    @rule()
    def read_registers(self):
        first, second = self.emu.registers, self.emu.registers
        for name, value in first.items():
            assert np.array_equal(value, second[name], equal_nan=True), f"reading {name} twice gave different values"
            if isinstance(value, np.ndarray):
                value[...] = 0  # registers are copies: writing to one changes nothing
        for name, value in self.emu.registers.items():
            assert np.array_equal(value, second[name], equal_nan=True), f"writing to a copy of {name} changed the chip"

    @rule()
    def agrees_with_one_run(self):
        straight = _build(_emulator(), self.chip, self.seed, rules=self.synapse_rules).run(self.emu.cycle)
        assert_same_state(self.emu, straight, f"seed {self.seed}: the emulator after its rules vs one run of "
                                              f"{self.emu.cycle} cycles")

    @invariant()
    def registers_in_range(self):
        assert_registers_in_range(self.emu)
