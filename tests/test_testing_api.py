"""mgd_emu.testing, the public property-testing kit: its strategies draw what
they say, and each ready-made property passes on a sound chip and fails, with
a message naming what is wrong, on a broken one."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.stateful import invariant, run_state_machine_as_test

from mgd_emu import ChipError, Emulator, Format, load_chip
from mgd_emu.testing import (
    EmulatorMachine,
    assert_correlator_unbiased,
    assert_gradient_aligned,
    assert_matches_reference,
    assert_probes_record_the_registers,
    assert_registers_in_range,
    assert_restore_bit_exact,
    assert_same_state,
    assert_split_runs_bit_exact,
    assert_trains,
    chips,
    fixed_formats,
    format_table,
    gradient_estimate,
    ideal_chip,
    ideal_chip_parameters,
    number_formats,
    probe_sets,
    seeds,
)
from mgd_emu.testing import properties

ROOT = Path(__file__).resolve().parents[1]
XOR8 = load_chip(ROOT / "hw_models/xor_8bit.toml")
IDEAL = load_chip(ROOT / "hw_models/xor_ideal.toml")
POWER = IDEAL.replace({"perturbation.normalization": "power"})
FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the module is optional --------------------------------------------------------

def test_without_hypothesis_the_module_says_how_to_install_it():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "try:\n    import mgd_emu.testing\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "mgd_emu.testing needs hypothesis: pip install 'mgd-emu[testing]'"


def test_importing_mgd_emu_does_not_import_hypothesis():
    code = "import sys, mgd_emu; mgd_emu.load_chip('hw_models/xor_8bit.toml'); print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- strategies --------------------------------------------------------------------

@FEW
@given(fixed_formats())
def test_fixed_formats_are_formats_the_loader_accepts(fmt):
    assert 1 <= fmt.width <= 32
    chip = XOR8.replace({"formats.integrator": format_table(fmt)})
    assert chip.formats.integrator == fmt


@FEW
@given(fixed_formats(signed=True, rounding="truncate", overflow="wrap", int_bits=(2, 3), frac_bits=(5, 6)))
def test_fixed_formats_keep_what_is_pinned(fmt):
    assert (fmt.signed, fmt.rounding, fmt.overflow) == (True, "truncate", "wrap")
    assert 2 <= fmt.int_bits <= 3 and 5 <= fmt.frac_bits <= 6


@FEW
@given(fixed_formats(max_width=10))
def test_fixed_formats_stay_within_max_width(fmt):
    assert 1 <= fmt.width <= 10


@FEW
@given(number_formats(max_width=8))
def test_number_formats_include_float(fmt):
    assert fmt.kind == "float" or 1 <= fmt.width <= 8


def test_number_formats_draw_both_kinds():
    kinds = set()

    @settings(max_examples=40, deadline=None, database=None)
    @given(number_formats())
    def collect(fmt):
        kinds.add(fmt.kind)

    collect()
    assert kinds == {"float", "fixed"}


@FEW
@given(seeds())
def test_seeds_are_63_bit(seed):
    assert 0 <= seed <= 2**63 - 1


def test_seeds_refuse_a_bound_beyond_63_bits():
    with pytest.raises(ValueError, match="max_value"):
        seeds(2**63)


VARY = {"timing.tau_p": [1, 2, 4], "timing.tau_theta": range(1, 9),
        "formats.weight": fixed_formats(signed=True, int_bits=(1, 2), frac_bits=(3, 6))}


@FEW
@given(chips(XOR8, VARY, invalid="reject"))
def test_drawn_chips_vary_only_the_keys_asked_for(chip):
    assert chip.timing.tau_p in (1, 2, 4) and 1 <= chip.timing.tau_theta <= 8
    assert chip.timing.tau_theta % chip.timing.tau_p == 0  # the loader's rule: refused draws were skipped
    assert 3 <= chip.formats.weight.frac_bits <= 6
    same = {k: v for k, v in chip.to_dict().items() if k not in ("timing", "formats")}
    assert same == {k: v for k, v in XOR8.to_dict().items() if k not in ("timing", "formats")}
    assert chip.formats.integrator == XOR8.formats.integrator


def test_a_refused_draw_fails_with_the_loaders_message_by_default():
    @settings(max_examples=50, deadline=None, database=None)
    @given(chips(XOR8, {"timing.tau_p": [1, 3], "timing.tau_theta": [1, 3, 4]}))
    def draw(chip):
        pass

    with pytest.raises(ChipError, match="tau_theta.*multiple of timing.tau_p = 3"):
        draw()


def test_refused_draws_can_be_drawn_as_errors():
    seen = []

    @settings(max_examples=30, deadline=None, database=None)
    @given(chips(XOR8, {"timing.tau_p": [3], "timing.tau_theta": [1, 3]}, invalid="return"))
    def draw(chip):
        seen.append(chip)

    draw()
    errors = [c for c in seen if isinstance(c, ChipError)]
    assert errors and all("multiple of timing.tau_p = 3" in str(e) for e in errors)
    assert any(not isinstance(c, ChipError) for c in seen)


def test_a_misspelt_key_is_refused_before_any_draw():
    with pytest.raises(ChipError, match=r"^chips\(vary=\{'timing.tau_thetta': ...\}\): unknown key; did you mean 'tau_theta'"):
        chips(XOR8, {"timing.tau_thetta": [1, 2]})


def test_a_strategy_that_only_draws_refused_chips_is_unsatisfiable_when_rejecting():
    @settings(max_examples=5, deadline=None, database=None)
    @given(chips(XOR8, {"timing.tau_x": [0]}, invalid="reject"))
    def draw(chip):
        pass

    with pytest.raises(Unsatisfiable):
        draw()


def test_a_base_chip_may_be_a_path_or_toml_text():
    by_path = chips(ROOT / "hw_models/xor_8bit.toml", {"timing.tau_x": [2]})
    by_text = chips('[timing]\ntau_x = 1', {"timing.tau_x": [2]})

    @settings(max_examples=1, deadline=None, database=None)
    @given(by_path, by_text)
    def draw(a, b):
        assert a.formats.weight == XOR8.formats.weight and a.timing.tau_x == 2
        assert b.timing.tau_x == 2 and b.formats.weight.kind == "float"

    draw()


@FEW
@given(ideal_chip_parameters())
def test_ideal_chip_parameters_build_float_zero_latency_chips(p):
    chip = ideal_chip(p)
    assert all(fmt["kind"] == "float" for _, fmt in chip.formats.items())
    assert chip.timing.cost_latency == chip.timing.broadcast_latency == 0
    assert chip.layer_sizes == (3, *p["hidden"], p["outputs"])


REGISTERS = Emulator(XOR8, 0).registers


@FEW
@given(probe_sets(REGISTERS))
def test_probe_sets_are_probes_the_emulator_accepts(probes):
    emu = Emulator(XOR8, 0, probes=probes).run(3)
    names = [p.split()[0].split("[")[0] for p in probes]
    assert len(set(names)) == len(names)
    for name in names:
        emu.samples(name)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(probe_sets(REGISTERS, max_window=60), seeds(1000))
def test_drawn_probe_sets_record_the_registers(probes, seed):
    assert_probes_record_the_registers(XOR8, seed, probes, 80)


# -- registers in range ------------------------------------------------------------

class Registers:
    """A stand-in emulator holding given register values in the formats given."""

    def __init__(self, values, formats):
        self.registers, self._formats, self.cycle = values, formats, 7
        self.codes = {k: np.rint(np.asarray(v) * 2.0 ** formats[k].frac_bits).astype(np.int64)
                      for k, v in values.items() if formats[k].is_fixed}

    def register_format(self, name):
        return self._formats[name]


S1_2 = Format("fixed", True, 1, 2)  # codes -8..7, values -2..1.75


def test_registers_within_their_format_pass():
    assert_registers_in_range(Registers({"w": np.array([-2.0, 1.75, 0.25])}, {"w": S1_2}))
    assert_registers_in_range(Emulator(XOR8, 0).run(2000))


def test_a_register_beyond_its_format_is_named_with_its_code_and_range():
    regs = Registers({"w": np.array([[0.5, 2.0]])}, {"w": S1_2})
    with pytest.raises(AssertionError, match=r"w\[0, 1\] = 2.0 \(code 8\) at cycle 7 is outside its format "
                                             r"s1.2 nearest-even saturate: codes -8..7"):
        assert_registers_in_range(regs)


def test_a_register_off_its_grid_is_named():
    with pytest.raises(AssertionError, match=r"w\[1\] = 0.3 .* not a multiple of its format's LSB 0.25"):
        assert_registers_in_range(Registers({"w": np.array([0.25, 0.3])}, {"w": S1_2}))


# -- bit-exact state ---------------------------------------------------------------

def test_split_runs_and_restores_of_a_sound_engine_are_bit_exact():
    assert_split_runs_bit_exact(XOR8, 1, [123, 0, 377])
    assert_split_runs_bit_exact(XOR8.replace({"cost.baseline": "remeasure"}), 1, [40, 0, 21], steps=True)
    assert_restore_bit_exact(XOR8, 2, 300, 300)


def test_different_seeds_are_not_the_same_state():
    with pytest.raises(AssertionError, match=r"layer0.weight\[0, 0\] differs at cycle 10"):
        assert_same_state(Emulator(XOR8, 0).run(10), Emulator(XOR8, 1).run(10))


def flip_a_generator(tree):
    """The checkpoint with the first unsigned-integer array (a generator state) changed."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if flip_a_generator(value):
                return True
        return False
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "u" and tree.size:
        tree.flat[0] ^= np.uint64(1) if tree.dtype == np.uint64 else 1
        return True
    return False


