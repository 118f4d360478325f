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


def blamed(text: str, overrides, where: str, key: str, *words: str) -> ChipError:
    """An override's error: the message starts with what it blames (`where`)."""
    with pytest.raises(ChipError) as info:
        loads_chip(text, "chip.toml", overrides)
    err = info.value
    assert err.key == key, str(err)
    assert str(err).startswith(f"{where}: "), str(err)
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
    blamed("", {"timing.tau_x": 0}, "--set timing.tau_x=0", "timing.tau_x", "an integer in [1,")


def test_an_override_table_is_copied_not_written_into_by_a_later_key():
    table = {"kind": "fixed", "int_bits": 2, "frac_bits": 5}
    chip = loads_chip("", overrides={"formats.weight": table, "formats.weight.frac_bits": 4})
    assert chip.formats.weight.frac_bits == 4 and table == {"kind": "fixed", "int_bits": 2, "frac_bits": 5}


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


U8 = '{ kind = "fixed", signed = false, int_bits = 0, frac_bits = 8 }'
LR12 = '[formats]\nlearning_rate = { kind = "fixed", signed = false, int_bits = 0, frac_bits = 12 }\n'


@pytest.mark.parametrize("mux", ["code", "walsh", "frequency"])
def test_an_unsigned_perturbation_format_is_refused_where_the_generators_write_negative_values(mux):
    refused(f'[perturbation]\nmultiplexing = "{mux}"\namplitude = 0.1\n[formats]\nperturbation = {U8}',
            "formats.perturbation.signed", f"must be true with {mux} multiplexing", 'only multiplexing = "time"')


def test_time_multiplexing_may_use_an_unsigned_perturbation_format():
    chip = loads_chip(f'[perturbation]\nmultiplexing = "time"\namplitude = 0.1\n[formats]\nperturbation = {U8}')
    assert not chip.formats.perturbation.signed


def test_a_divided_learning_rate_that_is_zero_in_its_format_is_refused():
    # 0.05 / 1000 = 5e-5 is below half the LSB 2^-12 = 2.4e-4: the register would hold 0
    refused(LR12 + "[optimizer]\nlearning_rate = 0.05\ndivide_by_tau_theta = true\n[timing]\ntau_theta = 1000",
            "optimizer.learning_rate", "eta/tau_theta", "= 5e-05 is zero in formats.learning_rate")


def test_a_divided_learning_rate_is_checked_as_divided():
    # 2.0 alone overflows u0.12, but the register holds 2.0/100 = 0.02
    chip = loads_chip(LR12 + "[optimizer]\nlearning_rate = 2.0\ndivide_by_tau_theta = true\n[timing]\ntau_theta = 100")
    assert chip.optimizer.learning_rate == 2.0
    refused(LR12 + "[optimizer]\nlearning_rate = 2.0", "optimizer.learning_rate", "overflows formats.learning_rate")


def test_an_analog_leak_that_is_zero_in_its_format_is_refused():
    # lambda = 1/10001 is below half the LSB of u0.12: the integrator would stay 0
    refused(LR12 + '[integrator]\nkind = "analog"\n[timing]\ntau_theta = 10000',
            "timing.tau_theta", "lambda = 1/(tau_theta+1)", "is zero in formats.learning_rate")


def test_a_constant_overflows_only_if_its_rounded_value_is_out_of_range():
    # u0.12 holds at most 4095/4096 = 0.999756; 0.99985 rounds to that code, 0.99995 to 4096
    assert loads_chip(LR12 + "[optimizer]\nlearning_rate = 0.99985").optimizer.learning_rate == 0.99985
    refused(LR12 + "[optimizer]\nlearning_rate = 0.99995", "optimizer.learning_rate", "overflows formats.learning_rate")
    # the same holds for the analog beta = 5000/5001 = 0.9998: held as 4095/4096
    assert loads_chip(LR12 + '[integrator]\nkind = "analog"\n[timing]\ntau_theta = 5000').timing.tau_theta == 5000


def test_an_analog_integrator_whose_constants_fit_is_accepted():
    assert loads_chip(LR12 + '[integrator]\nkind = "analog"\n[timing]\ntau_theta = 1000').timing.tau_theta == 1000


