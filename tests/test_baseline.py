"""The backpropagation baseline (mgd_emu.baseline): the chip's network, its
initial weights and its sample order, trained with exact gradients."""
import numpy as np
import pytest

from mgd_emu import Emulator, load_chip
from mgd_emu.baseline import Backprop
from mgd_emu.reference import exact_gradient
from mgd_emu.studies import loads_study, run_study
from mgd_emu.studies.spec import StudyError

FLOAT = {f"formats.{c}.kind": "float" for c in ("input", "weight", "bias", "perturbation", "activation", "cost",
                                                "cost_change", "integrator", "learning_rate", "correlator_gain")}


def float_nist(**over):
    return load_chip("hw_models/nist7x7_8bit.toml", {**FLOAT, **over})


@pytest.mark.parametrize("over", [
    {},                                                                             # sigmoid, mse
    {"network.activation": "tanh", "cost.function": "cross_entropy", "network.output_activation": "linear"},
    {"network.activation": "relu", "network.bias": False},
    {"network.layers": [49, 7, 5, 4], "network.activation": "hard_sigmoid"},
])
def test_its_gradient_is_the_oracles_exact_gradient(over):
    chip = float_nist(**over)
    bp = Backprop(chip, seed=2)
    data = bp.task.train
    for i in (0, 17, 99):
        dW, db = bp.gradient(data.inputs[i], data.targets[i])
        rW, rb = exact_gradient(chip, bp.weights, bp.biases, data.inputs[i:i + 1], data.targets[i:i + 1])
        for a, b in zip(dW, rW):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        for a, b in zip(db, rb):   # without biases there is nothing to train there
            np.testing.assert_allclose(a, b if chip.network.bias else 0.0, rtol=1e-12, atol=1e-15)


def test_it_starts_from_the_chips_initial_weights_and_evaluates_as_the_chip():
    chip = float_nist()
    bp, emu = Backprop(chip, seed=5), Emulator(chip, seed=5)
    for i in range(2):
        np.testing.assert_array_equal(bp.weights[i], emu.registers[f"layer{i}.weight"])
        np.testing.assert_array_equal(bp.biases[i], emu.registers[f"layer{i}.bias"])
    cost, acc = bp.evaluate()
    emu_cost, emu_acc = emu.evaluate()
    assert acc == emu_acc and cost == pytest.approx(emu_cost, rel=1e-12)


@pytest.mark.parametrize("tau_x", [1, 3])
def test_it_visits_the_samples_in_the_chips_order(tau_x):
    chip = load_chip("hw_models/xor_ideal.toml", {"task.bits": 3, "network.layers": [3, 2, 1],
                                                  "timing.tau_x": tau_x})
    bp, emu = Backprop(chip, seed=9), Emulator(chip, seed=9)
    seen = []
    for _ in range(3 * 8 * tau_x):   # three epochs of the 8 patterns
        assert bp.sample_index == emu.registers["sample_index"]
        seen.append(bp.sample_index)
        bp.step()
        emu.run(1)
    assert sorted(seen[:8 * tau_x:tau_x]) == list(range(8))   # an epoch is a permutation
    assert seen[:8 * tau_x] != seen[8 * tau_x:16 * tau_x]     # reshuffled each epoch


def one_sample_chip(tmp_path, **over):
    """A 2-1-1 linear network learning one sample, x = (1, 0.5), target 1."""
    np.savez(tmp_path / "one.npz", x=np.array([[1.0, 0.5]]), y=np.array([[1.0]]))
    (tmp_path / "one.toml").write_text(
        '[network]\nlayers = [2, 1, 1]\nactivation = "linear"\noutput_activation = "linear"\n'
        f'[task]\nname = "file"\npath = "{tmp_path / "one.npz"}"\nsplit = "none"\n'
        '[optimizer]\nlearning_rate = 0.125\n')
    return load_chip(tmp_path / "one.toml", over)


def set_weights(bp):
    bp.weights = [np.array([[0.5, -1.0]]), np.array([[2.0]])]
    bp.biases = [np.array([0.25]), np.array([-0.5])]