def test_a_difference_no_register_shows_is_found_in_the_checkpoint():
    a, b = Emulator(XOR8, 0).run(10), Emulator(XOR8, 0).run(10)

    class Hidden:
        """b, with one generator state changed."""
        def __getattr__(self, name):
            return getattr(b, name)

        def checkpoint(self):
            cp = b.checkpoint()
            assert flip_a_generator(cp)
            return cp

    with pytest.raises(AssertionError, match=r"hidden state checkpoint\.\S+ differs at cycle 10 \(every register agrees\)"):
        assert_same_state(a, Hidden())


class DropsACycle(Emulator):
    """A broken engine: a run of an odd number of cycles loses one."""

    def run(self, n, *args, **kwargs):
        return super().run(n - 1 if n % 2 else n, *args, **kwargs)


class ForgetsGenerators(Emulator):
    """A broken engine: restore corrupts a generator state."""

    @classmethod
    def restore(cls, checkpoint):
        cp = {**checkpoint, "state": {k: np.copy(v) for k, v in checkpoint["state"].items()}} \
            if isinstance(checkpoint.get("state"), dict) else checkpoint
        flip_a_generator(cp)
        return super().restore(cp)


def test_a_split_run_that_loses_a_cycle_fails(monkeypatch):
    monkeypatch.setattr(properties, "_emulator", lambda: DropsACycle)
    with pytest.raises(AssertionError, match=r"cycle/step 500/500 != 498/498 .*run of \[123, 0, 377\]"):
        assert_split_runs_bit_exact(XOR8, 1, [123, 0, 377])