def test_a_highpass_coefficient_that_is_zero_or_one_in_its_format_is_refused():
    refused(LR12 + '[cost]\nbaseline = "highpass"\ntau_hp = 0.0001', "cost.tau_hp", "is zero in formats.learning_rate")
    refused('[formats]\nlearning_rate = { kind = "fixed", signed = false, int_bits = 1, frac_bits = 12 }\n'
            '[cost]\nbaseline = "highpass"\ntau_hp = 1000000.0', "cost.tau_hp", "rounds to 1", "would not decay")
    assert loads_chip(LR12 + '[cost]\nbaseline = "highpass"\ntau_hp = 1.6').cost.tau_hp == 1.6


def test_constants_of_blocks_the_chip_does_not_use_are_not_checked():
    # a digital chip never uses beta and lambda, a dual-path chip never the high-pass coefficient
    assert loads_chip(LR12 + "[timing]\ntau_theta = 10000\n[cost]\ntau_hp = 0.0001").timing.tau_theta == 10000


KAPPA13 = ('[perturbation]\namplitude = 0.0117\namplitude_is = "element"\nnormalization = "power"\n'
           '[formats]\nperturbation = { kind = "fixed", int_bits = 0, frac_bits = 7 }\n'
           'correlator_gain = { kind = "fixed", signed = false, int_bits = 13, frac_bits = 0 }\n')


def test_the_correlator_gain_is_checked_from_the_amplitude_the_register_holds():
    # 1/0.0117^2 = 7305 fits u13.0 (max 8191), but s0.7 holds 0.0117 as 1/128,
    # and the engine's 1/N = 128^2 = 16384 would saturate
    refused(KAPPA13, "formats.correlator_gain", "1/N = 16384", "amplitude 0.0078125", "max 8191")
    assert loads_chip(KAPPA13.replace("int_bits = 13", "int_bits = 15")).formats.correlator_gain.int_bits == 15


def test_cross_entropy_with_a_single_output_is_refused():
    refused('[cost]\nfunction = "cross_entropy"', "cost.function", "at least 2 outputs", "identically 0")
    two = loads_chip('[cost]\nfunction = "cross_entropy"\n[network]\nlayers = [3, 2]\n'
                     '[task]\nname = "random"\ninputs = 3\noutputs = 2')
    assert two.cost.function == "cross_entropy"


# -- overrides: an error an override causes names the override ---------------

def test_an_unknown_key_in_an_override_names_the_override_not_the_file():
    err = blamed("", {"timing.tau_thta": 4}, "--set timing.tau_thta=4", "timing.tau_thta",
                 "unknown key; did you mean 'tau_theta'")
    assert "chip.toml" not in str(err)


def test_a_shipped_file_is_not_blamed_for_an_override():
    with pytest.raises(ChipError) as info:
        load_chip(HW / "xor_8bit.toml", {"timing.tau_thta": 4})
    assert str(info.value).startswith("--set timing.tau_thta=4: unknown key; did you mean 'tau_theta'?")
    assert "xor_8bit.toml" not in str(info.value)


def test_a_bad_override_value_names_the_override_in_the_command_line_spelling():
    blamed('[formats]\nweight = { kind = "fixed", int_bits = 1, frac_bits = 6 }', {"formats.weight.rounding": "up"},
           "--set formats.weight.rounding=up", "formats.weight.rounding", "truncate, nearest-even, stochastic")
    blamed("", {"network.layers": [2, 0, 1]}, "--set network.layers=[2, 0, 1]", "network.layers")
    blamed("[timing]\ntau_x = 2", {"timing.tau_x.fast": 1}, "--set timing.tau_x.fast=1: timing.tau_x", "timing.tau_x",
           "is a value, not a table")


def test_an_error_inside_an_overridden_table_names_the_override_and_the_key():
    blamed("", {"formats.weight": {"kind": "fixd"}}, '--set formats.weight={ kind = "fixd" }: formats.weight.kind',
           "formats.weight.kind", '"float" or "fixed"')


