"""Chip descriptions: every shipped file loads, bad input is refused clearly."""
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgd_emu import ChipError, load_chip, loads_chip
from mgd_emu.spec import SCHEMA, parse_override

HW = Path(__file__).resolve().parents[1] / "hw_models"
SHIPPED = sorted(HW.glob("*.toml"))


def refused(text: str, key: str, *words: str, overrides=None) -> ChipError:
    with pytest.raises(ChipError) as info:
        loads_chip(text, "chip.toml", overrides)
    err = info.value
    assert err.key == key, str(err)
    assert str(err).startswith(f"chip.toml: {key}"), str(err)
    for w in words:
        assert w in str(err), str(err)
    return err


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_chips_load_and_round_trip(path):
    chip = load_chip(path)
    assert chip.name == path.stem
    assert loads_chip(chip.to_toml(), str(path)) == chip


def test_an_empty_file_is_the_default_chip():
    chip = loads_chip("", "chip.toml")
    assert chip.network.layers == (2, 2, 1)
    assert chip.timing.tau_theta == 1
    assert chip.formats.weight.kind == "float"


def test_the_description_is_immutable():
    chip = loads_chip("")
    with pytest.raises(AttributeError):
        chip.timing.tau_x = 3
    with pytest.raises(TypeError):
        chip.data["timing"]["tau_x"] = 3


def test_a_fixed_format_is_resolved_with_its_defaults():
    chip = loads_chip('[formats]\nweight = { kind = "fixed", int_bits = 1, frac_bits = 6 }')
    w = chip.formats.weight
    assert (w.signed, w.int_bits, w.frac_bits, w.rounding, w.overflow) == (True, 1, 6, "nearest-even", "saturate")
    assert w.width == 8


def test_overrides_use_dotted_keys_and_the_same_validation():
    chip = loads_chip('[formats]\nweight = { kind = "fixed", int_bits = 1, frac_bits = 6 }',
                      overrides={"formats.weight.frac_bits": 5, "timing.tau_x": 4})
    assert chip.formats.weight.frac_bits == 5 and chip.timing.tau_x == 4
    refused("", "timing.tau_x", "an integer in [1,", overrides={"timing.tau_x": 0})


def test_replace_returns_a_new_validated_chip():
    chip = loads_chip("")
    other = chip.replace({"optimizer.learning_rate": 0.5})
    assert other.optimizer.learning_rate == 0.5 and chip.optimizer.learning_rate == 0.1


def test_parse_override_reads_toml_literals_and_bare_words():
    assert parse_override("timing.tau_x=4") == ("timing.tau_x", 4)
    assert parse_override("network.layers=[2,3,1]") == ("network.layers", [2, 3, 1])
    assert parse_override("formats.weight.rounding=nearest-even") == ("formats.weight.rounding", "nearest-even")
    with pytest.raises(ChipError):
        parse_override("timing.tau_x")


# -- refusals: each names the file, the key and what is allowed --------------

def test_unknown_key_suggests_the_closest_name():
    refused("[timing]\ntau_thetta = 4", "timing.tau_thetta", "did you mean 'tau_theta'")


def test_unknown_section_is_refused():
    refused("[timming]\ntau_x = 1", "timming", "did you mean 'timing'")


def test_wrong_type_is_refused():
    refused('[timing]\ntau_x = "fast"', "timing.tau_x", "an integer")
    refused("[network]\nbias = 1", "network.bias", "true or false")


def test_width_out_of_range_is_refused():
    refused('[formats]\nweight = { kind = "fixed", int_bits = 20, frac_bits = 20 }', "formats.weight", "1..32")
    refused('[formats]\nweight = { kind = "fixed", signed = false, int_bits = 0, frac_bits = 0 }', "formats.weight", "1..32")
    refused('[formats]\nweight = { kind = "fixed", int_bits = -1, frac_bits = 3 }', "formats.weight.int_bits", "0..32")


def test_unknown_rounding_mode_is_refused():
    refused('[formats]\nweight = { kind = "fixed", int_bits = 1, frac_bits = 6, rounding = "convergent" }',
            "formats.weight.rounding", "truncate, nearest-even, stochastic")


def test_tau_theta_must_be_a_multiple_of_tau_p():
    refused("[timing]\ntau_p = 3\ntau_theta = 4", "timing.tau_theta", "multiple of timing.tau_p = 3")


def test_amplitude_that_is_zero_in_its_format_is_refused():
    refused('[perturbation]\namplitude = 0.001\n[formats]\nperturbation = { kind = "fixed", int_bits = 0, frac_bits = 4 }',
            "perturbation.amplitude", "is zero in formats.perturbation")


def test_correlator_delay_longer_than_its_delay_line_is_refused():
    refused("[timing]\ncost_latency = 3\ndelay_line_length = 2", "timing.correlator_delay", "delay_line_length = 2")
    refused("[timing]\ncorrelator_delay = 9\ndelay_line_length = 4", "timing.correlator_delay", "longer than its delay line")