def test_a_restore_that_forgets_hidden_state_fails(monkeypatch):
    monkeypatch.setattr(properties, "_emulator", lambda: ForgetsGenerators)
    with pytest.raises(AssertionError, match="restored at cycle 300"):
        assert_restore_bit_exact(XOR8, 2, 300, 300)


# -- the reference oracle ------------------------------------------------------------

def test_an_ideal_chip_matches_the_reference():
    assert_matches_reference(IDEAL, 3, 150, check_every=10)


def test_a_chip_that_departs_from_the_reference_fails_naming_the_register_and_step(monkeypatch):
    class Drifts(Emulator):
        @property
        def registers(self):
            regs = super().registers
            if self.step >= 20:
                regs["layer1.bias"] = regs["layer1.bias"] + 1e-9
            return regs

    monkeypatch.setattr(properties, "_emulator", lambda: Drifts)
    with pytest.raises(AssertionError, match="layer1.bias after step 20"):
        assert_matches_reference(IDEAL, 3, 50, check_every=10)


def test_the_reference_property_refuses_fixed_point_chips():
    with pytest.raises(ValueError, match="float formats only.*formats.input"):
        assert_matches_reference(XOR8, 0, 10)


# -- gradient estimates ------------------------------------------------------------

def test_an_ideal_chips_estimate_is_aligned_and_the_cosine_is_returned():
    c = assert_gradient_aligned(POWER, 1, 4000, 0.95)
    assert 0.95 <= c <= 1.0