def test_an_override_that_clashes_with_the_file_names_both():
    blamed("[timing]\ntau_theta = 4", {"timing.tau_p": 3}, "chip.toml with --set timing.tau_p=3: timing.tau_theta",
           "timing.tau_theta", "multiple of timing.tau_p = 3")


def test_the_files_own_error_is_still_the_files():
    refused("[timing]\ntau_thetta = 4", "timing.tau_thetta", "did you mean 'tau_theta'", overrides={"timing.tau_x": 2})


def test_replace_names_the_override_it_was_given():
    chip = loads_chip("", "chip.toml")
    with pytest.raises(ChipError) as info:
        chip.replace({"formats.weight.frac_bits": 40})
    assert str(info.value).startswith("chip.toml with formats.weight.frac_bits=40: "), str(info.value)


def test_overrides_that_are_not_a_mapping_are_refused_with_chip_error(tmp_path):
    path = tmp_path / "chip.toml"
    path.write_text("")
    for bad in (["timing.tau_x=4"], "timing.tau_x=4", {3: 4}):
        with pytest.raises(ChipError, match="override") as info:
            load_chip(path, bad)
        assert str(info.value).startswith(str(path))
    with pytest.raises(ChipError, match="a mapping of dotted keys"):
        loads_chip("").replace([("timing.tau_x", 4)])


def test_a_fixed_point_key_on_a_float_format_says_how_to_make_it_fixed():
    err = blamed("", {"formats.weight.frac_bits": 5}, "--set formats.weight.frac_bits=5", "formats.weight.frac_bits",
                 'only applies to kind = "fixed"', "float", 'kind = "fixed" with int_bits and frac_bits')
    assert "None" not in str(err)
    blamed('[formats]\nweight = { kind = "float" }', {"formats.weight.frac_bits": 5}, "--set formats.weight.frac_bits=5",
           "formats.weight.frac_bits", 'formats.weight is kind = "float"')
    refused('[formats]\nweight = { int_bits = 1, frac_bits = 6 }', "formats.weight.int_bits", "is float (it gives no kind",
            'kind = "fixed"')


def test_a_kind_float_override_replaces_a_fixed_format():
    text = '[formats]\nweight = { kind = "fixed", int_bits = 1, frac_bits = 6, rounding = "stochastic" }'
    assert loads_chip(text, overrides={"formats.weight.kind": "float"}).formats.weight.kind == "float"
    # other keys set after it still apply, and are refused as for any float format
    blamed(text, {"formats.weight.kind": "float", "formats.weight.frac_bits": 3}, "--set formats.weight.frac_bits=3",
           "formats.weight.frac_bits", 'is kind = "float"')



def test_a_task_name_override_replaces_the_task_table(tmp_path):
    """The old task's keys (parity's bits) belong to the old task; the keys
    set with the new name are checked against the new task."""
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((20, 2)), y=np.arange(20) % 2)
    parity = HW / "xor_8bit.toml"
    chip = load_chip(parity, {"task.name": "file", "task.path": str(tmp_path / "d.npz"),
                              "network.layers": [2, 2, 2]})
    assert chip.task.name == "file" and "bits" not in chip.to_dict()["task"]
    assert load_chip(parity, {"task.name": "parity", "task.bits": 3, "network.layers": [3, 3, 1]}).task.bits == 3
    with pytest.raises(ChipError, match="--set task.bits=2: unknown key"):
        load_chip(parity, {"task.name": "file", "task.path": str(tmp_path / "d.npz"), "task.bits": 2})
    assert load_chip(parity, {"task.name": "parity"}).task.bits == 2, "the same name keeps the table"

def test_a_kind_fixed_override_keeps_the_other_keys():
    chip = loads_chip("", overrides={"formats.weight.kind": "fixed", "formats.weight.int_bits": 1,
                                     "formats.weight.frac_bits": 6})
    assert (chip.formats.weight.kind, chip.formats.weight.width) == ("fixed", 8)


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


def test_a_shipped_chip_loads_by_its_name_where_no_such_file_is_here(tmp_path, monkeypatch):
    assert load_chip("nist7x7_8bit") == load_chip("hw_models/nist7x7_8bit.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ChipError, match="nist7x7_8bt: no such file"):
        load_chip("nist7x7_8bt")