def test_an_analog_integrator_cannot_remeasure_its_baseline():
    refused('[integrator]\nkind = "analog"\n[cost]\nbaseline = "remeasure"', "cost.baseline", 'needs integrator.kind = "digital"')


def test_unknown_activation_is_refused():
    refused('[network]\nactivation = "sigmoidd"', "network.activation", "did you mean 'sigmoid'")
    refused('[network]\nactivation = "softplus"', "network.activation", '"sigmoid"')


def test_toml_syntax_error_gives_its_line():
    with pytest.raises(ChipError) as info:
        loads_chip("[timing]\ntau_x = = 3", "chip.toml")
    assert "line 2" in str(info.value) and "TOML syntax error" in str(info.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ChipError, match="no such file"):
        load_chip(tmp_path / "nope.toml")


def test_layer_sizes_must_fit_the_task():
    refused("[network]\nlayers = [4, 2, 3]", "network.layers", "task parity needs 2 inputs and 1 outputs")
    refused('[network]\nlayers = [2, 2, 1]\n[task]\nname = "digits"', "network.layers", "start with 64 and end with 10")
    assert loads_chip('[network]\nlayers = [3, 4, 1]\n[task]\nname = "parity"\nbits = 3').layer_sizes == (3, 4, 1)


def test_unknown_task_parameter_is_refused():
    refused('[task]\nname = "parity"\nbitz = 3', "task.bitz", "did you mean 'bits'")
    refused('[task]\nname = "parity"\nbits = 99', "task.bits")


def test_frequencies_must_stay_below_nyquist():
    refused('[perturbation]\nmultiplexing = "frequency"\nfreq_min = 0.1\nfreq_max = 0.3\n[timing]\ntau_p = 2\ntau_theta = 2',
            "perturbation.freq_max", "Nyquist")


def test_a_datapath_wider_than_the_exact_range_is_refused():
    wide = '{ kind = "fixed", int_bits = 8, frac_bits = 23 }'
    refused(f"[formats]\nweight = {wide}\nperturbation = {wide}\ninput = {wide}\nbias = {wide}", "formats", "53")


def test_nothing_in_a_chip_file_is_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = f'[chip]\nname = "__import__(\'os\').system(\'touch {marker}\')"'
    chip = loads_chip(text)
    assert not marker.exists() and "__import__" in chip.name


# -- fuzzing: the loader either loads or raises ChipError ---------------------

def _section_values():
    scalar = st.one_of(st.integers(-5, 70), st.floats(allow_nan=True, allow_infinity=True),
                       st.booleans(), st.text(max_size=12), st.sampled_from(["auto", "fixed", "float", "code", "node"]))
    fmt = st.fixed_dictionaries({}, optional={
        "kind": st.sampled_from(["fixed", "float", "x"]), "signed": st.booleans(),
        "int_bits": st.integers(-2, 40), "frac_bits": st.integers(-2, 40),
        "rounding": st.sampled_from(["truncate", "nearest-even", "stochastic", "up"]),
        "overflow": st.sampled_from(["saturate", "wrap", "x"])})
    return st.one_of(scalar, fmt, st.lists(st.integers(-1, 5), max_size=5))


@st.composite
def descriptions(draw):
    out = {}
    for section in draw(st.lists(st.sampled_from(list(SCHEMA) + ["bogus"]), max_size=5)):
        keys = [k.name for k in SCHEMA.get(section, ("", ()))[1]] + ["bogus", "bits", "name"]
        out[section] = {k: draw(_section_values()) for k in draw(st.lists(st.sampled_from(keys), max_size=4))}
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descriptions())
def test_random_descriptions_load_or_raise_chip_error(raw):
    from mgd_emu.spec import from_dict

    try:
        chip = from_dict(raw, "fuzz.toml")
    except ChipError as err:
        assert str(err).startswith("fuzz.toml")
        return
    assert loads_chip(chip.to_toml(), "fuzz.toml") == chip


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SHIPPED or [None]), st.data())
def test_mutated_shipped_descriptions_load_or_raise_chip_error(path, data):
    if path is None:
        return
    chip = load_chip(path)
    section = data.draw(st.sampled_from([s for s in SCHEMA if s != "chip"]))
    keys = list(chip.data[section]) or ["name"]
    key = data.draw(st.sampled_from(keys))
    value = data.draw(_section_values())
    try:
        mutated = chip.replace({f"{section}.{key}": value})
    except ChipError:
        return
    assert loads_chip(mutated.to_toml()) == mutated


def test_the_readme_reference_is_the_schema():
    from mgd_emu.spec import reference_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert reference_markdown() in readme, "regenerate: python -c 'from mgd_emu.spec import reference_markdown as r; print(r())'"
