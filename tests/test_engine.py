"""The cycle engine: RTL semantics, determinism, bit-exact fixed point."""
import dataclasses
from fractions import Fraction
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings

from mgd_emu import load_chip, loads_chip
from mgd_emu.chipmap import PARALLEL_MIN_LAYER, clears_every_cycle, variant_of
from mgd_emu.engine import DEFAULT_ORDER, Emulator
from mgd_emu.fixedpoint import ROUND_NEAREST_EVEN, ROUND_STOCHASTIC, ROUND_TRUNCATE
from mgd_emu.testing import (assert_registers_in_range, assert_restore_bit_exact, assert_same_state,
                             assert_split_runs_bit_exact, chips, fixed_formats, seeds)

FIXED8 = """
[perturbation]
normalization = "norm"
[formats]
input = { kind = "fixed", signed = false, int_bits = 1, frac_bits = 0 }
weight = { kind = "fixed", int_bits = 2, frac_bits = 5, rounding = "stochastic" }
bias = { kind = "fixed", int_bits = 2, frac_bits = 5, rounding = "stochastic" }
perturbation = { kind = "fixed", int_bits = 0, frac_bits = 7 }
activation = { kind = "fixed", signed = false, int_bits = 0, frac_bits = 8 }
cost = { kind = "fixed", signed = false, int_bits = 0, frac_bits = 12 }
cost_change = { kind = "fixed", int_bits = 0, frac_bits = 11 }
integrator = { kind = "fixed", int_bits = 4, frac_bits = 11 }
learning_rate = { kind = "fixed", signed = false, int_bits = 0, frac_bits = 12 }
correlator_gain = { kind = "fixed", signed = false, int_bits = 9, frac_bits = 3 }
"""

VARIANTS = {
    "ideal": "",
    "fixed8": FIXED8,
    "pipelined": "[timing]\nlayer_pipelining = true\ncost_latency = 1\nbroadcast_latency = 2\n" + FIXED8,
    "node": '[perturbation]\nmode = "node"\n[network]\nlayers = [3, 4, 2]\n[task]\nname = "random"\ninputs = 3\noutputs = 2\n',
    "remeasure_momentum": '[cost]\nbaseline = "remeasure"\n[optimizer]\nkind = "momentum"\n[timing]\ntau_x = 3\ntau_theta = 2\n',
    "analog_highpass": '[integrator]\nkind = "analog"\n[cost]\nbaseline = "highpass"\n[timing]\ntau_theta = 5\n',
    "noisy_walsh": '[perturbation]\nmultiplexing = "walsh"\n[noise]\ncost_sigma = 0.001\nweight_sigma = 0.001\nactivation_sigma = 0.01\ngain_sigma = 0.1\noffset_sigma = 0.1\n',
    "frequency_time": '[perturbation]\nmultiplexing = "frequency"\n[timing]\ntau_p = 1\n',
}


def chip(name="ideal", extra=""):
    return loads_chip(VARIANTS[name] + extra, f"{name}.toml")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_chip_and_seed_give_identical_bits(variant):
    a = Emulator(chip(variant), seed=3).run(500)
    b = Emulator(chip(variant), seed=3).run(500)
    assert_same_state(a, b)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_split_runs_equal_one_run(variant):
    assert_split_runs_bit_exact(chip(variant), seed=1, splits=[123, 0, 577])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkpoint_restores_bit_exactly(variant):
    assert_restore_bit_exact(chip(variant), seed=2, before=300, after=300)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_block_evaluation_order_does_not_change_any_bit(variant):
    rng = np.random.default_rng(0)
    a = Emulator(chip(variant), seed=4).run(400)
    for _ in range(3):
        order = rng.permutation(DEFAULT_ORDER)
        b = Emulator(chip(variant), seed=4).run(400, order=order)
        assert_same_state(a, b)


