"""Noise sources have the magnitudes the chip description states.

Each test holds one sample, does not learn (learning rate 0) and perturbs by
a negligible amplitude (1e-9), so what varies is the noise alone. Bounds are
statistical, on fixed seeds: with n independent draws the sample standard
deviation of N(0, sigma^2) has a relative standard error of 1/sqrt(2n), and
the mean a standard error of sigma/sqrt(n); each bound is at least 4 of those.
"""
import math

import numpy as np
import pytest

from mgd_emu import loads_chip
from mgd_emu.engine import Emulator

QUIET = """
[network]
layers = [3, 4, 1]
[perturbation]
multiplexing = "code"
amplitude = 1e-9
amplitude_is = "element"
[optimizer]
learning_rate = 0.0
[task]
name = "parity"
bits = 3
"""

CYCLES = 20000  # relative standard error of a std: 1/sqrt(40000) = 0.5 %


def quiet_chip(noise: str, **overrides):
    timing = {"timing.tau_x": 10**9, "timing.tau_theta": 10**6}
    timing.update({k.replace("__", "."): v for k, v in overrides.items()})
    return loads_chip(QUIET + "[noise]\n" + noise, "noise.toml", timing)


def recorded(chip, probe, cycles=CYCLES, seed=1):
    emu = Emulator(chip, seed, probes=[probe]).run(cycles)
    return emu, emu.samples(probe.split()[0])[1]


def test_cost_noise_has_standard_deviation_cost_sigma():
    sigma = 0.01
    clean = float(recorded(quiet_chip(""), "cost", 10)[1][-1])
    _, cost = recorded(quiet_chip(f"cost_sigma = {sigma}"), "cost")
    cost = cost[1:]  # cycle 0 samples the reset register
    assert np.std(cost) == pytest.approx(sigma, rel=0.03)
    assert abs(np.mean(cost) - clean) < 4 * sigma / math.sqrt(len(cost))


def test_cost_noise_is_drawn_anew_for_every_measurement():
    _, cost = recorded(quiet_chip("cost_sigma = 0.01"), "cost")
    cost = cost[1:] - np.mean(cost[1:])
    lag1 = float(cost[1:] @ cost[:-1] / (cost @ cost))
    assert abs(lag1) < 4 / math.sqrt(len(cost))


def test_a_dual_path_cost_change_carries_both_paths_noise():
    # C and C0 are two measurements, each with its own draw: std(C - C0) = sqrt(2) sigma
    sigma = 0.01
    _, change = recorded(quiet_chip(f"cost_sigma = {sigma}"), "cost_change")
    assert np.std(change[1:]) == pytest.approx(math.sqrt(2) * sigma, rel=0.03)


def test_weight_noise_has_standard_deviation_weight_sigma_at_each_update_only():
    sigma, tau = 0.001, 4
    _, w = recorded(quiet_chip(f"weight_sigma = {sigma}", timing__tau_theta=tau), "layer0.weight")
    steps = np.diff(w.reshape(len(w), -1), axis=0)  # per cycle, per weight
    moved = np.flatnonzero(np.any(steps != 0, axis=1))
    assert len(set(moved % tau)) == 1, "weights changed between updates"
    assert len(moved) == pytest.approx(len(steps) / tau, abs=1)
    kicks = steps[moved].ravel()  # 5000 updates x 12 weights
    assert np.std(kicks) == pytest.approx(sigma, rel=0.03)
    assert abs(np.mean(kicks)) < 4 * sigma / math.sqrt(kicks.size)


def test_weight_noise_is_independent_per_parameter():
    _, w = recorded(quiet_chip("weight_sigma = 0.001", timing__tau_theta=1), "layer0.weight", cycles=5000)
    kicks = np.diff(w.reshape(len(w), -1), axis=0)
    corr = np.corrcoef(kicks.T)
    off_diagonal = corr[~np.eye(len(corr), dtype=bool)]
    assert np.max(np.abs(off_diagonal)) < 4 / math.sqrt(len(kicks))


def test_activation_noise_has_standard_deviation_activation_sigma_per_neuron():
    sigma = 0.01
    clean = recorded(quiet_chip(""), "layer0.activation", 10)[1][-1]
    _, act = recorded(quiet_chip(f"activation_sigma = {sigma}"), "layer0.activation")
    act = act[1:]
    np.testing.assert_allclose(np.std(act, axis=0), sigma, rtol=0.03)
    np.testing.assert_allclose(np.mean(act, axis=0), clean, atol=4 * sigma / math.sqrt(len(act)))
    corr = np.corrcoef(act.T)
    assert np.max(np.abs(corr[~np.eye(4, dtype=bool)])) < 4 / math.sqrt(len(act))


WIDE = 400  # neurons per draw of the static variation: a std's relative error 1/sqrt(2*401) = 3.5 %


def wide_chip(noise: str):
    return loads_chip(QUIET.replace("[3, 4, 1]", f"[3, {WIDE}, 1]") + "[noise]\n" + noise, "wide.toml")


def test_static_gain_and_offset_variation_have_the_stated_sigma():
    gain_sigma, offset_sigma = 0.1, 0.2
    emu = Emulator(wide_chip(f"gain_sigma = {gain_sigma}\noffset_sigma = {offset_sigma}"), 2)
    gains, offsets = emu.st.neu.gains, emu.st.neu.offsets
    n = len(gains)
    assert n == WIDE + 1
    assert np.std(gains) == pytest.approx(gain_sigma, rel=0.15)
    assert abs(np.mean(gains) - 1.0) < 4 * gain_sigma / math.sqrt(n)
    assert np.std(offsets) == pytest.approx(offset_sigma, rel=0.15)
    assert abs(np.mean(offsets)) < 4 * offset_sigma / math.sqrt(n)


def test_static_variation_is_fixed_by_the_seed_and_does_not_drift():
    chip = wide_chip("gain_sigma = 0.1\noffset_sigma = 0.2")
    a, b, other = Emulator(chip, 2), Emulator(chip, 2), Emulator(chip, 3)
    np.testing.assert_array_equal(a.st.neu.gains, b.st.neu.gains)
    assert not np.array_equal(a.st.neu.gains, other.st.neu.gains)
    before = a.st.neu.offsets.copy()
    a.run(1000)
    np.testing.assert_array_equal(a.st.neu.offsets, before)


def test_each_neuron_computes_its_activation_from_its_own_gain_and_offset():
    """a_j = f(gain_j * (z_j + offset_j)), here with linear neurons."""
    chip = loads_chip(QUIET.replace("[network]", '[network]\nactivation = "linear"\noutput_activation = "linear"')
                      + "[noise]\ngain_sigma = 0.1\noffset_sigma = 0.2", "linear.toml")
    emu = Emulator(chip, 4)
    regs, g, o = emu.registers, emu.st.neu.gains, emu.st.neu.offsets
    X = emu.task.train.inputs
    hidden = g[:4] * (X @ regs["layer0.weight"].T + regs["layer0.bias"] + o[:4])
    out = g[4:] * (hidden @ regs["layer1.weight"].T + regs["layer1.bias"] + o[4:])
    np.testing.assert_allclose(emu.outputs(emu.task.train), out, rtol=1e-12, atol=1e-15)
    assert not np.allclose(g, 1.0) and not np.allclose(o, 0.0)
