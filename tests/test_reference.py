"""The oracle (`mgd_emu.reference`): exact gradients are right, and one step
of `Reference` is one step of textbook MGD as docs/CYCLE.md defines it."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mgd_emu import loads_chip
from mgd_emu.blocks.prng import lfsr32_step, xorshift64star_next
from mgd_emu.plan import build_plan, fisher_yates
from mgd_emu.spec import correlator_gain
from mgd_emu.reference import (Reference, cost, exact_gradient, finite_difference_gradient,
                               forward, lfsr32, xorshift64star)
from mgd_emu.testing import cosine

FOREVER = 2**31 - 1  # tau_x: one sample for the whole test


def chip(text: str = "", **overrides):
    """A chip from TOML text plus dotted-key overrides (timing__tau_x -> timing.tau_x)."""
    return loads_chip(text, "test.toml", {k.replace("__", "."): v for k, v in overrides.items()})


PARITY3 = """
[network]
layers = [3, 3, 1]
[task]
name = "parity"
bits = 3
"""


def flat(regs, n_layers, what=("weight", "bias")):
    """A register group flattened in parameter order (per layer: weights row-major, biases)."""
    return np.concatenate([np.concatenate([regs[f"layer{i}.{what[0]}"].ravel(), regs[f"layer{i}.{what[1]}"]])
                           for i in range(n_layers)])


def params(regs, n_layers):
    return ([regs[f"layer{i}.weight"] for i in range(n_layers)],
            [regs[f"layer{i}.bias"] for i in range(n_layers)])


# -- exact gradients ----------------------------------------------------------

ACTIVATIONS = ["sigmoid", "tanh", "linear", "hard_sigmoid", "relu"]
KINKS = {"relu": (0.0,), "hard_sigmoid": (-2.5, 2.5)}  # where the derivative jumps


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4),
       hidden=st.sampled_from(ACTIVATIONS), output=st.sampled_from(ACTIVATIONS),
       cost_fn=st.sampled_from(["mse", "cross_entropy"]), seed=st.integers(0, 2**32 - 1))
def test_exact_gradient_equals_central_finite_differences(sizes, hidden, output, cost_fn, seed):
    if cost_fn == "cross_entropy":  # a softmax needs at least 2 outputs
        sizes = sizes[:-1] + [max(sizes[-1], 2)]
    c = loads_chip(f'[network]\nlayers = {sizes}\nactivation = "{hidden}"\noutput_activation = "{output}"\n'
                   f'[cost]\nfunction = "{cost_fn}"\n[task]\nname = "random"\ninputs = {sizes[0]}\noutputs = {sizes[-1]}', "g.toml")
    rng = np.random.default_rng(seed)
    W = [rng.normal(size=(o, i)) for i, o in zip(sizes[:-1], sizes[1:])]
    b = [rng.normal(size=o) for o in sizes[1:]]
    X, Y = rng.random((3, sizes[0])), rng.random((3, sizes[-1]))
    for x in X:  # keep every pre-activation off the kinks (finite differences straddle them)
        for i, (z, _) in enumerate(forward(c, W, b, x)):
            kinks = KINKS.get(output if i == len(W) - 1 else hidden, ())
            assume(all(np.all(np.abs(z - kink) > 1e-3) for kink in kinks))
    exact = np.concatenate([g.ravel() for g in sum(exact_gradient(c, W, b, X, Y), [])])
    fd = np.concatenate([g.ravel() for g in sum(finite_difference_gradient(c, W, b, X, Y), [])])
    scale = max(1.0, np.max(np.abs(exact)))
    np.testing.assert_allclose(exact, fd, rtol=1e-6, atol=1e-6 * scale)


def test_cost_functions():
    mse = chip()
    ce = chip('[cost]\nfunction = "cross_entropy"\n[network]\nlayers = [2, 3]\n[task]\nname = "random"\ninputs = 2\noutputs = 3')
    assert cost(mse, [0.5, 1.0], [1.0, 1.0]) == pytest.approx(0.125)
    y, t = np.array([0.2, -1.0, 3.0]), np.array([0.0, 0.0, 1.0])
    assert cost(ce, y, t) == pytest.approx(-math.log(math.exp(3.0) / np.exp(y).sum()))


# -- the generators ---------------------------------------------------------

@given(st.integers(1, 2**32 - 1))
def test_the_lfsr_step_matches_the_chip_generator(state):
    assert lfsr32(state) == tuple(int(v) for v in lfsr32_step(np.uint64(state)))


@given(st.integers(1, 2**64 - 1))
def test_the_xorshift64star_step_matches_the_chip_generator(state):
    assert xorshift64star(state) == tuple(int(v) for v in xorshift64star_next(np.uint64(state)))


def sample_sequence(ref, n_steps):
    """The dataset index each of steps 0..n_steps-1 uses."""
    out = [int(ref.registers["sample_index"])]
    for _ in range(n_steps - 1):
        ref.step()
        out.append(int(ref.registers["sample_index"]))
    return out


def test_the_sampler_visits_a_new_permutation_every_epoch():
    c = chip(PARITY3, timing__tau_x=1)
    seq = sample_sequence(Reference(c, 5), 8 * 10)
    epochs = [seq[8 * e: 8 * e + 8] for e in range(10)]
    assert all(sorted(e) == list(range(8)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1
    # epoch 0 is the Fisher-Yates shuffle driven by the sampler's xorshift64*
    state = [np.uint64(build_plan(c, 5).sampler_seed)]

    def word():
        s, out = xorshift64star_next(state[0])
        state[0] = np.uint64(s)
        return int(out)

    first = fisher_yates(8, word)
    assert epochs[0] == list(first)
    # the stream continues, and epoch 1 reshuffles epoch 0's order in place
    assert epochs[1] == list(first[fisher_yates(8, word)])


def test_a_sample_is_held_for_tau_x_steps():
    seq = sample_sequence(Reference(chip(PARITY3, timing__tau_x=3), 2), 8 * 3 * 2)
    assert seq[::3] == seq[1::3] == seq[2::3]
    assert sorted(seq[:24:3]) == list(range(8))


def perturbation_sequence(ref, n_codes):
    """The perturbation vector (generator order) of codes 0..n_codes-1."""
    c = ref.chip
    n = len(c.layer_sizes) - 1
    names = [("node_perturbation",)] if c.perturbation.mode == "node" else [("weight_perturbation", "bias_perturbation")]

    def read():
        regs = ref.registers
        return np.concatenate([regs[f"layer{i}.{name}"].ravel() for i in range(n) for name in names[0]])

    out = [read()]
    for _ in range(n_codes - 1):
        ref.step(c.timing.tau_p)
        out.append(read())
    return np.array(out)


@pytest.mark.parametrize("mode", ["weight", "node"])
@pytest.mark.parametrize("mux", ["code", "time", "frequency", "walsh"])
def test_the_generators_follow_their_definitions(mux, mode):
    c = chip(PARITY3 + f'[perturbation]\nmode = "{mode}"\nmultiplexing = "{mux}"\n'
             'amplitude = 0.25\namplitude_is = "element"\nfreq_min = 0.1\nfreq_max = 0.2', timing__tau_p=2, timing__tau_theta=2)
    plan, A, P = build_plan(c, 3), 0.25, c.n_generators
    seen = perturbation_sequence(Reference(c, 3), 40)
    want = np.zeros((40, P))
    lfsr = [np.uint64(s) for s in plan.lfsr_seeds]
    for code in range(40):
        for i in range(P):
            if mux == "code":
                s, bit = lfsr32_step(lfsr[i])
                lfsr[i] = np.uint64(s)
                want[code, i] = A if bit else -A
            elif mux == "time":
                want[code, i] = A if plan.time_order[code % P] == i else 0.0
            elif mux == "frequency":
                want[code, i] = A * math.sin(2 * math.pi * plan.frequencies[i] * code * 2 + plan.phases[i])
            else:
                want[code, i] = A * (-1) ** bin(int(plan.walsh_rows[i]) & (code % plan.walsh_order)).count("1")
    np.testing.assert_allclose(seen, want, rtol=0, atol=1e-15)


def test_walsh_codes_are_orthogonal_over_a_full_cycle():
    c = chip(PARITY3 + '[perturbation]\nmultiplexing = "walsh"\namplitude = 1.0\namplitude_is = "element"')
    N = build_plan(c, 0).walsh_order
    codes = perturbation_sequence(Reference(c), N)
    np.testing.assert_array_equal(codes.T @ codes, N * np.eye(c.n_generators))
    np.testing.assert_array_equal(codes.sum(axis=0), 0)


# -- one step is one textbook MGD step --------------------------------------

def expected_change(c, regs, data):
    """C - C0 of the next step, from the registers (weights, next perturbation, next sample)."""
    n = len(c.layer_sizes) - 1
    W, b = params(regs, n)
    i = int(regs["sample_index"])
    x, t = data.inputs[i], data.targets[i]
    if c.perturbation.mode == "node":
        layers = forward(c, W, b, x, node_perturbation=[regs[f"layer{j}.node_perturbation"] for j in range(n)])
    else:
        layers = forward(c, W, b, x, [regs[f"layer{j}.weight_perturbation"] for j in range(n)],
                         [regs[f"layer{j}.bias_perturbation"] for j in range(n)])
    return cost(c, layers[-1][1], t) - cost(c, forward(c, W, b, x)[-1][1], t), layers


@pytest.mark.parametrize("mode", ["weight", "node"])
def test_each_step_measures_the_registered_perturbation_on_the_registered_sample(mode):
    c = chip(PARITY3 + f'[perturbation]\nmode = "{mode}"\n[optimizer]\nlearning_rate = 2.0')
    ref = Reference(c, 1)
    for _ in range(50):
        before = ref.registers
        change, layers = expected_change(c, before, ref.data)
        ref.step()
        after = ref.registers
        assert after["cost_change"] == pytest.approx(change, rel=1e-12, abs=1e-15)
        assert after["broadcast"] == after["cost_change"]
        assert after["cost"] == pytest.approx(cost(c, layers[-1][1], ref.data.targets[int(before["sample_index"])]))
        for i, (_, a) in enumerate(layers):
            np.testing.assert_allclose(after[f"layer{i}.activation"], a, rtol=1e-14)
    assert ref.k == 50


def correlations(c, before, after, data):
    """e of the step between two register snapshots, in parameter order."""
    n = len(c.layer_sizes) - 1
    kappa_change = float(after["cost_change"]) * correlator_gain(c)
    if c.perturbation.mode == "weight":
        return kappa_change * flat(before, n, ("weight_perturbation", "bias_perturbation"))
    parts = []
    x = data.inputs[int(before["sample_index"])]
    if c.perturbation.presynaptic == "live":  # as perturbed upstream: the activation registers
        inputs = [x] + [after[f"layer{i}.activation"] for i in range(n - 1)]
    else:  # the unperturbed path's activity
        inputs = [x] + [a for _, a in forward(c, *params(before, n), x)[:-1]]
    for i in range(n):
        e = kappa_change * before[f"layer{i}.node_perturbation"]
        parts += [np.outer(e, inputs[i]).ravel(), e]
    return np.concatenate(parts)


@pytest.mark.parametrize("mode", ["weight", "node", "node_unperturbed"])
@pytest.mark.parametrize("optimizer", ["plain", "momentum"])
@pytest.mark.parametrize("divide", [False, True])
def test_the_digital_integrator_sums_tau_theta_steps_then_updates_and_clears(mode, optimizer, divide):
    mode, _, presynaptic = mode.partition("_")
    c = chip(PARITY3 + f'[perturbation]\nmode = "{mode}"\npresynaptic = "{presynaptic or "live"}"\n'
             f'[optimizer]\nkind = "{optimizer}"\n'
             f'learning_rate = 0.5\nmomentum = 0.7\ndivide_by_tau_theta = {str(divide).lower()}',
             timing__tau_theta=3, timing__tau_x=2)
    n, ref = 2, Reference(c, 4)
    eta = 0.5 / 3 if divide else 0.5
    S, V = np.zeros(c.n_parameters), np.zeros(c.n_parameters)
    for k in range(30):
        before = ref.registers
        ref.step()
        after = ref.registers
        S = S + correlations(c, before, after, ref.data)
        theta0, theta1 = flat(before, n), flat(after, n)
        if (k + 1) % 3 == 0:
            if optimizer == "momentum":
                V = 0.7 * V + eta * S
                np.testing.assert_allclose(flat(after, n, ("weight_velocity", "bias_velocity")), V, atol=1e-13)
                np.testing.assert_allclose(theta1, theta0 - V, atol=1e-13)
            else:
                np.testing.assert_allclose(theta1, theta0 - eta * S, atol=1e-13)
            S = np.zeros_like(S)
            assert not flat(after, n, ("weight_integrator", "bias_integrator")).any()
        else:
            np.testing.assert_array_equal(theta1, theta0)
            np.testing.assert_allclose(flat(after, n, ("weight_integrator", "bias_integrator")), S, atol=1e-13)


@pytest.mark.parametrize("optimizer", ["plain", "momentum"])
def test_the_analog_integrator_updates_every_step_from_the_previous_integrator(optimizer):
    c = chip(PARITY3 + f'[integrator]\nkind = "analog"\n[optimizer]\nkind = "{optimizer}"\n'
             'learning_rate = 0.3\nmomentum = 0.6', timing__tau_theta=4)
    n, ref = 2, Reference(c, 6)
    V = np.zeros(c.n_parameters)
    for _ in range(30):
        before = ref.registers
        ref.step()
        after = ref.registers
        G = flat(before, n, ("weight_integrator", "bias_integrator"))
        if optimizer == "momentum":
            V = 0.6 * V + 0.3 * G
            np.testing.assert_allclose(flat(after, n), flat(before, n) - V, atol=1e-13)
        else:
            np.testing.assert_allclose(flat(after, n), flat(before, n) - 0.3 * G, atol=1e-13)
        e = correlations(c, before, after, ref.data)
        np.testing.assert_allclose(flat(after, n, ("weight_integrator", "bias_integrator")),
                                   0.8 * G + 0.2 * e, atol=1e-13)


def test_dual_path_and_remeasure_baselines_are_the_same_step():
    a = Reference(chip(PARITY3, cost__baseline="dual_path"), 9).step(200)
    b = Reference(chip(PARITY3, cost__baseline="remeasure"), 9).step(200)
    for name, value in a.registers.items():
        np.testing.assert_array_equal(b.registers[name], value, err_msg=name)


def test_the_highpass_baseline_filters_the_cost_and_suppresses_sample_jumps():
    c = chip(PARITY3, cost__baseline="highpass", cost__tau_hp=3.0, timing__tau_x=4)
    ref, a = Reference(c, 2), 3.0 / 4.0
    change, prev = 0.0, None
    for k in range(40):
        ref.step()
        C = float(ref.registers["cost"])
        change = a * (change + C - (C if k % 4 == 0 else prev))
        prev = C
        assert float(ref.registers["cost_change"]) == pytest.approx(change, rel=1e-12, abs=1e-15)


def test_the_cost_change_is_clamped_to_the_limit():
    c = chip(PARITY3 + '[perturbation]\namplitude = 2.0', cost__change_limit=1e-3)
    free = Reference(chip(PARITY3 + '[perturbation]\namplitude = 2.0', optimizer__learning_rate=0.0), 1)
    ref = Reference(c.replace({"optimizer.learning_rate": 0.0}), 1)
    clamped = 0
    for _ in range(20):
        free.step()
        ref.step()
        unclamped = float(free.registers["cost_change"])
        clamped += abs(unclamped) > 1e-3
        assert float(ref.registers["cost_change"]) == np.clip(unclamped, -1e-3, 1e-3)
    assert clamped


# -- the integrated estimate is the gradient --------------------------------

def gradient_of_held_sample(ref):
    regs, n = ref.registers, len(ref.sizes) - 1
    W, b = params(regs, n)
    i = int(regs["sample_index"])
    dW, db = exact_gradient(ref.chip, W, b, ref.data.inputs[i], ref.data.targets[i])
    return np.concatenate([np.concatenate([w.ravel(), v]) for w, v in zip(dW, db)])


@pytest.mark.parametrize("mode", ["weight", "node"])
@pytest.mark.parametrize("tau_p", [1, 3])
def test_time_multiplexing_integrates_forward_differences(mode, tau_p):
    """With power normalisation N = A^2/P, each active slot adds P (C(theta+A) - C0)/A:
    after one sweep of the P generators, G = tau_p P x (forward-difference gradient)."""
    A = 1e-4
    c = chip(PARITY3 + f'[perturbation]\nmode = "{mode}"\nmultiplexing = "time"\namplitude = {A}\n'
             'amplitude_is = "element"\nnormalization = "power"\n[optimizer]\nlearning_rate = 0.0')
    P = c.n_generators
    c = c.replace({"timing.tau_x": FOREVER, "timing.tau_p": tau_p, "timing.tau_theta": 2 * P * tau_p})
    ref = Reference(c, 11)
    regs, n = ref.registers, 2
    W, b = params(regs, n)
    i = int(regs["sample_index"])
    x, t = ref.data.inputs[i], ref.data.targets[i]
    base = forward(c, W, b, x)
    C0 = cost(c, base[-1][1], t)
    if mode == "weight":
        theta = flat(regs, n)
        fd = np.zeros_like(theta)
        for j in range(len(theta)):
            d = np.zeros_like(theta)
            d[j] = A
            pw = [d[:9].reshape(3, 3), d[12:15].reshape(1, 3)]
            pb = [d[9:12], d[15:16]]
            fd[j] = (cost(c, forward(c, W, b, x, pw, pb)[-1][1], t) - C0) / A
    else:
        node_fd = np.zeros(P)
        for j in range(P):
            d = np.zeros(P)
            d[j] = A
            node_fd[j] = (cost(c, forward(c, W, b, x, node_perturbation=[d[:3], d[3:]])[-1][1], t) - C0) / A
        a_in = [x, base[0][1]]
        fd = np.concatenate([np.concatenate([np.outer(node_fd[o:o + s], a_in[l]).ravel(), node_fd[o:o + s]])
                             for l, (o, s) in enumerate([(0, 3), (3, 1)])])
    ref.step(P * tau_p)
    G = flat(ref.registers, n, ("weight_integrator", "bias_integrator"))
    np.testing.assert_allclose(G, tau_p * P * fd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(G / (tau_p * P), gradient_of_held_sample(ref), rtol=0, atol=A)


def test_time_multiplexing_with_tau_theta_a_sweep_is_one_forward_difference_descent_step():
    c = chip(PARITY3 + '[perturbation]\nmultiplexing = "time"\namplitude = 1e-4\namplitude_is = "element"\n'
             'normalization = "power"\n[optimizer]\nlearning_rate = 0.01')
    P = c.n_generators
    c = c.replace({"timing.tau_x": FOREVER, "timing.tau_theta": P})
    estimate = Reference(c.replace({"timing.tau_theta": 2 * P, "optimizer.learning_rate": 0.0}), 3).step(P)
    ref = Reference(c, 3)
    theta0 = flat(ref.registers, 2)
    ref.step(P)
    G = flat(estimate.registers, 2, ("weight_integrator", "bias_integrator"))
    np.testing.assert_allclose(flat(ref.registers, 2), theta0 - 0.01 * G, rtol=0, atol=1e-15)
    assert not flat(ref.registers, 2, ("weight_integrator", "bias_integrator")).any()


@pytest.mark.parametrize("mode", ["weight", "node"])
def test_walsh_codes_over_one_cycle_give_the_gradient_of_a_linear_network(mode):
    """Exact orthogonality: for a (locally) linear cost, N codes give N x gradient."""
    A = 1e-6
    c = chip(f'[network]\nlayers = [3, 3, 1]\nactivation = "linear"\noutput_activation = "linear"\n'
             f'[perturbation]\nmode = "{mode}"\nmultiplexing = "walsh"\namplitude = {A}\namplitude_is = "element"\n'
             'normalization = "power"\n[optimizer]\nlearning_rate = 0.0\n[task]\nname = "parity"\nbits = 3')
    N = build_plan(c, 0).walsh_order
    ref = Reference(c.replace({"timing.tau_x": FOREVER, "timing.tau_theta": 2 * N}), 7)
    g = gradient_of_held_sample(ref)
    ref.step(N)
    G = flat(ref.registers, 2, ("weight_integrator", "bias_integrator"))
    assert np.linalg.norm(G / N - g) < 1e-4 * np.linalg.norm(g)


@pytest.mark.parametrize("mode", ["weight", "node"])
def test_random_codes_integrated_long_point_along_the_gradient(mode):
    c = chip('[network]\nlayers = [3, 4, 1]\n[task]\nname = "parity"\nbits = 3\n'
             f'[perturbation]\nmode = "{mode}"\nmultiplexing = "code"\namplitude = 0.01\namplitude_is = "element"\n'
             '[optimizer]\nlearning_rate = 0.0', timing__tau_x=FOREVER, timing__tau_theta=8000)
    ref = Reference(c, 1)
    g = gradient_of_held_sample(ref)
    ref.step(4000)
    G = flat(ref.registers, 2, ("weight_integrator", "bias_integrator"))
    assert cosine(G, g) >= 0.95


# -- training ----------------------------------------------------------------

XOR = """
[network]
layers = [2, 2, 1]
activation = "sigmoid"
output_activation = "sigmoid"
init_low = 0.0
init_high = 1.0
[perturbation]
multiplexing = "code"
amplitude = 0.05
amplitude_is = "norm"
normalization = "power"
[optimizer]
learning_rate = 0.5
[task]
name = "parity"
bits = 2
"""


def test_the_reference_learns_xor():
    ref = Reference(chip(XOR), 0)
    start, _ = ref.evaluate()
    ref.step(20000)
    end, accuracy = ref.evaluate(ref.task.train)
    assert end < 0.01 * start
    assert accuracy == 1.0
    assert ref.k == 20000


def test_evaluate_is_the_unperturbed_mean_cost_and_accuracy():
    ref = Reference(chip(XOR), 2)
    regs = ref.registers
    W, b = params(regs, 2)
    data = ref.task.test
    y = np.array([forward(ref.chip, W, b, x)[-1][1] for x in data.inputs])
    mean = np.mean([cost(ref.chip, yi, t) for yi, t in zip(y, data.targets)])
    assert ref.evaluate(data) == (pytest.approx(mean), ref.task.accuracy(y, data))


# -- what the oracle does not model --------------------------------------------

@pytest.mark.parametrize("text", [
    "[timing]\ncost_latency = 1", "[timing]\nbroadcast_latency = 2", "[timing]\nlayer_pipelining = true",
    "[timing]\ncorrelator_delay = 3", "[timing]\ncorrelator_skew = 1", "[noise]\ncost_sigma = 0.1",
    "[noise]\nweight_sigma = 0.1", "[noise]\nactivation_sigma = 0.1", "[noise]\ngain_sigma = 0.1",
    "[noise]\noffset_sigma = 0.1"])
def test_the_reference_refuses_chips_it_does_not_model(text):
    with pytest.raises(ValueError):
        Reference(chip(text))


def test_the_reference_accepts_an_explicit_zero_correlator_delay():
    assert Reference(chip("[timing]\ncorrelator_delay = 0")).step(3).k == 3
