"""The chip's gradient estimate against the exact gradient, and the timing
effects users come to study, against theory."""
import math

import numpy as np
import pytest

from mgd_emu import loads_chip
from mgd_emu.engine import Emulator
from mgd_emu.reference import cost, exact_gradient, forward
from mgd_emu.testing import (assert_correlator_unbiased, assert_gradient_aligned, cosine, gradient_vector,
                             integrator_vector, parameter_vector)

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


SCHEMES = {
    "code": '[perturbation]\nmultiplexing = "code"\namplitude = 0.001\namplitude_is = "element"',
    "time": '[perturbation]\nmultiplexing = "time"\namplitude = 0.001\namplitude_is = "element"',
    "frequency": '[perturbation]\nmultiplexing = "frequency"\namplitude = 0.001\namplitude_is = "element"',
    "walsh": '[perturbation]\nmultiplexing = "walsh"\namplitude = 0.001\namplitude_is = "element"',
    "node_code": '[perturbation]\nmode = "node"\nmultiplexing = "code"\namplitude = 0.001\namplitude_is = "element"',
    "node_walsh": '[perturbation]\nmode = "node"\nmultiplexing = "walsh"\namplitude = 0.001\namplitude_is = "element"',
    "node_time": '[perturbation]\nmode = "node"\nmultiplexing = "time"\namplitude = 0.001\namplitude_is = "element"',
    "node_frequency": '[perturbation]\nmode = "node"\nmultiplexing = "frequency"\namplitude = 0.001\namplitude_is = "element"',
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_the_integrated_estimate_points_along_the_exact_gradient(scheme):
    # at frozen weights, on one held sample (mgd_emu.testing.frozen_chip)
    assert_gradient_aligned(loads_chip(NET + SCHEMES[scheme], "estimate.toml"), seed=1, steps=12800, min_cosine=0.95)


@pytest.mark.parametrize("scheme", ["code", "walsh", "time", "frequency"])
def test_with_power_normalisation_the_mean_correlation_is_the_gradient(scheme):
    # |mean e - gradient| <= 0.1 |gradient| at frozen weights, on one held sample
    assert_correlator_unbiased(loads_chip(NET + SCHEMES[scheme], "estimate.toml"), seed=2, steps=25600, tolerance=0.1)


def test_one_time_multiplexing_sweep_is_the_forward_difference_gradient():
    c = estimating_chip(SCHEMES["time"], 1000)
    emu = Emulator(c, seed=3)
    P, A = c.n_generators, emu.st.cfg.amplitude
    regs = emu.registers
    W = [regs["layer0.weight"], regs["layer1.weight"]]
    b = [regs["layer0.bias"], regs["layer1.bias"]]
    idx = int(regs["sample_index"])
    x, t = emu.task.train.inputs[idx], emu.task.train.targets[idx]
    base = cost(c, forward(c, W, b, x)[-1][1], t)
    emu.run(P)
    G = integrator_vector(emu)
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


@pytest.mark.parametrize("scheme", ["code", "frequency"])
def test_with_norm_normalisation_the_correlations_of_P_steps_sum_to_the_gradient(scheme):
    """N = M^2 = P sigma^2 (the 2023 code): E[e] = gradient / P."""
    steps = 25600
    extra = SCHEMES[scheme] + '\nnormalization = "norm"'
    emu = Emulator(estimating_chip(extra, steps), seed=2).run(steps)
    P = emu.chip.n_generators
    mean_e, grad = integrator_vector(emu) / steps, gradient_vector(emu)
    assert np.linalg.norm(P * mean_e - grad) <= 0.1 * np.linalg.norm(grad)


def test_walsh_codes_over_one_full_cycle_are_exact_to_first_order():
    c = estimating_chip(SCHEMES["walsh"].replace("0.001", "0.00001"), 1000)
    emu = Emulator(c, seed=4)
    N = int(emu.st.cfg.walsh_n)  # the Walsh order
    grad = gradient_vector(emu)
    emu.run(N)
    # the residue is the O(A) curvature term; for a cost linear in theta it is 0
    assert np.linalg.norm(integrator_vector(emu) / N - grad) <= 1e-4 * np.linalg.norm(grad)


# -- timing effects ----------------------------------------------------------

def gain(extra: str, steps: int, tau_p: int, seed: int = 5) -> float:
    emu = Emulator(estimating_chip(SCHEMES["code"] + "\n" + extra, steps, tau_p), seed).run(steps * tau_p)
    g = gradient_vector(emu)
    return float(integrator_vector(emu) @ g / (g @ g) / (steps * tau_p))


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
    predicted = integrator_vector(aligned) * np.cos(2 * math.pi * late.st.gen.freqs * stale)
    got = integrator_vector(late)
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


# -- the normalisation 1/N, from docs/ALGORITHM.md §5 by hand ----------------

def hand_normalisation(mux, rule, amplitude, amplitude_is, P, tau_theta):
    """N written out from docs/ALGORITHM.md §4 and §5 (not via spec or reference)."""
    if amplitude_is == "element":
        A = amplitude
    else:  # amplitude is M, the r.m.s. norm of the perturbation vector
        A = {"code": amplitude / math.sqrt(P), "walsh": amplitude / math.sqrt(P),
             "frequency": math.sqrt(2) * amplitude / math.sqrt(P), "time": amplitude}[mux]
    sigma2 = {"code": A**2, "walsh": A**2, "frequency": A**2 / 2, "time": A**2 / P}[mux]
    M = math.sqrt(P * sigma2)
    if amplitude_is == "norm":
        assert M == pytest.approx(amplitude, rel=1e-12)
    if rule == "power":
        return sigma2
    if rule == "norm":
        return M**2
    return A * M * math.sqrt(1 / P + 1 / tau_theta - 1 / (P * tau_theta))


NORMALISATIONS = [(mux, rule, a_is, mode)
                  for mux in ("code", "walsh", "frequency", "time")
                  for rule in ("power", "norm", "step_length") if rule != "step_length" or mux in ("code", "walsh")
                  for a_is in ("element", "norm") for mode in ("weight", "node")]


@pytest.mark.parametrize("mux,rule,amplitude_is,mode", NORMALISATIONS)
def test_the_correlator_gain_is_one_over_N_of_the_reference_formulas(mux, rule, amplitude_is, mode):
    chip = loads_chip(NET + f'[perturbation]\nmode = "{mode}"\nmultiplexing = "{mux}"\nnormalization = "{rule}"\n'
                      f'amplitude = 0.03\namplitude_is = "{amplitude_is}"\n[timing]\ntau_theta = 40')
    P = 3 * 4 + 4 + 4 * 1 + 1 if mode == "weight" else 4 + 1  # weights and biases, or neurons, of 3-4-1
    N = hand_normalisation(mux, rule, 0.03, amplitude_is, P, 40)
    assert Emulator(chip, 0).st.cfg.kappa == pytest.approx(1 / N, rel=1e-12)


def step_length_chip(rule, tau_theta, learning_rate=0.0):
    return loads_chip(NET + f'[perturbation]\nmultiplexing = "code"\nnormalization = "{rule}"\namplitude = 0.001\n'
                      'amplitude_is = "element"', "step.toml",
                      {"timing.tau_x": 10**9, "timing.tau_theta": tau_theta,
                       "optimizer.learning_rate": learning_rate, "optimizer.divide_by_tau_theta": True})


def test_step_length_is_the_power_estimate_over_sqrt_of_one_plus_P_minus_one_over_tau_theta():
    """N_step / N_power = A M sqrt(1/P + 1/tau - 1/(P tau)) / A^2 = sqrt(1 + (P-1)/tau)."""
    tau, P = 64, 21
    power = Emulator(step_length_chip("power", tau), 3).run(tau - 1)  # the integrators before the update
    step = Emulator(step_length_chip("step_length", tau), 3).run(tau - 1)
    np.testing.assert_allclose(integrator_vector(step), integrator_vector(power) / math.sqrt(1 + (P - 1) / tau),
                               rtol=1e-12)


def test_step_length_makes_the_expected_squared_step_the_squared_gradient():
    """For +-A codes and a locally linear cost, E||(1/tau) sum e||^2 = ||grad||^2 with
    step_length (docs/ALGORITHM.md §5.3): the update g = G/tau has the gradient's length
    on average, whatever P and tau, where power gives (1 + (P-1)/tau) ||grad||^2."""
    tau, eta, windows = 64, 1e-3, 200
    ratios = {}
    for rule in ("step_length", "power"):
        emu = Emulator(step_length_chip(rule, tau, eta), 4)
        r = []
        for _ in range(windows):
            grad = gradient_vector(emu)
            before = parameter_vector(emu)
            emu.run(tau)
            after = parameter_vector(emu)
            g = (before - after) / eta  # theta <- theta - eta G / tau
            r.append(g @ g / (grad @ grad))
        ratios[rule] = float(np.mean(r))
    # 200 windows: the standard error of the mean ratio is about 0.02 (P = 21, tau = 64)
    assert ratios["step_length"] == pytest.approx(1.0, abs=0.1)
    assert ratios["power"] == pytest.approx(1 + 20 / tau, abs=0.13)


# -- Walsh codes over a full cycle: the exact identity for a linear network --

def linear_node_chip(layers, task, A):
    return loads_chip(f'[network]\nlayers = {layers}\nactivation = "linear"\noutput_activation = "linear"\n'
                      f'[perturbation]\nmode = "node"\nmultiplexing = "walsh"\namplitude = {A}\n'
                      'amplitude_is = "element"\nnormalization = "power"\n[optimizer]\nlearning_rate = 0.0\n'
                      f'[task]\n{task}', "linear.toml", {"timing.tau_x": 10**9, "timing.tau_theta": 10**6})


def test_walsh_codes_over_one_full_cycle_are_exact_for_a_single_linear_layer():
    """Node perturbation of linear outputs under MSE: C(u) - C(0) = g.u + sum_o u_o^2 / n_out,
    and over a full Walsh cycle sum_c h_ci h_cj = N delta_ij and sum_c h_ci = 0, so
    G / N is the gradient exactly, for any amplitude."""
    chip = linear_node_chip([3, 3], 'name = "random"\ninputs = 3\noutputs = 3\nsamples = 8', 0.1)
    emu = Emulator(chip, 5)
    N, grad = int(emu.st.cfg.walsh_n), gradient_vector(emu)
    emu.run(N)
    np.testing.assert_allclose(integrator_vector(emu) / N, grad, rtol=1e-12, atol=1e-14 * np.abs(grad).max())


def test_walsh_codes_over_one_full_cycle_leave_only_the_curvature_of_row_triples():
    """A linear network is quadratic in its node perturbations u = A h_c:
    C(u) - C(0) = g.u + u.H.u / 2. Over a full cycle (h_cj = (-1)^popcount(r_j & c)),
    sum_c h_ci h_cj h_ck = N if r_i = r_j ^ r_k, else 0, so exactly
        G_i / N = g_i + (A/2) sum_{j,k: r_j ^ r_k = r_i} H_jk    (power normalisation)."""
    A = 0.1
    chip = linear_node_chip([3, 4, 1], 'name = "parity"\nbits = 3', A)
    emu = Emulator(chip, 6)
    regs, rows = emu.registers, emu.st.gen.walsh_rows
    N, P = int(emu.st.cfg.walsh_n), chip.n_generators
    W = [regs["layer0.weight"], regs["layer1.weight"]]
    b = [regs["layer0.bias"], regs["layer1.bias"]]
    idx = int(regs["sample_index"])
    x, t = emu.task.train.inputs[idx], emu.task.train.targets[idx]
    dW, db = exact_gradient(chip, W, b, x, t)
    g = np.concatenate(db)  # a node's gradient is its bias's

    def y(u):
        return forward(chip, W, b, x, node_perturbation=[u[:4], u[4:]])[-1][1]

    J = np.array([y(np.eye(P)[j]) - y(np.zeros(P)) for j in range(P)]).T  # dy/du, exact: y is affine in u
    H = 2 * J.T @ J / len(t)  # MSE = mean over outputs of (y - t)^2
    curvature = np.array([sum(H[j, k] for j in range(P) for k in range(P) if rows[j] ^ rows[k] == rows[i])
                          for i in range(P)])
    emu.run(N)
    G = np.concatenate([emu.registers["layer0.bias_integrator"], emu.registers["layer1.bias_integrator"]])
    assert np.linalg.norm(G / N - g) > 1e-3 * np.linalg.norm(g)  # the curvature term is there
    np.testing.assert_allclose(G / N, g + A / 2 * curvature, rtol=1e-10, atol=1e-12 * np.abs(g).max())
