"""Textbook MGD in float64 numpy, and exact gradients: the test oracle.

Written to be short and obviously correct, and independent of the engine:
it shares only the build plan (initial weights and generator seeds) and the
datasets. The generators (LFSR, xorshift64*, Walsh signs, the shuffle) are
re-implemented here in plain Python integers. Ideal arithmetic, zero
latency, no noise: one `step()` is one cycle of a zero-latency chip, as
`docs/CYCLE.md` defines it.

After step k, `registers` holds what the chip's registers hold after that
cycle's clock edge: the parameters, integrators and momentum registers; the
perturbation of step k+1; the activations, C and C~ measured in step k; and
the index of the sample step k+1 uses.
"""
from __future__ import annotations

import math

import numpy as np

from .plan import build_plan
from .spec import Chip, correlator_gain
from .tasks import make_task

M64 = (1 << 64) - 1


def xorshift64star(state: int) -> tuple[int, int]:
    x = state
    x ^= x >> 12
    x ^= (x << 25) & M64
    x ^= x >> 27
    return x, (x * 0x2545F4914F6CDD1D) & M64


def lfsr32(state: int) -> tuple[int, int]:
    bit = state & 1
    state >>= 1
    if bit:
        state ^= 0x80200003
    return state, bit


def fisher_yates(order: list, state: int) -> int:
    for i in range(len(order) - 1, 0, -1):
        state, word = xorshift64star(state)
        j = word % (i + 1)
        order[i], order[j] = order[j], order[i]
    return state


# Nonlinearities through Python's math (the C library), elementwise: the same
# functions the compiled kernels call, so an ideal chip can match to the bit.
_sigmoid = np.vectorize(lambda z: 1.0 / (1.0 + math.exp(-z)), otypes=[float])
_tanh = np.vectorize(math.tanh, otypes=[float])

ACT = {
    "sigmoid": (_sigmoid, lambda z, a: a * (1 - a)),
    "tanh": (_tanh, lambda z, a: 1 - a * a),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, a: (z > 0).astype(float)),
    "linear": (lambda z: z, lambda z, a: np.ones_like(z)),
    "hard_sigmoid": (lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0),
                     lambda z, a: np.where((0.2 * z + 0.5 > 0) & (0.2 * z + 0.5 < 1), 0.2, 0.0)),
}


def _kind(chip: Chip, layer: int) -> str:
    last = len(chip.layer_sizes) - 2
    return chip.network.output_activation if layer == last else chip.network.activation


def forward(chip, weights, biases, x, weight_perturbation=None, bias_perturbation=None,
            node_perturbation=None):
    """[(z, a)] per layer for input x, with optional perturbations per layer."""
    out, a = [], np.asarray(x, dtype=float)
    for i, (W, b) in enumerate(zip(weights, biases)):
        Wp = W + (weight_perturbation[i] if weight_perturbation else 0.0)
        z = np.zeros(W.shape[0])
        for k in range(W.shape[1]):  # accumulate in input order, as a MAC does
            z = z + Wp[:, k] * a[k]
        z = z + b
        if bias_perturbation:
            z = z + bias_perturbation[i]
        if node_perturbation:
            z = z + node_perturbation[i]
        a = ACT[_kind(chip, i)][0](z)
        out.append((z, a))
    return out


def cost(chip, y, target) -> float:
    y, target = np.asarray(y, float), np.asarray(target, float)
    if chip.cost.function == "mse":
        return float(np.mean((y - target) ** 2))
    lse = np.max(y) + np.log(np.sum(np.exp(y - np.max(y))))
    return float(-np.sum(target * (y - lse)))


def _dcost(chip, y, target):
    if chip.cost.function == "mse":
        return 2 * (y - target) / len(y)
    p = np.exp(y - np.max(y))
    p /= p.sum()
    return p * target.sum() - target


def exact_gradient(chip, weights, biases, X, Y):
    """Analytic backpropagation of the mean cost over the rows of X."""
    dW = [np.zeros_like(W) for W in weights]
    db = [np.zeros_like(b) for b in biases]
    for x, t in zip(np.atleast_2d(X), np.atleast_2d(Y)):
        layers = forward(chip, weights, biases, x)
        grad_a = _dcost(chip, layers[-1][1], t)
        for i in range(len(weights) - 1, -1, -1):
            z, a = layers[i]
            delta = grad_a * ACT[_kind(chip, i)][1](z, a)
            a_in = layers[i - 1][1] if i > 0 else np.asarray(x, float)
            dW[i] += np.outer(delta, a_in)
            db[i] += delta
            grad_a = weights[i].T @ delta
    n = len(np.atleast_2d(X))
    return [d / n for d in dW], [d / n for d in db]


