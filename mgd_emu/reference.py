"""Textbook MGD in float64 numpy, and exact gradients: the test oracle.

Short and obviously correct, and independent of the engine: it shares only
the build plan (`plan.build_plan`: initial weights, generator seeds, time
order, frequency plan, Walsh rows, sampler seed) and the datasets
(`tasks.make_task`). The generators themselves (32-bit Galois LFSR,
xorshift64*, Fisher-Yates, Walsh signs) are re-implemented here in plain
Python integers. Ideal arithmetic (number formats are ignored), zero latency,
no noise, no static device variation: one `Reference.step()` is one cycle of
a zero-latency chip as `docs/CYCLE.md` defines it, and `Reference` refuses
(ValueError) any chip with a latency, a correlator skew or nonzero delay, or
noise.

Notation
--------
P generators; channel order: layer by layer, each layer's weights row-major
([fan_out, fan_in]) then its biases (weight mode), or each layer's neurons
(node mode). The parameter vector theta has the weight-mode order. A is the
per-element amplitude `plan.amplitude`; kappa = 1/N with N from
docs/ALGORITHM.md §5, computed here from A (`normalisation`):
sigma^2 = E[p_i^2] = A^2 (code, walsh), A^2/2 (frequency), A^2/P (time);
M = sqrt(P sigma^2), the r.m.s. norm of the perturbation vector; N = sigma^2
(power), M^2 (norm), A M sqrt(1/P + 1/tau_theta - 1/(P tau_theta))
(step_length). eta' = eta/tau_theta if `divide_by_tau_theta` else eta.

Step k (k = 0, 1, ...)
----------------------
* sample: number s = k // tau_x, dataset index order_e[s mod n] of epoch
  e = s // n; each epoch's order is a Fisher-Yates shuffle, in place, of the
  previous epoch's order (of 0..n-1 for epoch 0)
  (`for i = n-1..1: j = next() % (i+1); swap`) by the sampler's xorshift64*
  generator (state `plan.sampler_seed`), continuing its stream from epoch to
  epoch; epoch 0 is shuffled at construction (see `_shuffle`).
* perturbation: code number c = k // tau_p; p = code(c):
  code:      each generator's LFSR (state `plan.lfsr_seeds[i]`) steps once per
             new code, code 0 included; bit 1 -> +A, bit 0 -> -A;
  time:      p[time_order[c % P]] = +A, all others 0;
  frequency: p_i = A sin(2 pi f_i c tau_p + phi_i);
  walsh:     p_i = A (-1)^popcount(row_i & (c mod N)).
* forward: perturbed path with W + P_W, b + P_b (weight mode) or z + P_node
  (node mode); unperturbed path with theta; C = cost(perturbed output),
  C0 = cost(unperturbed output) on the same x.
* cost change C~: dual_path and remeasure: C - C0 (the same at step level);
  highpass: a (C~_prev + C - C_prev), a = tau_hp/(tau_hp+1), where
  C_prev := C on step 0 and on every step with k % tau_x == 0 (a sample was
  loaded, even if it is the same index), and otherwise the C of step k-1;
  C~_prev is the C~ register (the clamped C~ of step k-1; 0 at reset).
  Then clamp to +-change_limit if change_limit > 0.
* correlator: weight mode e_i = C~ p_i kappa; node mode e_j = C~ p_j kappa,
  weight (j, k) of layer l gets e_j a_k with a the layer's input (x for layer
  0; the previous layer's activation on the perturbed path if presynaptic =
  "live", on the unperturbed path if "unperturbed"), bias j gets e_j.
* integrator, from the registers at the start of the step:
  digital: S = G + e; if (k+1) % tau_theta == 0: theta -= eta' S (plain) or
           v = gamma v + eta' S, theta -= v (momentum), and G = 0; else G = S.
  analog:  theta -= eta' G (plain) or v = gamma v + eta' G, theta -= v
           (momentum), with G the register at the start of the step; then
           G = beta G + lambda e, beta = tau_theta/(tau_theta+1),
           lambda = 1/(tau_theta+1).

Registers after step k's commit (`Reference.registers`; at construction, the
reset state: initial weights, code 0, zero integrators/velocities/costs)
---------------------------------------------------------------------------
Only the registers the chip has: the bias ones with network.bias, the
velocities with the momentum optimiser.

layer{i}.weight, .bias                  theta after step k ([fan_out, fan_in],
                                        [fan_out])
layer{i}.weight_perturbation,           weight mode: the code step k+1 applies
  .bias_perturbation                    (code((k+1)//tau_p))
layer{i}.node_perturbation              node mode: the same, per neuron
layer{i}.weight_integrator,             G after step k
  .bias_integrator
layer{i}.weight_velocity, .bias_velocity  momentum v after step k
layer{i}.activation                     the perturbed path's activation in step k
output                                  the last layer's activation in step k
input, target                           x and y* of the sample step k+1 uses
cost                                    C measured in step k
cost_change, broadcast                  C~ of step k (equal at zero latency)
sample_index                            the dataset index step k+1 uses
"""
from __future__ import annotations