def test_an_analog_integrator_keeps_its_time_constant_and_its_leaky_average_is_aligned():
    analog = POWER.replace({"integrator.kind": "analog", "timing.tau_theta": 200})
    assert properties.frozen_chip(analog, 4000).timing.tau_theta == 200
    est = gradient_estimate(analog, 1, 4000)
    assert est.count == 1 and est.cosine >= 0.9
    with pytest.raises(ValueError, match="window applies to a digital integrator"):
        gradient_estimate(analog, 1, 4000, window=20)


def test_a_correlator_one_cycle_late_on_a_one_cycle_code_is_not_aligned():
    late = POWER.replace({"timing.correlator_skew": 1})  # gain 1 - 1/tau_p = 0: no gradient left
    with pytest.raises(AssertionError, match=r"cosine -?0\.\d+ with the exact gradient, below 0.5"):
        assert_gradient_aligned(late, 1, 4000, 0.5)


def test_the_frozen_chip_holds_its_weights_and_its_sample():
    est = gradient_estimate(POWER, 1, 500)
    assert est.count == 500 and est.total.shape == est.gradient.shape == (9,)
    emu = Emulator(properties.frozen_chip(POWER, 500), 1)
    w0, s0 = emu.registers["layer0.weight"], emu.registers["sample_index"]
    emu.run_steps(500)
    assert np.array_equal(emu.registers["layer0.weight"], w0) and emu.registers["sample_index"] == s0


def test_windows_sum_each_windows_integrators_before_they_clear():
    whole, windowed = gradient_estimate(POWER, 1, 600), gradient_estimate(POWER, 1, 600, window=100)
    assert windowed.count == 6 * 99
    assert np.linalg.norm(windowed.mean - whole.mean) <= 0.1 * np.linalg.norm(whole.gradient)


def test_power_normalisation_is_unbiased_and_the_error_is_returned():
    err = assert_correlator_unbiased(POWER, 2, 20000, tolerance=0.1)
    assert 0.0 <= err <= 0.1


def test_a_highpass_baseline_loses_gain_and_so_is_biased():
    hp = POWER.replace({"cost.baseline": "highpass", "cost.tau_hp": 1.6})  # passes 1.6/2.6 of C~
    with pytest.raises(AssertionError, match=r"mean correlator output over 20000 steps is 0\.3\d+ \|gradient\|"):
        assert_correlator_unbiased(hp, 2, 20000, tolerance=0.1)


