"""Saturation per register write, and the warning run summaries give (mgd_emu.saturation)."""
from mgd_emu import Emulator, load_chip
from mgd_emu.saturation import (WARN_FRACTION, driven_to_their_limits, register_elements, saturation_fractions,
                                saturation_warning)


def test_register_elements_follow_the_layer_sizes_and_the_perturbation_mode():
    weight = register_elements(load_chip("hw_models/xor_ideal.toml", {"network.layers": [2, 3, 1]}))
    assert weight["layer0.weight"] == 6 and weight["layer0.bias"] == 3 and weight["layer1.activation"] == 1 * 2
    assert weight["layer0.perturbation"] == 6 + 3 and weight["input"] == 2 and weight["cost_change"] == 1
    node = register_elements(load_chip("hw_models/xor_node.toml", {"cost.baseline": "remeasure"}))
    assert node["layer0.perturbation"] == node["layer0.activation"]


def test_a_dual_path_chip_writes_its_activations_and_cost_on_both_paths():
    dual = register_elements(load_chip("hw_models/xor_ideal.toml"))
    single = register_elements(load_chip("hw_models/xor_ideal.toml", {"cost.baseline": "remeasure"}))
    assert dual["layer0.activation"] == 2 * single["layer0.activation"] == 4
    assert dual["cost"] == 2 * single["cost"] and dual["cost_change"] == single["cost_change"] == 1


def test_an_activation_saturating_on_every_write_of_both_paths_is_100_percent():
    # u0.1 holds 0 and 0.5; with every weight and bias 4, each sum is at least 4: each sigmoid is above 0.98
    chip = load_chip("hw_models/xor_ideal.toml", {
        "formats.activation": {"kind": "fixed", "signed": False, "int_bits": 0, "frac_bits": 1}})
    emu = Emulator(chip, seed=0)
    emu.st.syn.theta[:] = 4.0
    emu.run(1)
    fractions = saturation_fractions(emu.events, chip, emu.cycle)
    assert fractions["layer0.activation"] == fractions["layer1.activation"] == 1.0


def test_the_fraction_is_saturations_per_write_and_only_frequent_ones_warn():
    chip = load_chip("hw_models/xor_ideal.toml")    # 2-2-1, dual path: layer0.activation has 2 x 2 writes a cycle
    events = {"layer0.activation": (400, 0), "layer0.weight": (3, 0), "cost": (0, 7)}
    assert saturation_fractions(events, chip, 1000) == {"layer0.activation": 0.1, "layer0.weight": 3 / 4000}
    message = saturation_warning(events, chip, 1000)   # float activations: never a neuron at its limit
    assert "layer0.activation 10 %" in message and "layer0.weight" not in message and "\n" not in message
    assert saturation_warning({"layer0.activation": (int(4000 * WARN_FRACTION) - 1, 0)}, chip, 1000) is None
    assert saturation_warning({}, chip, 0) is None


def test_an_input_format_too_narrow_for_the_data_is_reported():
    # parity inputs are 0 or 1; u0.1 holds at most 0.5, so every 1 saturates: half the input writes
    chip = load_chip("hw_models/xor_ideal.toml",
                     {"formats.input": {"kind": "fixed", "signed": False, "int_bits": 0, "frac_bits": 1}})
    emu = Emulator(chip, seed=0).run(2000)
    assert saturation_fractions(emu.events, chip, emu.cycle)["input"] > 0.3
    assert "input" in saturation_warning(emu.events, chip, emu.cycle)
    assert saturation_warning(Emulator(load_chip("hw_models/xor_ideal.toml"), 0).run(2000).events, chip, 2000) is None


U0_8 = {"kind": "fixed", "signed": False, "int_bits": 0, "frac_bits": 8}
S0_7 = {"kind": "fixed", "signed": True, "int_bits": 0, "frac_bits": 7}


def test_an_activation_format_holding_its_function_to_one_lsb_saturates_only_at_the_functions_limit():
    # u0.8 holds a sigmoid's [0, 1) but its last LSB: a saturation is an output that rounds to 1.0
    assert driven_to_their_limits(load_chip("hw_models/xor_8bit.toml")) == {"layer0.activation", "layer1.activation"}
    tanh = load_chip("hw_models/xor_8bit.toml", {"network.activation": "tanh", "formats.activation": S0_7})
    assert driven_to_their_limits(tanh) == {"layer0.activation", "layer1.activation"}   # s0.7: [-1, 1 - 1/128]
    unsigned_tanh = load_chip("hw_models/xor_8bit.toml", {"network.activation": "tanh"})
    assert driven_to_their_limits(unsigned_tanh) == {"layer1.activation"}   # u0.8 cannot hold tanh's negative half
    relu = load_chip("hw_models/xor_8bit.toml", {"network.activation": "relu"})
    assert driven_to_their_limits(relu) == {"layer1.activation"}      # unbounded: a saturation is a format too narrow
    half = load_chip("hw_models/xor_8bit.toml", {"formats.activation": {**U0_8, "frac_bits": 1}})
    assert driven_to_their_limits(half) == set()                      # u0.1 stops at 0.5: too coarse to tell
    u0_6 = load_chip("hw_models/xor_8bit.toml", {"formats.activation": {**U0_8, "frac_bits": 6}})
    u0_5 = load_chip("hw_models/xor_8bit.toml", {"formats.activation": {**U0_8, "frac_bits": 5}})
    assert len(driven_to_their_limits(u0_6)) == 2 and driven_to_their_limits(u0_5) == set()   # LSB <= 1/64
    assert driven_to_their_limits(load_chip("hw_models/xor_ideal.toml")) == set()   # float


def test_the_warning_tells_neurons_driven_to_their_limit_from_formats_too_narrow():
    chip = load_chip("hw_models/xor_8bit.toml")   # dual path: 4 writes of layer0.activation a cycle, 4 of the weights
    pinned = saturation_warning({"layer0.activation": (800, 0)}, chip, 1000)
    assert "layer0.activation 20 %" in pinned and "within one LSB of their activation function's limit" in pinned
    assert "too narrow" not in pinned
    both = saturation_warning({"layer0.activation": (800, 0), "layer0.weight": (400, 0)}, chip, 1000)
    narrow, limit = both.split("; neurons ")
    assert "layer0.weight 10 %" in narrow and "too narrow" in narrow and "layer0.activation" not in narrow
    assert "layer0.activation 20 %" in limit and "\n" not in both


def test_the_shipped_nist7x7_chip_trains_with_hidden_units_at_their_limit_not_with_a_format_too_narrow():
    chip = load_chip("hw_models/nist7x7_8bit.toml")
    emu = Emulator(chip, seed=0).run(100_000)
    message = saturation_warning(emu.events, chip, emu.cycle, threshold=0.01)
    assert "layer0.activation" in message and "too narrow" not in message



def test_registers_that_wrap_around_often_are_reported_too():
    chip = load_chip("hw_models/xor_8bit.toml")      # 4 weights of layer 0
    message = saturation_warning({"layer0.weight_integrator": (0, 400)}, chip, 1000)
    assert "registers wrap around in a large fraction of their writes (layer0.weight_integrator 10 %)" in message
    assert saturation_warning({"layer0.weight_integrator": (0, 100)}, chip, 1000) is None   # 2.5 %
