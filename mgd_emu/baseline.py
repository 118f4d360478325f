"""The backpropagation baseline: the chip's network trained with exact gradients.

`Backprop(chip, seed)` trains the network a chip describes (layers,
activations, bias, cost, task) from the chip's own initial weights
(`plan.build_plan`, the same as `Emulator(chip, seed)` starts from), on the
chip's sample order (the sampler's xorshift64* Fisher-Yates shuffles, as
`reference.Reference` re-implements them), in float64, with the exact gradient
of the one current sample's cost (`reference.exact_gradient` computes the same
numbers; it is the test oracle for `gradient`). One step per cycle: step k
uses sample number k // tau_x, so with tau_x = 1 each cycle is one SGD step on
one sample, the chip's own schedule, and curves compare cycle for cycle.

The update is the chip's optimizer with g the exact gradient:

    plain:     theta <- theta - eta * g
    momentum:  v <- gamma * v + eta * g;  theta <- theta - v

with eta = optimizer.learning_rate and gamma = optimizer.momentum (the same
form as the chip's momentum, docs/ALGORITHM.md §11). Number formats,
perturbation, timing other than tau_x, noise and latencies are ignored:
this is the ideal digital computer the chip is compared against.

It has the part of `Emulator`'s interface that studies use: `run`,
`evaluate`, `cycle`, `chip_time`, `events` (always empty: float64 has no
saturating registers), `warm_up` (nothing to compile).
"""
from __future__ import annotations

import numpy as np

from .plan import build_plan
from .reference import ACTIVATIONS, _activation, _cost_gradient, shuffle_order
from .spec import Chip
from .tasks import make_task


def _sigmoid(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


# Vectorised forms of the oracle's activations (the oracle's are scalar loops).
_FAST = {"sigmoid": _sigmoid, "tanh": np.tanh}


def _act(name):
    return _FAST.get(name, ACTIVATIONS[name][0])


class Backprop:
    """SGD (plain or momentum) with exact gradients, one sample per step."""

    def __init__(self, chip: Chip, seed: int = 0):
        self.chip, self.seed = chip, int(seed)
        plan = build_plan(chip, self.seed)
        self.task = make_task(chip.task.name, **chip.task_params())
        self.data = self.task.train
        self.weights = [np.array(W, dtype=np.float64) for W in plan.weights]
        self.biases = [np.array(b, dtype=np.float64) for b in plan.biases]
        self.vw = [np.zeros_like(W) for W in self.weights]
        self.vb = [np.zeros_like(b) for b in self.biases]
        self.has_bias = chip.network.bias
        self.acts = [_activation(chip, i) for i in range(len(self.weights))]
        opt = chip.optimizer
        self.eta, self.gamma, self.momentum = float(opt.learning_rate), float(opt.momentum), opt.kind == "momentum"
        self.tau_x = int(chip.timing.tau_x)
        self.k = 0
        self._rng = int(plan.sampler_seed)
        self._order = self._shuffle(list(range(len(self.data.inputs))))
        self._pos = 0

    # ------------------------------------------------------------ sampling
    def _shuffle(self, order: list) -> list:
        """The next epoch's order, as the chip's sampler draws it."""
        self._rng, order = shuffle_order(self._rng, order)
        return order

    @property
    def sample_index(self) -> int:
        """The dataset index the next step uses."""
        return self._order[self._pos]

    # ------------------------------------------------------------ gradient
    def forward(self, X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(z, a)] per layer for the rows of X ([n, n_in] or [n_in])."""
        out, a = [], np.asarray(X, dtype=np.float64)
        for W, b, name in zip(self.weights, self.biases, self.acts):
            z = a @ W.T + b
            a = _act(name)(z)
            out.append((z, a))
        return out

    def gradient(self, x: np.ndarray, target: np.ndarray):
        """(dW, db): the exact gradient of the cost of one sample."""
        x, target = np.asarray(x, dtype=np.float64), np.asarray(target, dtype=np.float64)
        layers = self.forward(x)
        grad_a = _cost_gradient(self.chip, layers[-1][1], target)
        dW, db = [None] * len(self.weights), [None] * len(self.weights)
        for i in range(len(self.weights) - 1, -1, -1):
            z, a = layers[i]
            delta = grad_a * ACTIVATIONS[self.acts[i]][1](z, a)
            dW[i] = np.outer(delta, layers[i - 1][1] if i > 0 else x)
            db[i] = delta if self.has_bias else np.zeros_like(delta)
            grad_a = self.weights[i].T @ delta
        return dW, db

    # ------------------------------------------------------------ stepping
    def step(self) -> None:
        """One cycle: an SGD step on the current sample, then the sampler moves every tau_x steps."""
        index = self._order[self._pos]
        dW, db = self.gradient(self.data.inputs[index], self.data.targets[index])
        for i in range(len(self.weights)):
            if self.momentum:
                self.vw[i] = self.gamma * self.vw[i] + self.eta * dW[i]
                self.vb[i] = self.gamma * self.vb[i] + self.eta * db[i]
                self.weights[i] = self.weights[i] - self.vw[i]
                self.biases[i] = self.biases[i] - self.vb[i]
            else:
                self.weights[i] = self.weights[i] - self.eta * dW[i]
                self.biases[i] = self.biases[i] - self.eta * db[i]
        self.k += 1
        if self.k % self.tau_x == 0:
            self._pos += 1
            if self._pos == len(self._order):
                self._pos = 0
                self._order = self._shuffle(self._order)

    def run(self, n_cycles: int) -> "Backprop":
        if n_cycles < 0:
            raise ValueError("n_cycles must be >= 0")
        for _ in range(int(n_cycles)):
            self.step()
        return self

    def warm_up(self) -> None:
        """Nothing to compile."""

    @property
    def cycle(self) -> int:
        return self.k

    @property
    def chip_time(self) -> float:
        """Seconds at the chip's clock: the time the chip would take for as many steps."""
        return self.k / self.chip.timing.clock_hz

    @property
    def events(self) -> dict:
        return {}

    # ------------------------------------------------------------ evaluate
    def outputs(self, dataset=None) -> np.ndarray:
        data = dataset if dataset is not None else self.task.test
        return self.forward(data.inputs)[-1][1]

    def evaluate(self, dataset=None) -> tuple[float, float]:
        """(mean cost, accuracy) on a dataset (default: the test set)."""
        data = dataset if dataset is not None else self.task.test
        y, t = self.outputs(data), data.targets
        if self.chip.cost.function == "mse":
            c = np.mean((y - t) ** 2, axis=1)
        else:
            m = y.max(axis=1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(y - m).sum(axis=1))
            c = -(t * (y - lse[:, None])).sum(axis=1)
        return float(np.mean(c)), float(self.task.accuracy(y, data))
