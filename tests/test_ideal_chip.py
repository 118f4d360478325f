"""An ideal chip (float formats, zero latency, no noise) is textbook MGD: the
engine and the float64 reference oracle agree register by register, step by step,
for every perturbation scheme, baseline, integrator and optimiser."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgd_emu import loads_chip
from mgd_emu.engine import Emulator
from mgd_emu.reference import Reference

# -- an ideal chip follows the reference step for step ----------------------

ACTIVATIONS = ["sigmoid", "tanh", "relu", "linear", "hard_sigmoid"]

IDEAL = st.fixed_dictionaries({
    "hidden": st.lists(st.integers(1, 4), min_size=0, max_size=2),
    "outputs": st.integers(1, 3),
    "activation": st.sampled_from(ACTIVATIONS),
    "output_activation": st.sampled_from(ACTIVATIONS),
    "bias": st.booleans(),
    "init": st.sampled_from(["uniform", "glorot"]),
    "cost": st.sampled_from(["mse", "cross_entropy"]),
    "mode": st.sampled_from(["weight", "node"]),
    "multiplexing": st.sampled_from(["code", "time", "frequency", "walsh"]),
    "normalization": st.sampled_from(["power", "norm", "step_length"]),
    "amplitude_is": st.sampled_from(["element", "norm"]),
    "baseline": st.sampled_from(["dual_path", "remeasure", "highpass"]),
    "integrator": st.sampled_from(["digital", "analog"]),
    "optimizer": st.sampled_from(["plain", "momentum"]),
    "tau_x": st.integers(1, 5), "tau_p": st.integers(1, 3), "windows": st.integers(1, 4),
    "divide": st.booleans(), "presynaptic": st.sampled_from(["live", "unperturbed"]),
    "limit": st.sampled_from([0.0, 0.01]), "seed": st.integers(0, 1000),
})


def ideal_chip(p):
    """A float, zero-latency, noiseless chip from a drawn parameter set
    (combinations the chip description refuses are mapped to allowed ones)."""
    baseline = p["baseline"]
    if p["integrator"] == "analog" and baseline == "remeasure":
        baseline = "dual_path"
    presyn = p["presynaptic"] if baseline == "dual_path" else "live"
    normalization = p["normalization"]
    if normalization == "step_length" and p["multiplexing"] not in ("code", "walsh"):
        normalization = "power"
    outputs = p["outputs"]
    cost = p["cost"] if outputs > 1 else "mse"
    task = ('name = "parity"\nbits = 3' if outputs == 1
            else f'name = "random"\ninputs = 3\noutputs = {outputs}\nsamples = 8')
    return loads_chip(f"""
[network]
layers = {[3] + p["hidden"] + [outputs]}
activation = "{p["activation"]}"
output_activation = "{p["output_activation"]}"
bias = {str(p["bias"]).lower()}
init = "{p["init"]}"
[perturbation]
mode = "{p["mode"]}"
multiplexing = "{p["multiplexing"]}"
normalization = "{normalization}"
amplitude_is = "{p["amplitude_is"]}"
presynaptic = "{presyn}"
amplitude = 0.05
freq_min = {0.2 / p["tau_p"]}
freq_max = {0.38 / p["tau_p"]}
[timing]
tau_x = {p["tau_x"]}
tau_p = {p["tau_p"]}
tau_theta = {p["tau_p"] * p["windows"]}
[cost]
function = "{cost}"
baseline = "{baseline}"
change_limit = {p["limit"]}
[integrator]
kind = "{p["integrator"]}"
[optimizer]
kind = "{p["optimizer"]}"
learning_rate = 0.5
momentum = 0.5
divide_by_tau_theta = {str(p["divide"]).lower()}
[task]
{task}
""", "ideal.toml")


def assert_registers_match(emu, ref, where):
    """Every register the reference models exists on the chip and holds the same value."""
    got, want = emu.registers, ref.registers
    missing = sorted(set(want) - set(got))
    assert not missing, f"registers the reference has but the chip lacks: {missing}"
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-12, err_msg=f"{name} {where}")


STEPS = 300


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(IDEAL)
def test_an_ideal_chip_is_textbook_mgd_step_for_step(p):
    chip = ideal_chip(p)
    emu, ref = Emulator(chip, p["seed"]), Reference(chip, p["seed"])
    assert_registers_match(emu, ref, "at reset")
    for k in range(1, STEPS + 1):
        emu.run_steps(1)
        ref.step()
        if k % 37 == 0 or k == STEPS:
            assert_registers_match(emu, ref, f"after step {k}")


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