def test_with_windows_the_noise_is_measured_and_allowed_for_but_a_bias_is_not():
    est = gradient_estimate(POWER, 2, 8000, window=16)
    assert est.windows.shape == (8000 // 16, 9) and 0 < est.standard_error < 0.05 * np.linalg.norm(est.gradient)
    assert np.isnan(gradient_estimate(POWER, 2, 800).standard_error)  # one sum: no spread to measure
    assert assert_correlator_unbiased(POWER, 2, 8000, tolerance=0.0, window=16) >= 0.0
    hp = POWER.replace({"cost.baseline": "highpass", "cost.tau_hp": 1.6})
    with pytest.raises(AssertionError, match=r"above the tolerance 0.1 \+ 4.0 standard errors \(0\.0\d+ \|gradient\|\)"):
        assert_correlator_unbiased(hp, 2, 8000, tolerance=0.1, window=16)



def test_a_measurement_clipped_by_a_narrow_integrator_says_so_when_it_fails():
    node = load_chip(ROOT / "hw_models/xor_node.toml")     # s4.11 integrators: +-16
    assert gradient_estimate(node, 1, 3000).saturations > 0
    with pytest.raises(AssertionError, match=r"The integrators saturated or wrapped [\d,]+ times in the 3,000 steps "
                                             r".*use window=W"):
        assert_correlator_unbiased(node, 1, 3000, tolerance=0.1)
    assert gradient_estimate(node, 1, 3000, window=10).saturations == 0


def test_an_analog_integrators_leaky_average_is_not_asked_to_be_an_unbiased_mean():
    with pytest.raises(ValueError, match="digital integrator"):
        assert_correlator_unbiased(POWER.replace({"integrator.kind": "analog", "timing.tau_theta": 200}), 1, 100)


def test_the_properties_run_user_rules_when_given_them():
    import numba

    from mgd_emu.rules import SynapseRules

    @numba.njit
    def backwards(c, p, kappa):
        return -c * p * kappa

    rules = SynapseRules(correlator=backwards)
    assert gradient_estimate(POWER, 1, 2000, rules=rules).cosine < -0.9
    with pytest.raises(AssertionError, match="cosine -0"):
        assert_gradient_aligned(POWER, 1, 2000, 0.9, rules=rules)
    assert_restore_bit_exact(XOR8, 1, 300, 200, rules=rules)

def test_unbiasedness_is_only_asked_of_power_normalisation():
    with pytest.raises(ValueError, match='normalization = "power"'):
        assert_correlator_unbiased(IDEAL, 0, 100)


# -- training ----------------------------------------------------------------------

def test_a_chip_that_trains_reports_when_each_seed_got_there():
    reached = assert_trains(XOR8, [0, 1, 2], accuracy=1.0, cycles=300_000, at_least=2, eval_every=10_000)
    assert sum(c is not None for c in reached.values()) >= 2
    assert all(c is None or (c % 10_000 == 0 and c <= 300_000) for c in reached.values())


def test_a_chip_that_cannot_learn_fails_naming_every_seed():
    frozen = XOR8.replace({"optimizer.learning_rate": 0.0})
    with pytest.raises(AssertionError, match=r"accuracy 1.0 within 20000 cycles on 0 of the 2 seeds run "
                                             r"\(needed 2 of 3\): seed 0 never \(best 0\.\d+\), seed 1 never"):
        assert_trains(frozen, [0, 1, 2], accuracy=1.0, cycles=20_000, at_least=2, eval_every=5_000)


# -- probes ------------------------------------------------------------------------

def test_a_probe_that_records_the_wrong_cycles_fails(monkeypatch):
    class Shifted(Emulator):
        def samples(self, name):
            cycles, values = super().samples(name)
            return cycles + 1, values

    monkeypatch.setattr(properties, "_emulator", lambda: Shifted)
    with pytest.raises(AssertionError, match=r"probe 'cost every=7' sampled cycles \[1, 8"):
        assert_probes_record_the_registers(XOR8, 0, ["cost every=7"], 50)


# -- the stateful machine ----------------------------------------------------------

class Fixed8Machine(EmulatorMachine):
    chip = XOR8
    max_cycles = 200


TestFixed8Machine = Fixed8Machine.TestCase
TestFixed8Machine.settings = settings(max_examples=6, stateful_step_count=8, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])


def test_a_failing_user_invariant_is_reported():
    class Wrong(EmulatorMachine):
        chip = XOR8
        max_cycles = 50

        @invariant()
        def weights_never_change(self):  # false: xor_8bit updates every cycle
            w0 = Emulator(self.chip, self.seed).registers["layer0.weight"]
            assert np.array_equal(self.emu.registers["layer0.weight"], w0), "layer0.weight changed"

    with pytest.raises(AssertionError, match="layer0.weight changed"):
        run_state_machine_as_test(Wrong, settings=settings(max_examples=20, stateful_step_count=5, deadline=None,
                                                           database=None, phases=[Phase.generate]))


def test_the_machine_refuses_to_run_without_a_chip():
    with pytest.raises(TypeError, match="chip is not set"):
        run_state_machine_as_test(EmulatorMachine, settings=settings(max_examples=1, deadline=None, database=None))