def finite_difference_gradient(chip, weights, biases, X, Y, h=1e-6):
    """Central differences of the mean cost, parameter by parameter."""
    def mean_cost(W, b):
        return np.mean([cost(chip, forward(chip, W, b, x)[-1][1], t)
                        for x, t in zip(np.atleast_2d(X), np.atleast_2d(Y))])
    dW, db = [], []
    for group, out in ((weights, dW), (biases, db)):
        for i, P in enumerate(group):
            g = np.zeros_like(P)
            for idx in np.ndindex(P.shape):
                plus = [p.copy() for p in group]
                minus = [p.copy() for p in group]
                plus[i][idx] += h
                minus[i][idx] -= h
                args = ((plus, biases), (minus, biases)) if group is weights else ((weights, plus), (weights, minus))
                g[idx] = (mean_cost(*args[0]) - mean_cost(*args[1])) / (2 * h)
            out.append(g)
    return dW, db


class Reference:
    """Textbook MGD, one step per call, for the zero-latency chips."""

    def __init__(self, chip: Chip, seed: int = 0):
        t, n = chip.timing, chip.noise
        if (t.cost_latency or t.broadcast_latency or t.layer_pipelining or t.correlator_skew
                or t.correlator_delay not in ("auto", 0)):
            raise ValueError("the reference models zero-latency chips only")
        if any(n[k] for k in n):
            raise ValueError("the reference models noiseless chips only")
        self.chip = chip
        plan = build_plan(chip, seed)
        self.W = [w.copy() for w in plan.weights]
        self.b = [b.copy() for b in plan.biases]
        self.sizes = chip.layer_sizes
        self.data = make_task(chip.task.name, **chip.task_params()).train
        self.A = plan.amplitude
        self.kappa = correlator_gain(chip, plan.amplitude)
        opt = chip.optimizer
        self.eta = opt.learning_rate / t.tau_theta if opt.divide_by_tau_theta else opt.learning_rate
        self.plan = plan
        self.lfsr = [int(s) for s in plan.lfsr_seeds]
        self.order = list(range(len(self.data.inputs)))
        self.rng = fisher_yates(self.order, plan.sampler_seed)
        self.pos = 0
        self.k = 0
        self.node = chip.perturbation.mode == "node"
        n_par = chip.n_parameters
        self.G = np.zeros(n_par)
        self.V = np.zeros(n_par)
        self.p = self._code(0)
        self.hp_out = self.hp_prev = 0.0
        self.C = self.C0 = self.C_change = 0.0
        self.acts = [np.zeros(n) for n in self.sizes[1:]]

    # the parameter vector, flat: per layer weights row-major, then biases
    def _flat(self) -> np.ndarray:
        return np.concatenate([np.concatenate([W.ravel(), b if self.chip.network.bias else b[:0]])
                               for W, b in zip(self.W, self.b)])

    def _split(self, flat):
        Ws, bs, i = [], [], 0
        for fi, fo in zip(self.sizes[:-1], self.sizes[1:]):
            Ws.append(flat[i:i + fo * fi].reshape(fo, fi))
            i += fo * fi
            if self.chip.network.bias:
                bs.append(flat[i:i + fo])
                i += fo
            else:
                bs.append(np.zeros(fo))
        return Ws, bs

    def _split_nodes(self, flat):
        out, i = [], 0
        for fo in self.sizes[1:]:
            out.append(flat[i:i + fo])
            i += fo
        return out

    def _code(self, c: int) -> np.ndarray:
        P, A, mux = self.chip.n_generators, self.A, self.chip.perturbation.multiplexing
        if mux == "code":
            p = np.empty(P)
            for i in range(P):
                self.lfsr[i], bit = lfsr32(self.lfsr[i])
                p[i] = A if bit else -A
            return p
        if mux == "time":
            p = np.zeros(P)
            p[self.plan.time_order[c % P]] = A
            return p
        if mux == "frequency":
            t = float(c) * self.chip.timing.tau_p
            return np.array([A * math.sin(2.0 * math.pi * f * t + ph)
                             for f, ph in zip(self.plan.frequencies, self.plan.phases)])
        col = c % self.plan.walsh_order
        return np.array([A * (-1.0) ** bin(int(r) & col).count("1") for r in self.plan.walsh_rows])

    def step(self, n: int = 1) -> "Reference":
        for _ in range(n):
            self._step()
        return self

    def _step(self):
        chip, k = self.chip, self.k
        tx, tp, tt = chip.timing.tau_x, chip.timing.tau_p, chip.timing.tau_theta
        idx = self.order[self.pos]
        x, target = self.data.inputs[idx], self.data.targets[idx]
        if self.node:
            nodes = self._split_nodes(self.p)
            pert = forward(chip, self.W, self.b, x, node_perturbation=nodes)
        else:
            pw, pb = self._split(self.p)
            pert = forward(chip, self.W, self.b, x, weight_perturbation=pw, bias_perturbation=pb)
        clean = forward(chip, self.W, self.b, x)
        C = cost(chip, pert[-1][1], target)
        C0 = cost(chip, clean[-1][1], target)
        if chip.cost.baseline == "highpass":
            a = chip.cost.tau_hp / (chip.cost.tau_hp + 1)
            prev = C if k % tx == 0 else self.hp_prev
            change = a * (self.hp_out + C - prev)
        else:
            change = C - C0
        if chip.cost.change_limit > 0:
            change = float(np.clip(change, -chip.cost.change_limit, chip.cost.change_limit))
        self.hp_out, self.hp_prev = change, C

        # correlator: e per parameter
        if self.node:
            presyn = clean if chip.perturbation.presynaptic == "unperturbed" else pert
            e_parts = []
            for i, ej in enumerate(self._split_nodes(change * self.p * self.kappa)):
                a_in = presyn[i - 1][1] if i > 0 else np.asarray(x, float)
                e_parts.append(np.concatenate([np.outer(ej, a_in).ravel(),
                                               ej if chip.network.bias else ej[:0]]))
            e = np.concatenate(e_parts)
        else:
            e = change * self.p * self.kappa

        theta = self._flat()
        opt = chip.optimizer
        if chip.integrator.kind == "digital":
            S = self.G + e
            if (k + 1) % tt == 0:
                if opt.kind == "momentum":
                    self.V = opt.momentum * self.V + self.eta * S
                    theta = theta - self.V
                else:
                    theta = theta - self.eta * S
                self.G = np.zeros_like(S)
            else:
                self.G = S
        else:
            tau = float(tt)
            if opt.kind == "momentum":
                self.V = opt.momentum * self.V + self.eta * self.G
                theta = theta - self.V
            else:
                theta = theta - self.eta * self.G
            self.G = tau / (tau + 1) * self.G + 1 / (tau + 1) * e
        self.W, self.b = self._split(theta)

        self.C, self.C0, self.C_change = C, C0, change
        self.acts = [a for _, a in pert]
        if (k + 1) % tx == 0:
            self.pos += 1
            if self.pos == len(self.order):
                self.pos = 0
                self.rng = fisher_yates(self.order, self.rng)
        if (k + 1) % tp == 0:
            self.p = self._code((k + 1) // tp)
        self.k += 1

    def evaluate(self, dataset=None) -> tuple[float, float]:
        task = make_task(self.chip.task.name, **self.chip.task_params())
        data = dataset if dataset is not None else task.test
        out = np.array([forward(self.chip, self.W, self.b, x)[-1][1] for x in data.inputs])
        return (float(np.mean([cost(self.chip, y, t) for y, t in zip(out, data.targets)])),
                task.accuracy(out, data))

    @property
    def registers(self) -> dict:
        regs = {}
        G = self._split(self.G)
        V = self._split(self.V)
        for i in range(len(self.W)):
            p = f"layer{i}."
            regs[p + "weight"], regs[p + "bias"] = self.W[i], self.b[i]
            regs[p + "weight_integrator"], regs[p + "bias_integrator"] = G[0][i], G[1][i]
            regs[p + "weight_velocity"], regs[p + "bias_velocity"] = V[0][i], V[1][i]
            regs[p + "activation"] = self.acts[i]
        if self.node:
            for i, pj in enumerate(self._split_nodes(self.p)):
                regs[f"layer{i}.node_perturbation"] = pj
        else:
            pw, pb = self._split(self.p)
            for i in range(len(self.W)):
                regs[f"layer{i}.weight_perturbation"], regs[f"layer{i}.bias_perturbation"] = pw[i], pb[i]
        regs["cost"] = self.C
        regs["cost_change"] = regs["broadcast"] = self.C_change
        regs["sample_index"] = self.order[self.pos]
        return regs