NODE_FIXED = FIXED8.replace('normalization = "norm"', 'normalization = "norm"\nmode = "node"').replace(
    "int_bits = 9, frac_bits = 3", "int_bits = 12, frac_bits = 3") + """
[network]
layers = [12, 20, 5]
[task]
name = "random"
inputs = 12
outputs = 5
[noise]
activation_sigma = 0.01
cost_sigma = 0.001
"""
SYNAPSE_VARIANTS = {
    "weight_fixed": FIXED8,
    "weight_float": "",
    "weight_latency": "[timing]\nlayer_pipelining = true\nbroadcast_latency = 2\ntau_theta = 3\n" + FIXED8,
    "node_fixed": NODE_FIXED,
    # weights of s0.5 and a large learning rate: weights and activations saturate
    "node_saturating": NODE_FIXED.replace(
        'integrator = { kind = "fixed", int_bits = 4, frac_bits = 11 }',
        'integrator = { kind = "fixed", int_bits = 0, frac_bits = 9, rounding = "stochastic" }').replace(
        'weight = { kind = "fixed", int_bits = 2, frac_bits = 5, rounding = "stochastic" }',
        'weight = { kind = "fixed", int_bits = 0, frac_bits = 5, rounding = "stochastic" }')
        + "[optimizer]\nlearning_rate = 0.9\n",
    "node_latency_tau": "[timing]\nlayer_pipelining = true\ncost_latency = 1\ntau_theta = 4\n" + NODE_FIXED,
    # the rows compiled for other rounding modes (each combination is a kernel of its own: these are
    # the modes other tests compile anyway): a truncating integrator, and nearest-even everywhere
    "weight_roundings": FIXED8.replace('int_bits = 4, frac_bits = 11 }', 'int_bits = 4, frac_bits = 11, rounding = "truncate" }'),
    "node_roundings": NODE_FIXED.replace('rounding = "stochastic" }', 'rounding = "nearest-even" }'),
}


def same_registers(a: Emulator, b: Emulator):
    """Every state array but the configuration (which holds the path taken)."""
    for key, value in a.state_arrays().items():
        if key != "cfg":
            np.testing.assert_array_equal(value, b.state_arrays()[key], err_msg=key)


@pytest.mark.parametrize("variant", list(SYNAPSE_VARIANTS))
def test_branch_free_synapse_rows_give_the_bits_of_the_general_path(variant):
    """The common chip's vectorised synapse rows and the general per-synapse
    integrator/updater are two implementations of one block: same bits."""
    c = loads_chip(SYNAPSE_VARIANTS[variant], f"{variant}.toml")
    fast = Emulator(c, seed=5)
    general = Emulator(c, seed=5)
    assert fast.variant.fast
    general.variant = dataclasses.replace(general.variant, fast=False, roundings=())
    # tau_theta = 1: the fast rows neither read nor write G (0 at every cycle's start); the general
    # path does both
    assert fast.st.cfg.g_clear == clears_every_cycle(c) == (c.timing.tau_theta == 1)
    fast.run(600)
    general.run(600)
    same_registers(fast, general)
    assert fast.events == general.events
    if variant == "node_saturating":
        assert fast.events["layer0.weight"][0] > 0


@pytest.mark.parametrize("poke", ["syn.G", "ctl.need_baseline"])
def test_an_integrator_or_a_baseline_slot_written_from_outside_acts_as_on_the_general_path(poke):
    """xor_pipelined clears its integrators every cycle, so its fast rows skip
    G; a G or a baseline request written through state_array is still
    integrated, applied and cleared as the path that reads G does it, also
    after a checkpoint of that state is restored."""
    c = load_chip(Path(__file__).resolve().parent.parent / "hw_models" / "xor_pipelined.toml")
    assert clears_every_cycle(c)
    fast, general = Emulator(c, seed=5), Emulator(c, seed=5)
    general.variant = dataclasses.replace(general.variant, fast=False, roundings=())
    for emu in (fast, general):
        emu.run(300)
        if poke == "syn.G":
            emu.state_array("syn.G")[:] = 2.0 ** -6
        else:
            emu.state_array("ctl.need_baseline")[0] = 1
    restored = Emulator.restore(fast.checkpoint())
    for emu in (fast, general, restored):
        emu.run(300)
    same_registers(fast, general)
    same_registers(restored, general)
    assert not fast.state_array("syn.G").any()
    fast.run(10)
    assert fast.st.cfg.g_clear


