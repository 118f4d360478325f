"""Property testing for chip designs: hypothesis strategies, ready-made
properties and a stateful machine, for users who propose a hardware rule
(a bit width, a rounding mode, a saturating integrator, an update period)
and want to know whether the chip still estimates the gradient, keeps every
register in range, resumes bit-exactly and trains.

Needs hypothesis (``pip install 'mgd-emu[testing]'``); ``import mgd_emu``
does not. See ``docs/testing.md`` for worked examples.

Strategies (`mgd_emu.testing.strategies`)
    `fixed_formats`, `number_formats`: number formats (`mgd_emu.Format`),
    and `format_table` to write one as an override;
    `chips`: chip descriptions drawn around a base chip;
    `ideal_chip_parameters` / `ideal_chip`: float, zero-latency chips the
    reference oracle models; `seeds`; `probe_sets`.

Properties (`mgd_emu.testing.properties`): plain functions that raise
AssertionError with a message naming the register, cycle and values
    `assert_registers_in_range`, `assert_same_state`,
    `assert_split_runs_bit_exact`, `assert_restore_bit_exact`,
    `assert_registers_match`, `assert_matches_reference`,
    `assert_gradient_aligned` (returns the cosine),
    `assert_correlator_unbiased` (returns the relative error),
    `assert_probes_record_the_registers`, `assert_trains`;
    and the measurements behind them: `frozen_chip`, `gradient_estimate`
    (a `GradientEstimate`), `parameter_vector`, `integrator_vector`,
    `gradient_vector`, `cosine`.

Stateful machine (`mgd_emu.testing.machine`): `EmulatorMachine`, to
subclass with a chip and your own ``@invariant()`` methods.

A rule is what the chip description can express (formats, rounding,
overflow, periods, latencies, normalisation, optimiser), or the synapse's
correlator, integrator and updater written as Numba functions
(`mgd_emu.rules.SynapseRules`, `Emulator(chip, seed, rules=...)`).
"""
try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("mgd_emu.testing needs hypothesis: pip install 'mgd-emu[testing]'") from exc

from .machine import EmulatorMachine
from .properties import (
    GradientEstimate,
    assert_correlator_unbiased,
    assert_gradient_aligned,
    assert_matches_reference,
    assert_probes_record_the_registers,
    assert_registers_in_range,
    assert_registers_match,
    assert_restore_bit_exact,
    assert_same_state,
    assert_split_runs_bit_exact,
    assert_trains,
    cosine,
    frozen_chip,
    gradient_estimate,
    gradient_vector,
    integrator_vector,
    parameter_vector,
)
from .strategies import (
    MAX_SEED,
    chips,
    fixed_formats,
    format_table,
    ideal_chip,
    ideal_chip_parameters,
    number_formats,
    probe_sets,
    seeds,
)

__all__ = [
    "EmulatorMachine", "GradientEstimate", "MAX_SEED",
    "assert_correlator_unbiased", "assert_gradient_aligned", "assert_matches_reference",
    "assert_probes_record_the_registers", "assert_registers_in_range", "assert_registers_match",
    "assert_restore_bit_exact", "assert_same_state", "assert_split_runs_bit_exact", "assert_trains",
    "chips", "cosine", "fixed_formats", "format_table", "frozen_chip", "gradient_estimate",
    "gradient_vector", "ideal_chip", "ideal_chip_parameters", "integrator_vector", "number_formats",
    "parameter_vector", "probe_sets", "seeds",
]