def test_one_plain_step_by_hand(tmp_path):
    # h = 0.5*1 - 1.0*0.5 + 0.25 = 0.25;  y = 2*0.25 - 0.5 = 0;  C = (y - 1)^2, dC/dy = -2
    # dW2 = -2*h = -0.5, db2 = -2;  dC/dh = -2*2 = -4: dW1 = -4*(1, 0.5) = (-4, -2), db1 = -4
    # eta = 0.125: W1 = (0.5 + 0.5, -1 + 0.25), b1 = 0.25 + 0.5, W2 = 2 + 0.0625, b2 = -0.5 + 0.25
    bp = Backprop(one_sample_chip(tmp_path), seed=0)
    set_weights(bp)
    bp.step()
    assert bp.weights[0].tolist() == [[1.0, -0.75]] and bp.biases[0].tolist() == [0.75]
    assert bp.weights[1].tolist() == [[2.0625]] and bp.biases[1].tolist() == [-0.25]
    assert bp.cycle == 1


def test_momentum_accumulates_eta_times_the_gradient(tmp_path):
    bp = Backprop(one_sample_chip(tmp_path, **{"optimizer.kind": "momentum", "optimizer.momentum": 0.5}), seed=0)
    set_weights(bp)
    bp.step()   # v = 0.125 g1: the same first step as plain
    assert bp.weights[0].tolist() == [[1.0, -0.75]] and bp.vw[0].tolist() == [[-0.5, -0.25]]
    x, t = np.array([1.0, 0.5]), np.array([1.0])
    g2 = bp.gradient(x, t)
    before = [w.copy() for w in bp.weights]
    v_expected = [0.5 * v + 0.125 * g for v, g in zip(bp.vw, g2[0])]
    bp.step()
    for w0, w1, v in zip(before, bp.weights, v_expected):
        np.testing.assert_array_equal(w1, w0 - v)


def test_it_learns_nist7x7():
    bp = Backprop(float_nist(**{"optimizer.learning_rate": 3.0, "network.init": "glorot"}), seed=0)
    assert bp.run(8_000).evaluate()[1] >= 0.95


# ------------------------------------------------------------------ in a study

def test_a_study_trains_the_same_points_with_mgd_and_backprop(tmp_path):
    text = ('[study]\nchip = "xor_ideal"\nseeds = [0, 1]\ncycles = 3000\neval_every = 1000\ntargets = [1.0]\n'
            '[grid]\ntrainer = ["mgd", "backprop"]\n"optimizer.learning_rate" = [0.5, 1.0]\n')
    study = loads_study(text, "s.toml")
    ds = run_study(study, serial=True).dataset
    assert list(ds.trainer.values) == ["mgd", "backprop"]
    for j, lr in enumerate([0.5, 1.0]):
        chip = load_chip("hw_models/xor_ideal.toml", {"optimizer.learning_rate": lr})
        for k, seed in enumerate([0, 1]):
            bp, emu = Backprop(chip, seed), Emulator(chip, seed)
            bp_curve = [bp.run(1000).evaluate()[1] for _ in range(3)]
            mgd_curve = [emu.run(1000).evaluate()[1] for _ in range(3)]
            assert list(ds.accuracy.isel(trainer=1, seed=k)[j].values) == bp_curve
            assert list(ds.accuracy.isel(trainer=0, seed=k)[j].values) == mgd_curve


@pytest.mark.parametrize("section, value, words", [
    ("[grid]\ntrainer", '["mgd", "sgd"]', "grid.trainer: must be a list of trainers"),
    ("[zip.m]\n\"optimizer.learning_rate\" = [0.1, 0.2]\ntrainer", '["mgd"]', "zip.m.trainer: has 1 values"),
    ("[set]\ntrainer", '"backprop"', "set.trainer: is chosen per grid point"),
])
def test_a_bad_trainer_is_one_line_naming_the_key(section, value, words):
    text = f'[study]\nchip = "xor_ideal"\nseeds = [0]\ncycles = 1000\n{section} = {value}\n'
    with pytest.raises(StudyError, match=words) as err:
        loads_study(text, "s.toml")
    assert "\n" not in str(err.value) and str(err.value).startswith("s.toml: ")