def test_the_fast_rows_are_compiled_for_the_chips_rounding_modes():
    fixed = variant_of(loads_chip(SYNAPSE_VARIANTS["weight_roundings"], "w.toml"))
    assert fixed.roundings == (ROUND_STOCHASTIC, ROUND_STOCHASTIC, ROUND_TRUNCATE)
    assert fixed.name.endswith("-round-sst")
    node = variant_of(loads_chip(SYNAPSE_VARIANTS["node_roundings"], "n.toml"))
    assert node.roundings == (ROUND_NEAREST_EVEN,) * 3
    # float registers do not round: float chips share the kernel of the 8-bit chips' modes
    assert variant_of(loads_chip("", "float.toml")).roundings == (ROUND_STOCHASTIC, ROUND_STOCHASTIC,
                                                                   ROUND_NEAREST_EVEN)
    # the general path (here: update noise) reads them at run time
    general = variant_of(loads_chip("[noise]\nweight_sigma = 0.001\n" + FIXED8, "noisy.toml"))
    assert not general.fast and general.roundings == ()


# layer 0 has PARALLEL_MIN_LAYER weights: its neurons' synapse rows are shared among the threads
NODE_WIDE = NODE_FIXED.replace("layers = [12, 20, 5]", "layers = [128, 64, 5]").replace(
    "inputs = 12", "inputs = 128")


@pytest.mark.parametrize("variant", ["node_fixed", "node_saturating", "node_latency_tau", "node_wide"])
def test_two_threads_give_the_bits_of_one(variant):
    c = loads_chip(NODE_WIDE if variant == "node_wide" else SYNAPSE_VARIANTS[variant], f"{variant}.toml")
    if variant == "node_wide":
        assert c.layer_sizes[0] * c.layer_sizes[1] == PARALLEL_MIN_LAYER
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        parallel = Emulator(c, seed=6, parallel=True).run(600)
    finally:
        numba.set_num_threads(before)
    serial = Emulator(c, seed=6, parallel=False).run(600)
    same_registers(parallel, serial)
    assert parallel.events == serial.events


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_a_seed_outside_63_bits_is_refused(seed):
    with pytest.raises(ValueError, match="seed must be an integer 0..9223372036854775807"):
        Emulator(chip(), seed=seed)


def test_the_largest_seed_runs():
    Emulator(chip(), seed=2**63 - 1).run(10)


def test_different_seeds_give_different_chips():
    a = Emulator(chip(), seed=0).registers["layer0.weight"]
    b = Emulator(chip(), seed=1).registers["layer0.weight"]
    assert not np.array_equal(a, b)


def test_evaluation_leaves_the_state_untouched():
    a = Emulator(chip("fixed8"), seed=5).run(200)
    b = Emulator(chip("fixed8"), seed=5).run(200)
    a.evaluate()
    assert_same_state(a, b)


def test_learning_rate_zero_only_estimates():
    emu = Emulator(chip("ideal", "[optimizer]\nlearning_rate = 0.0\n[timing]\ntau_theta = 1000\n"), 0)
    w0 = emu.registers["layer0.weight"]
    emu.run(999)
    assert np.array_equal(emu.registers["layer0.weight"], w0)
    assert np.any(emu.registers["layer0.weight_integrator"] != 0)


# -- fixed point: registers hold codes of their format, arithmetic is exact --

@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_registers_stay_in_their_format_and_overflow_is_counted(overflow):
    fmt = f'{{ kind = "fixed", int_bits = 0, frac_bits = 4, overflow = "{overflow}" }}'
    emu = Emulator(chip("fixed8", "[optimizer]\nlearning_rate = 0.9\n").replace(
        {"formats.weight": {"kind": "fixed", "int_bits": 0, "frac_bits": 4, "overflow": overflow}}), 0)
    emu.run(3000)
    assert_registers_in_range(emu)
    sat, wrap = emu.events["layer0.weight"]
    assert (sat > 0) if overflow == "saturate" else (wrap > 0 and sat == 0)
    del fmt