import math

import numpy as np

from .plan import build_plan
from .spec import Chip
from .tasks import make_task

MASK64 = (1 << 64) - 1
LFSR32_TAPS = 0x80200003
XORSHIFT64STAR_MULTIPLIER = 0x2545F4914F6CDD1D


# ---------------------------------------------------------------- generators

def lfsr32(state: int) -> tuple[int, int]:
    """One step of the 32-bit Galois LFSR: (new state, bit shifted out)."""
    bit = state & 1
    state >>= 1
    if bit:
        state ^= LFSR32_TAPS
    return state, bit


def xorshift64star(state: int) -> tuple[int, int]:
    """One xorshift64* step: (new state, 64-bit output)."""
    x = state
    x ^= x >> 12
    x ^= (x << 25) & MASK64
    x ^= x >> 27
    return x, (x * XORSHIFT64STAR_MULTIPLIER) & MASK64


# ---------------------------------------------------------------- the network

# Scalar libm functions and input-order accumulation, as the chip's neurons
# compute them: training amplifies one-ulp differences (C - C0 is a small
# difference), so the oracle rounds the way the hardware does.
def _sigmoid_scalar(z: float) -> float:
    try:
        return 1.0 / (1.0 + math.exp(-z))
    except OverflowError:
        return 0.0


_sigmoid = np.vectorize(_sigmoid_scalar, otypes=[float])
_tanh = np.vectorize(math.tanh, otypes=[float])


# name: (f(z), f'(z) given z and a = f(z))
ACTIVATIONS = {
    "sigmoid": (_sigmoid, lambda z, a: a * (1.0 - a)),
    "tanh": (_tanh, lambda z, a: 1.0 - a * a),
    "relu": (lambda z: np.where(z > 0.0, z, 0.0), lambda z, a: (z > 0).astype(float)),  # z > 0 ? z : 0 (NaN -> 0)
    "linear": (lambda z: z.copy(), lambda z, a: np.ones_like(z)),
    "hard_sigmoid": (lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0),
                     lambda z, a: np.where((z > -2.5) & (z < 2.5), 0.2, 0.0)),
}


def _activation(chip: Chip, layer: int) -> str:
    last = len(chip.layer_sizes) - 2
    return chip.network.output_activation if layer == last else chip.network.activation


def forward(chip, weights, biases, x, weight_perturbation=None, bias_perturbation=None,
            node_perturbation=None):
    """[(z, a)] per layer: z = (W + P_W) a_in + (b + P_b) + P_node, a = f(z).

    The perturbations are per-layer lists (or None); a_in is x for layer 0.
    """
    out, a = [], np.asarray(x, dtype=float)
    for i, (W, b) in enumerate(zip(weights, biases)):
        W = np.asarray(W, float) + (weight_perturbation[i] if weight_perturbation is not None else 0.0)
        z = np.zeros(W.shape[0])
        for k in range(W.shape[1]):  # accumulate in input order, as a MAC does
            z = z + W[:, k] * a[k]
        z = z + np.asarray(b, float)
        if bias_perturbation is not None:
            z = z + bias_perturbation[i]
        if node_perturbation is not None:
            z = z + node_perturbation[i]
        a = ACTIVATIONS[_activation(chip, i)][0](z)
        out.append((z, a))
    return out


def cost(chip, y, target) -> float:
    """mse: mean over outputs of (y - t)^2; cross_entropy: -sum t log softmax(y)."""
    y, target = np.asarray(y, float), np.asarray(target, float)
    if chip.cost.function == "mse":
        return float(np.mean((y - target) ** 2))
    # scalar libm and output-order sums, as the cost unit computes them
    m = max(float(v) for v in y)
    total = 0.0
    for v in y:
        total += math.exp(float(v) - m)
    lse = m + math.log(total)
    out = 0.0
    for v, t in zip(y, target):
        out -= float(t) * (float(v) - lse)
    return out


