"""The chip's gradient estimate against the exact gradient, and the timing
effects users come to study, against theory."""
import math

import numpy as np
import pytest

from mgd_emu import loads_chip
from mgd_emu.engine import Emulator
from mgd_emu.reference import cost, exact_gradient, forward

NET = """
[network]
layers = [3, 4, 1]
[task]
name = "parity"
bits = 3
[optimizer]
learning_rate = 0.0
"""


def estimating_chip(extra: str, steps: int, tau_p: int = 1):
    """A chip that holds one sample and integrates without updating."""
    timing = {"timing.tau_x": 10**9, "timing.tau_p": tau_p, "timing.tau_theta": 10 * steps * tau_p}
    return loads_chip(NET + extra, "estimate.toml", timing)


def flat_gradient(emu):
    """Exact gradient of the cost of the sample the chip holds, flattened
    in the chip's parameter order (per layer: weights row-major, biases)."""
    regs = emu.registers
    n = len(emu.chip.layer_sizes) - 1
    W = [regs[f"layer{i}.weight"] for i in range(n)]
    b = [regs[f"layer{i}.bias"] for i in range(n)]
    data = emu.task.train
    idx = int(regs["sample_index"])
    dW, db = exact_gradient(emu.chip, W, b, data.inputs[idx:idx + 1], data.targets[idx:idx + 1])
    return np.concatenate([np.concatenate([w.ravel(), v]) for w, v in zip(dW, db)])


def flat_integrators(emu):
    regs = emu.registers
    n = len(emu.chip.layer_sizes) - 1
    return np.concatenate([np.concatenate([regs[f"layer{i}.weight_integrator"].ravel(),
                                           regs[f"layer{i}.bias_integrator"]]) for i in range(n)])


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


SCHEMES = {
    "code": '[perturbation]\nmultiplexing = "code"\namplitude = 0.001\namplitude_is = "element"',
    "time": '[perturbation]\nmultiplexing = "time"\namplitude = 0.001\namplitude_is = "element"',
    "frequency": '[perturbation]\nmultiplexing = "frequency"\namplitude = 0.001\namplitude_is = "element"',
    "walsh": '[perturbation]\nmultiplexing = "walsh"\namplitude = 0.001\namplitude_is = "element"',
    "node_code": '[perturbation]\nmode = "node"\nmultiplexing = "code"\namplitude = 0.001\namplitude_is = "element"',
    "node_walsh": '[perturbation]\nmode = "node"\nmultiplexing = "walsh"\namplitude = 0.001\namplitude_is = "element"',
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_the_integrated_estimate_points_along_the_exact_gradient(scheme):
    steps = 12800
    emu = Emulator(estimating_chip(SCHEMES[scheme], steps), seed=1).run(steps)
    assert cosine(flat_integrators(emu), flat_gradient(emu)) >= 0.95


@pytest.mark.parametrize("scheme", ["code", "walsh", "time"])
def test_with_power_normalisation_the_mean_correlation_is_the_gradient(scheme):
    steps = 25600
    emu = Emulator(estimating_chip(SCHEMES[scheme], steps), seed=2).run(steps)
    mean_e, grad = flat_integrators(emu) / steps, flat_gradient(emu)
    assert np.linalg.norm(mean_e - grad) <= 0.1 * np.linalg.norm(grad)


def test_one_time_multiplexing_sweep_is_the_forward_difference_gradient():
    c = estimating_chip(SCHEMES["time"], 1000)
    emu = Emulator(c, seed=3)
    P, A = c.n_generators, emu.s["K"][0]
    regs = emu.registers
    W = [regs["layer0.weight"], regs["layer1.weight"]]
    b = [regs["layer0.bias"], regs["layer1.bias"]]
    idx = int(regs["sample_index"])
    x, t = emu.task.train.inputs[idx], emu.task.train.targets[idx]
    base = cost(c, forward(c, W, b, x)[-1][1], t)
    emu.run(P)
    G = flat_integrators(emu)
    fd = np.empty(P)
    flat = np.concatenate([np.concatenate([w.ravel(), v]) for w, v in zip(W, b)])
    for i in range(P):
        bumped = flat.copy()
        bumped[i] += A
        W2 = [bumped[0:12].reshape(4, 3), bumped[16:20].reshape(1, 4)]
        b2 = [bumped[12:16], bumped[20:21]]
        fd[i] = (cost(c, forward(c, W2, b2, x)[-1][1], t) - base) / A
    # power normalisation N = A^2 / P: G_i = P * (C(theta + A e_i) - C(theta)) / A
    np.testing.assert_allclose(G / P, fd, rtol=1e-6, atol=1e-12)


def test_walsh_codes_over_one_full_cycle_are_exact_to_first_order():
    c = estimating_chip(SCHEMES["walsh"].replace("0.001", "0.00001"), 1000)
    emu = Emulator(c, seed=4)
    N = int(emu.s["cfg"][15])  # the Walsh order
    grad = flat_gradient(emu)
    emu.run(N)
    # the residue is the O(A) curvature term; for a cost linear in theta it is 0
    assert np.linalg.norm(flat_integrators(emu) / N - grad) <= 1e-4 * np.linalg.norm(grad)


# -- timing effects ----------------------------------------------------------

def gain(extra: str, steps: int, tau_p: int, seed: int = 5) -> float:
    emu = Emulator(estimating_chip(SCHEMES["code"] + "\n" + extra, steps, tau_p), seed).run(steps * tau_p)
    g = flat_gradient(emu)
    return float(flat_integrators(emu) @ g / (g @ g) / (steps * tau_p))


@pytest.mark.parametrize("stale,tau_p", [(1, 4), (2, 4), (1, 1), (3, 2)])
def test_a_stale_correlator_loses_gain_as_one_minus_delay_over_tau_p(stale, tau_p):
    steps = 40000 // tau_p
    measured = gain(f"[timing]\ncorrelator_skew = {stale}", steps, tau_p)
    assert measured == pytest.approx(max(0.0, 1.0 - stale / tau_p), abs=0.04)


@pytest.mark.parametrize("stale", [1, 2])
def test_a_stale_correlator_scales_each_frequency_by_its_phase_lag(stale):
    freq = SCHEMES["frequency"]
    steps = 40000
    aligned = Emulator(estimating_chip(freq, steps), 6).run(steps)
    late = Emulator(estimating_chip(freq + f"\n[timing]\ncorrelator_skew = {stale}", steps), 6).run(steps)
    predicted = flat_integrators(aligned) * np.cos(2 * math.pi * late.s["freqs"] * stale)
    got = flat_integrators(late)
    assert cosine(got, predicted) >= 0.95
    assert np.linalg.norm(got - predicted) <= 0.2 * np.linalg.norm(predicted)


@pytest.mark.parametrize("tau_hp", [1.6, 5.0, 50.0])
def test_the_highpass_passes_tau_hp_over_tau_hp_plus_one(tau_hp):
    measured = gain(f'[cost]\nbaseline = "highpass"\ntau_hp = {tau_hp}', 40000, 1)
    assert measured == pytest.approx(tau_hp / (tau_hp + 1.0), abs=0.04)


def test_pipelined_chip_with_auto_delays_keeps_full_gain():
    extra = "[timing]\nlayer_pipelining = true\ncost_latency = 2\nbroadcast_latency = 1"
    # with tau_p = 1 any misalignment would kill the gain entirely
    assert gain(extra, 40000, 1) == pytest.approx(1.0, abs=0.04)