def test_saturating_weights_clamp_to_the_format_limits():
    emu = Emulator(chip("fixed8", "[optimizer]\nlearning_rate = 0.9\n").replace(
        {"formats.weight": {"kind": "fixed", "int_bits": 0, "frac_bits": 2, "rounding": "stochastic"}}), 0)
    seen = set()
    for _ in range(200):
        emu.run(10)
        seen.update(emu.codes["layer0.weight"].ravel().tolist() + emu.codes["layer1.weight"].ravel().tolist())
    assert emu.events["layer0.weight"][0] + emu.events["layer1.weight"][0] > 0
    assert seen <= set(range(-4, 4)) and (-4 in seen or 3 in seen)


def q(x: Fraction, frac: int, lo: int, hi: int) -> int:
    """Exact nearest-even rounding and saturation of a rational."""
    s = x * 2 ** frac
    fl = s.numerator // s.denominator
    r = s - fl
    code = fl + 1 if r > Fraction(1, 2) or (r == Fraction(1, 2) and fl % 2) else fl
    return min(max(code, lo), hi)


def F(v: float) -> Fraction:
    return Fraction(float(v))


def test_one_cycle_of_the_fixed_point_datapath_matches_exact_integer_arithmetic():
    text = FIXED8.replace(', rounding = "stochastic"', "")
    emu = Emulator(loads_chip(text + "[optimizer]\nlearning_rate = 0.1\n"), 7).run(50)
    f = emu.chip.formats
    K = emu.st.cfg
    for _ in range(20):
        before = emu.registers
        emu.run(1)
        after = emu.registers
        # the cost unit: C~ = q_cc(C - C0)
        c, c0 = F(after["cost"]), F(after["cost_baseline"])
        cc = f.cost_change
        assert F(after["cost_change"]) == q(c - c0, cc.frac_bits, cc.min_code, cc.max_code) * Fraction(1, 2 ** cc.frac_bits)
        # every synapse: theta' = q_w(theta - eta * q_int(0 + C~ * p * kappa)), G' = 0
        for layer in (0, 1):
            for reg, fmt in (("weight", f.weight), ("bias", f.bias)):
                theta = before[f"layer{layer}.{reg}"].ravel()
                p = before[f"layer{layer}.{reg}_perturbation"].ravel()
                got = emu.codes[f"layer{layer}.{reg}"].ravel()
                gi = f.integrator
                for i in range(len(theta)):
                    s = q(F(after["cost_change"]) * F(p[i]) * F(K[1]), gi.frac_bits, gi.min_code, gi.max_code)
                    s = Fraction(s, 2 ** gi.frac_bits)
                    want = q(F(theta[i]) - F(K[2]) * s, fmt.frac_bits, fmt.min_code, fmt.max_code)
                    assert got[i] == want, (layer, reg, i)


@settings(max_examples=25, deadline=None)
@given(chips(chip("fixed8"), {"formats.weight": fixed_formats(signed=True, rounding="stochastic", overflow="saturate",
                                                              int_bits=(0, 3), frac_bits=(3, 10))}),
       seeds(2**16))
def test_random_weight_formats_keep_every_register_representable(c, seed):
    assert_registers_in_range(Emulator(c, seed).run(300))


# -- latencies and counters ---------------------------------------------------

def test_remeasure_spends_one_baseline_cycle_per_change():
    emu = Emulator(chip("ideal", '[cost]\nbaseline = "remeasure"\n[timing]\ntau_x = 4\ntau_theta = 4\n'), 0)
    emu.run_steps(40)
    # one at cycle 0, then one after each of the 10 edges where x and theta change
    assert emu.step == 40 and emu.baseline_cycles == 10 and emu.cycle == 50


def test_pipelined_chip_broadcasts_after_its_latency():
    c = chip("ideal", "[timing]\nlayer_pipelining = true\ncost_latency = 1\nbroadcast_latency = 2\n")
    emu = Emulator(c, 0)
    seen = []
    for _ in range(8):
        emu.run(1)
        seen.append(emu.st.bc.out_valid[0])  # the broadcast valid bit
    # 2 layers + 1 + 2 = 5 cycles before the first cost change arrives
    assert seen == [0, 0, 0, 0, 0, 1, 1, 1]
