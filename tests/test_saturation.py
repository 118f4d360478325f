"""Saturation per register write, and the warning run summaries give (mgd_emu.saturation)."""
from mgd_emu import Emulator, load_chip
from mgd_emu.saturation import WARN_FRACTION, register_elements, saturation_fractions, saturation_warning


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
    message = saturation_warning(events, chip, 1000)
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