def _cost_gradient(chip, y, target):
    """dC/dy."""
    if chip.cost.function == "mse":
        return 2.0 * (y - target) / len(y)
    s = np.exp(y - np.max(y))
    return s / s.sum() * target.sum() - target


def exact_gradient(chip, weights, biases, X, Y):
    """(dW, db): analytic backpropagation of the mean cost over the rows of X."""
    X, Y = np.atleast_2d(np.asarray(X, float)), np.atleast_2d(np.asarray(Y, float))
    dW = [np.zeros(np.shape(W)) for W in weights]
    db = [np.zeros(np.shape(b)) for b in biases]
    for x, t in zip(X, Y):
        layers = forward(chip, weights, biases, x)
        grad_a = _cost_gradient(chip, layers[-1][1], t)
        for i in range(len(weights) - 1, -1, -1):
            z, a = layers[i]
            delta = grad_a * ACTIVATIONS[_activation(chip, i)][1](z, a)
            a_in = layers[i - 1][1] if i > 0 else x
            dW[i] += np.outer(delta, a_in)
            db[i] += delta
            grad_a = np.asarray(weights[i], float).T @ delta
    return [g / len(X) for g in dW], [g / len(X) for g in db]


def mean_cost(chip, weights, biases, X, Y) -> float:
    """The unperturbed network's mean cost over the rows of X."""
    X, Y = np.atleast_2d(np.asarray(X, float)), np.atleast_2d(np.asarray(Y, float))
    return float(np.mean([cost(chip, forward(chip, weights, biases, x)[-1][1], t) for x, t in zip(X, Y)]))


def finite_difference_gradient(chip, weights, biases, X, Y, h=1e-6):
    """(dW, db) of the mean cost by central differences, one parameter at a time."""
    params = [np.array(W, float) for W in weights] + [np.array(b, float) for b in biases]
    n = len(weights)
    grads = []
    for p in params:
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            v = p[idx]
            p[idx] = v + h
            up = mean_cost(chip, params[:n], params[n:], X, Y)
            p[idx] = v - h
            down = mean_cost(chip, params[:n], params[n:], X, Y)
            p[idx] = v
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return grads[:n], grads[n:]


# ---------------------------------------------------------------- the chip

def normalisation(chip: Chip, A: float) -> float:
    """N, the correlator divisor, for per-element peak amplitude A (docs/ALGORITHM.md §5)."""
    P, tau = chip.n_generators, chip.timing.tau_theta
    sigma2 = {"code": A * A, "walsh": A * A, "frequency": A * A / 2.0,
              "time": A * A / P}[chip.perturbation.multiplexing]
    M = math.sqrt(P * sigma2)
    rule = chip.perturbation.normalization
    if rule == "power":
        return sigma2
    if rule == "norm":
        return M * M
    return A * M * math.sqrt(1.0 / P + 1.0 / tau - 1.0 / (P * tau))



def check_supported(chip: Chip) -> None:
    """Raise ValueError unless the chip is zero-latency and noiseless."""
    t, noise = chip.timing, chip.noise
    if t.cost_latency or t.broadcast_latency or t.layer_pipelining:
        raise ValueError("the reference models zero-latency chips only "
                         "(cost_latency, broadcast_latency must be 0, layer_pipelining false)")
    if t.correlator_skew or t.correlator_delay not in ("auto", 0):
        raise ValueError('the reference needs correlator_delay = "auto" or 0 and correlator_skew = 0')
    noisy = [key for key in noise if noise[key]]
    if noisy:
        raise ValueError(f"the reference models noiseless chips only (noise.{noisy[0]} is nonzero)")


def shuffle_order(rng: int, order: list) -> tuple[int, list]:
    """(generator state, the next epoch's order): Fisher-Yates of `order`
    driven by the chip sampler's xorshift64* state `rng`, as the sampler does it."""
    order = list(order)
    for i in range(len(order) - 1, 0, -1):
        rng, word = xorshift64star(rng)
        j = word % (i + 1)
        order[i], order[j] = order[j], order[i]
    return rng, order


