"""The "speed of light": the least compiled work one MGD cycle can cost.

One compiled kernel, `sol_run`, runs n cycles of multiplexed gradient descent
on a multilayer perceptron of the same shape as a chip, doing only the work
every emulator of that chip must do per synapse and per cycle, in float64,
with no quantisation, no registers, no latencies, no event counting, no
probes and no block structure:

* weight perturbation (``mode = 0``): per synapse, one 32-bit Galois LFSR
  step for its +-A code; the perturbed and the unperturbed (dual-path)
  multiply-accumulate; then the correlation C~ * p * kappa, the integration
  G += e and, every tau_theta cycles, the update theta -= eta * G, G = 0.
* node perturbation (``mode = 1``): per neuron one LFSR step; per synapse the
  perturbed and the unperturbed multiply-accumulate, the correlation
  e_j * a_k, the integration and the amortised update.

Per neuron: the sigmoid (both paths); per cycle: the sample fetch, the MSE
cost of both paths. Nothing is shared between layers other than the
activations. The kernel is the same Python function compiled twice: serial
(`sol_serial`) and with `prange` over the neurons of a layer
(`sol_parallel`, numba's threading layer), to show what a second thread can
give on arrays of this size.

The emulator's throughput is reported as a fraction of this kernel's on the
same layer sizes (``benchmarks/run.py``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LFSR32_TAPS = np.uint64(0x80200003)


def _sol(n_cycles, sizes, theta, G, lfsr, X, Y, mode, amplitude, kappa, eta, tau_theta,
         act, act0, pert):
    """Run n_cycles of MGD; returns the last cost (so nothing is optimised away).

    sizes: int64 layer sizes; theta, G: float64 [n_params] (per layer the
    weights row-major [fan_out, fan_in], then the biases); lfsr: uint64, one
    state per generator (n_params in weight mode, n_neurons in node mode);
    act, act0: float64 [n_neurons] scratch (perturbed / unperturbed path);
    pert: float64 [n_generators] scratch, this cycle's codes.
    """
    n_layers = sizes.shape[0] - 1
    n_samples = X.shape[0]
    n_out = sizes[n_layers]
    n_gen = pert.shape[0]
    last_cost = 0.0
    for cycle in range(n_cycles):
        s = cycle % n_samples
        # ---- perturbation generators: one LFSR step each
        for i in prange(n_gen):
            st = lfsr[i]
            bit = st & np.uint64(1)
            st >>= np.uint64(1)
            if bit:
                st ^= LFSR32_TAPS
            lfsr[i] = st
            pert[i] = amplitude if bit else -amplitude
        # ---- forward, both paths
        w_off = 0
        n_off = 0
        in_off = 0
        for layer in range(n_layers):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            b_off = w_off + fan_in * fan_out
            for j in prange(fan_out):
                z = 0.0
                z0 = 0.0
                base = w_off + j * fan_in
                if layer == 0:
                    if mode == 0:
                        for k in range(fan_in):
                            a = X[s, k]
                            z += (theta[base + k] + pert[base + k]) * a
                            z0 += theta[base + k] * a
                    else:
                        for k in range(fan_in):
                            a = X[s, k]
                            z += theta[base + k] * a
                            z0 += theta[base + k] * a
                else:
                    if mode == 0:
                        for k in range(fan_in):
                            z += (theta[base + k] + pert[base + k]) * act[in_off + k]
                            z0 += theta[base + k] * act0[in_off + k]
                    else:
                        for k in range(fan_in):
                            z += theta[base + k] * act[in_off + k]
                            z0 += theta[base + k] * act0[in_off + k]
                z += theta[b_off + j]
                z0 += theta[b_off + j]
                if mode == 0:
                    z += pert[b_off + j]
                else:
                    z += pert[n_off + j]
                act[n_off + j] = 1.0 / (1.0 + math.exp(-z))
                act0[n_off + j] = 1.0 / (1.0 + math.exp(-z0))
            if layer > 0:
                in_off += fan_in
            w_off = b_off + fan_out
            n_off += fan_out
        # ---- cost unit, dual path
        out = n_off - n_out
        c = 0.0
        c0 = 0.0
        for j in range(n_out):
            d = act[out + j] - Y[s, j]
            d0 = act0[out + j] - Y[s, j]
            c += d * d
            c0 += d0 * d0
        change = (c - c0) / n_out
        last_cost = c / n_out
        update = (cycle + 1) % tau_theta == 0
        # ---- synapses: correlate, integrate, update (amortised)
        w_off = 0
        n_off = 0
        in_off = 0
        for layer in range(n_layers):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            b_off = w_off + fan_in * fan_out
            for j in prange(fan_out):
                base = w_off + j * fan_in
                if mode == 0:
                    for k in range(fan_in):
                        g = G[base + k] + change * pert[base + k] * kappa
                        if update:
                            theta[base + k] -= eta * g
                            g = 0.0
                        G[base + k] = g
                    g = G[b_off + j] + change * pert[b_off + j] * kappa
                else:
                    ej = change * pert[n_off + j] * kappa
                    for k in range(fan_in):
                        a = X[s, k] if layer == 0 else act[in_off + k]
                        g = G[base + k] + ej * a
                        if update:
                            theta[base + k] -= eta * g
                            g = 0.0
                        G[base + k] = g
                    g = G[b_off + j] + ej
                if update:
                    theta[b_off + j] -= eta * g
                    g = 0.0
                G[b_off + j] = g
            if layer > 0:
                in_off += fan_in
            w_off = b_off + fan_out
            n_off += fan_out
    return last_cost


sol_serial = njit(cache=False, nogil=True)(_sol)
sol_parallel = njit(cache=False, nogil=True, parallel=True)(_sol)


class SpeedOfLight:
    """Arrays of one network shape, ready for `run(n)`.

    sizes: layer sizes (input first); mode: "weight" or "node"; X, Y: the
    dataset (default: 64 random 0/1 samples with one-hot targets).
    """

    def __init__(self, sizes, mode="weight", X=None, Y=None, seed=0, parallel=False,
                 tau_theta=1, amplitude=2.0 ** -7, eta=0.1):
        sizes = np.asarray(sizes, dtype=np.int64)
        rng = np.random.default_rng(seed)
        n_params = int(sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:])))
        n_neurons = int(sizes[1:].sum())
        n_gen = n_params if mode == "weight" else n_neurons
        if X is None:
            X = (rng.random((64, int(sizes[0]))) < 0.5).astype(np.float64)
            Y = np.eye(int(sizes[-1]))[rng.integers(0, int(sizes[-1]), 64)]
        self.sizes = sizes
        self.n_params = n_params
        self.mode = 0 if mode == "weight" else 1
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.Y = np.ascontiguousarray(Y, dtype=np.float64)
        self.theta = rng.uniform(-0.5, 0.5, n_params)
        self.G = np.zeros(n_params)
        self.lfsr = rng.integers(1, 2 ** 32, n_gen, dtype=np.uint64)
        self.act = np.zeros(n_neurons)
        self.act0 = np.zeros(n_neurons)
        self.pert = np.zeros(n_gen)
        self.amplitude, self.eta, self.tau_theta = float(amplitude), float(eta), int(tau_theta)
        self.kappa = 1.0 / (amplitude * amplitude)
        self.kernel = sol_parallel if parallel else sol_serial

    def run(self, n_cycles: int) -> float:
        return self.kernel(int(n_cycles), self.sizes, self.theta, self.G, self.lfsr, self.X,
                           self.Y, self.mode, self.amplitude, self.kappa, self.eta,
                           self.tau_theta, self.act, self.act0, self.pert)


if __name__ == "__main__":  # a quick look: python benchmarks/speed_of_light.py
    import time

    for sizes in ([2, 2, 1], [49, 8, 4], [64, 64, 10], [784, 256, 10]):
        for mode in ("weight", "node"):
            sol = SpeedOfLight(sizes, mode)
            sol.run(10)
            n = max(10, int(2e7 // sol.n_params))
            t = time.perf_counter()
            sol.run(n)
            dt = time.perf_counter() - t
            print(f"{str(sizes):>16} {mode:>6}: {n / dt:12.4g} cycles/s "
                  f"{n * sol.n_params / dt:12.4g} synapse-cycles/s")