class Reference:
    """Textbook MGD for a zero-latency, noiseless chip; one step per cycle."""

    def __init__(self, chip: Chip, seed: int = 0):
        check_supported(chip)
        self.chip, self.seed = chip, seed
        self.plan = plan = build_plan(chip, seed)
        self.task = make_task(chip.task.name, **chip.task_params())
        self.data = self.task.train
        self.sizes = chip.layer_sizes
        self.node = chip.perturbation.mode == "node"
        self.has_bias = chip.network.bias
        self.weights = [np.array(W, float) for W in plan.weights]
        self.biases = [np.array(b, float) for b in plan.biases]
        self.A = float(plan.amplitude)
        self.kappa = 1.0 / normalisation(chip, self.A)
        opt, t = chip.optimizer, chip.timing
        self.eta = opt.learning_rate / t.tau_theta if opt.divide_by_tau_theta else opt.learning_rate
        self.k = 0
        # sampler
        self._rng = int(plan.sampler_seed)
        self._order = self._shuffle(list(range(len(self.data.inputs))))
        self._pos = 0
        # generators
        self._lfsr = [int(s) for s in plan.lfsr_seeds]
        self.p = self._code(0)
        # synapses (flat, parameter order) and cost unit
        self.G = np.zeros(chip.n_parameters)
        self.V = np.zeros(chip.n_parameters)
        self.C = self.C_change = 0.0
        self._hp_prev = 0.0
        self.acts = [np.zeros(n) for n in self.sizes[1:]]

    # ------------------------------------------------------------ layout
    def _flat(self, Ws, bs) -> np.ndarray:
        """Per layer: weights row-major, then biases (if the network has them)."""
        return np.concatenate([np.concatenate([W.ravel(), b if self.has_bias else b[:0]])
                               for W, b in zip(Ws, bs)])

    def _unflat(self, flat):
        Ws, bs, i = [], [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            Ws.append(flat[i:i + fan_out * fan_in].reshape(fan_out, fan_in))
            i += fan_out * fan_in
            if self.has_bias:
                bs.append(flat[i:i + fan_out])
                i += fan_out
            else:
                bs.append(np.zeros(fan_out))
        return Ws, bs

    def _per_neuron(self, flat):
        offsets = np.cumsum((0,) + self.sizes[1:])
        return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

    # ------------------------------------------------------------ generators
    def _shuffle(self, order: list) -> list:
        """A new epoch's order: Fisher-Yates of the previous one by the sampler's xorshift64*."""
        self._rng, order = shuffle_order(self._rng, order)
        return order

    def _code(self, c: int) -> np.ndarray:
        """The perturbation vector of code number c (steps the LFSRs once)."""
        pert, A, P = self.chip.perturbation, self.A, self.chip.n_generators
        if pert.multiplexing == "code":
            p = np.empty(P)
            for i in range(P):
                self._lfsr[i], bit = lfsr32(self._lfsr[i])
                p[i] = A if bit else -A
            return p
        if pert.multiplexing == "time":
            p = np.zeros(P)
            p[int(self.plan.time_order[c % P])] = A
            return p
        if pert.multiplexing == "frequency":
            t = float(c * self.chip.timing.tau_p)
            return np.array([A * math.sin(2.0 * math.pi * float(f) * t + float(phi))
                             for f, phi in zip(self.plan.frequencies, self.plan.phases)])
        column = c % int(self.plan.walsh_order)
        return np.array([A * (-1.0) ** bin(int(r) & column).count("1") for r in self.plan.walsh_rows])

    # ------------------------------------------------------------ stepping
    def step(self, n: int = 1) -> "Reference":
        """Run n steps (n zero-latency chip cycles)."""
        for _ in range(n):
            self._step()
        return self

    def _step(self):
        chip, k = self.chip, self.k
        tau_x, tau_p, tau_theta = chip.timing.tau_x, chip.timing.tau_p, chip.timing.tau_theta
        index = self._order[self._pos]
        x, target = self.data.inputs[index], self.data.targets[index]

        # combinational: forward passes, cost, cost change, correlators
        if self.node:
            perturbed = forward(chip, self.weights, self.biases, x,
                                node_perturbation=self._per_neuron(self.p))
        else:
            pw, pb = self._unflat(self.p)
            perturbed = forward(chip, self.weights, self.biases, x,
                                weight_perturbation=pw, bias_perturbation=pb)
        clean = forward(chip, self.weights, self.biases, x)
        C = cost(chip, perturbed[-1][1], target)
        C0 = cost(chip, clean[-1][1], target)
        if chip.cost.baseline == "highpass":
            a = chip.cost.tau_hp / (chip.cost.tau_hp + 1.0)
            c_prev = C if k % tau_x == 0 else self._hp_prev
            change = a * (self.C_change + C - c_prev)
        else:
            change = C - C0
        limit = chip.cost.change_limit
        if limit > 0:
            change = min(max(change, -limit), limit)

        if self.node:
            presynaptic = clean if chip.perturbation.presynaptic == "unperturbed" else perturbed
            parts = []
            for i, e_j in enumerate(self._per_neuron(change * self.p * self.kappa)):
                a_in = presynaptic[i - 1][1] if i > 0 else np.asarray(x, float)
                parts.append(np.concatenate([np.outer(e_j, a_in).ravel(), e_j if self.has_bias else e_j[:0]]))
            e = np.concatenate(parts)
        else:
            e = change * self.p * self.kappa

        # sequential: next values from the current registers
        theta = self._flat(self.weights, self.biases)
        opt = chip.optimizer
        G, V = self.G, self.V
        if chip.integrator.kind == "digital":
            S = G + e
            if (k + 1) % tau_theta == 0:
                if opt.kind == "momentum":
                    V = opt.momentum * V + self.eta * S
                    theta = theta - V
                else:
                    theta = theta - self.eta * S
                G = np.zeros_like(S)
            else:
                G = S
        else:
            if opt.kind == "momentum":
                V = opt.momentum * V + self.eta * G
                theta = theta - V
            else:
                theta = theta - self.eta * G
            tau = float(tau_theta)
            G = tau / (tau + 1.0) * G + 1.0 / (tau + 1.0) * e

        # commit
        self.weights, self.biases = (list(v) for v in self._unflat(theta))
        self.G, self.V = G, V
        self.C, self.C_change, self._hp_prev = C, change, C
        self.acts = [a for _, a in perturbed]
        if (k + 1) % tau_x == 0:
            self._pos += 1
            if self._pos == len(self._order):
                self._pos = 0
                self._order = self._shuffle(self._order)
        if (k + 1) % tau_p == 0:
            self.p = self._code((k + 1) // tau_p)
        self.k = k + 1

    # ------------------------------------------------------------ reading
    @property
    def registers(self) -> dict:
        """Copies of the registers after the last step's commit (module docstring)."""
        regs = {}
        Gw, Gb = self._unflat(self.G)
        Vw, Vb = self._unflat(self.V)
        bias, momentum = self.has_bias, self.chip.optimizer.kind == "momentum"
        for i in range(len(self.weights)):
            layer = f"layer{i}."
            regs[layer + "weight"] = self.weights[i].copy()
            regs[layer + "weight_integrator"] = Gw[i].copy()
            if bias:
                regs[layer + "bias"] = self.biases[i].copy()
                regs[layer + "bias_integrator"] = Gb[i].copy()
            if momentum:
                regs[layer + "weight_velocity"] = Vw[i].copy()
                if bias:
                    regs[layer + "bias_velocity"] = Vb[i].copy()
            regs[layer + "activation"] = self.acts[i].copy()
        if self.node:
            for i, p in enumerate(self._per_neuron(self.p)):
                regs[f"layer{i}.node_perturbation"] = p.copy()
        else:
            pw, pb = self._unflat(self.p)
            for i in range(len(self.weights)):
                regs[f"layer{i}.weight_perturbation"] = pw[i].copy()
                if bias:
                    regs[f"layer{i}.bias_perturbation"] = pb[i].copy()
        index = self._order[self._pos]
        regs["output"] = self.acts[-1].copy()
        regs["input"] = np.array(self.data.inputs[index], dtype=float)
        regs["target"] = np.array(self.data.targets[index], dtype=float)
        regs["cost"] = np.float64(self.C)
        regs["cost_change"] = np.float64(self.C_change)
        regs["broadcast"] = np.float64(self.C_change)
        regs["sample_index"] = np.int64(self._order[self._pos])
        return regs

    def evaluate(self, dataset=None) -> tuple[float, float]:
        """(mean cost, accuracy) of the unperturbed network; default: the test set."""
        data = self.task.test if dataset is None else dataset
        outputs = np.array([forward(self.chip, self.weights, self.biases, x)[-1][1] for x in data.inputs])
        mean = float(np.mean([cost(self.chip, y, t) for y, t in zip(outputs, data.targets)]))
        return mean, self.task.accuracy(outputs, data)
