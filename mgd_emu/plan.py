"""The build plan: everything a chip's seed fixes before cycle 0.

Initial weights, generator seeds, the time-multiplexing order, the frequency
plan, the Walsh rows, static device variation and the seeds of every on-chip
random stream. The engine and the reference both start from this plan, so the
oracle checks the cycle arithmetic, not a second copy of the seeding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from numba import njit

from .blocks.prng import derive_seed, gaussian, uniform01, xorshift64star_next
from .fixedpoint import Format
from .spec import Chip, element_amplitude

# Stream identifiers for derive_seed(seed, stream, index).
STREAM_INIT = 1
STREAM_LFSR = 2
STREAM_TIME_ORDER = 3
STREAM_FREQUENCY = 4
STREAM_WALSH = 5
STREAM_SAMPLER = 6
STREAM_DEVICE = 7
STREAM_COST_NOISE = 8
STREAM_WEIGHT_NOISE = 9
STREAM_ACTIVATION_NOISE = 10
STREAM_ROUNDING = 100  # + register id


class Stream:
    """A xorshift64* generator used at build time (plain Python)."""

    def __init__(self, seed: int, stream: int, index: int = 0):
        self.state = np.uint64(derive_seed(seed, stream, index))

    def word(self) -> int:
        state, out = xorshift64star_next(self.state)
        self.state = np.uint64(state)
        return int(out)

    def uniform(self) -> float:
        return float(uniform01(np.uint64(self.word())))

    def normal(self) -> float:
        state, z = gaussian(self.state)
        self.state = np.uint64(state)
        return float(z)


    def uniforms(self, n: int) -> np.ndarray:
        """n uniforms, exactly as n calls of uniform() (compiled: no Python per draw)."""
        state, out = _uniforms(self.state, n)
        self.state = np.uint64(state)
        return out

    def normals(self, n: int) -> np.ndarray:
        """n standard normals, exactly as n calls of normal()."""
        state, out = _normals(self.state, n)
        self.state = np.uint64(state)
        return out

    def shuffle(self, n: int) -> np.ndarray:
        """fisher_yates(n, self.word), compiled."""
        state, out = _fisher_yates(self.state, n)
        self.state = np.uint64(state)
        return out


# Build-time generators in compiled loops: a chip of 1e8 parameters draws its
# weights, generator seeds and orders in seconds (they are bit-identical to
# the Python loops they replace, which Stream's word/uniform/normal spell out).

@njit(cache=True)
def _uniforms(state, n):
    out = np.empty(n)
    for i in range(n):
        state, word = xorshift64star_next(state)
        out[i] = uniform01(word)
    return state, out


@njit(cache=True)
def _normals(state, n):
    out = np.empty(n)
    for i in range(n):
        state, z = gaussian(state)
        out[i] = z
    return state, out


@njit(cache=True)
def _fisher_yates(state, n):
    order = np.arange(n)
    for i in range(n - 1, 0, -1):
        state, word = xorshift64star_next(state)
        j = np.int64(word % np.uint64(i + 1))
        t = order[i]
        order[i] = order[j]
        order[j] = t
    return state, order


@njit(cache=True)
def _hashed_lfsr_seeds(seed, n):
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        v = derive_seed(seed, 2, i) & np.uint64(0xFFFFFFFF)  # STREAM_LFSR
        out[i] = v if v != 0 else np.uint64(1)
    return out


def fisher_yates(n: int, next_word) -> np.ndarray:
    """Seeded shuffle of 0..n-1: for i = n-1..1: j = next() % (i+1); swap."""
    order = np.arange(n, dtype=np.int64)
    for i in range(n - 1, 0, -1):
        j = next_word() % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def quantize_array(x: np.ndarray, fmt: Format) -> np.ndarray:
    """quantize_const of every element (nearest-even, saturate), vectorised."""
    x = np.asarray(x, dtype=np.float64)
    if not fmt.is_fixed:
        return x.copy()
    # + 0.0: a code of 0 is +0.0, as in quantize_const (rint gives -0.0 for small negatives)
    return np.clip(np.rint(x * 2.0 ** fmt.frac_bits), fmt.min_code, fmt.max_code) * fmt.lsb + 0.0


def quantize_const(x: float, fmt: Format) -> float:
    """A constant as a register of `fmt` holds it (nearest-even, saturate)."""
    if not fmt.is_fixed:
        return float(x)
    code = int(np.rint(x * 2.0 ** fmt.frac_bits))
    return min(max(code, fmt.min_code), fmt.max_code) * fmt.lsb


@dataclass
class Plan:
    """Seed-determined initial state of a chip."""

    weights: list          # per layer float64 [fan_out, fan_in], on the weight grid
    biases: list           # per layer float64 [fan_out] (zeros if no bias)
    amplitude: float       # A, per-element peak perturbation, on the perturbation grid
    lfsr_seeds: np.ndarray  # uint64 [P], nonzero 32-bit states (code multiplexing)
    time_order: np.ndarray  # int64 [P] (time multiplexing)
    frequencies: np.ndarray  # float64 [P], cycles^-1 (frequency multiplexing)
    phases: np.ndarray      # float64 [P], radians
    walsh_rows: np.ndarray  # int64 [P], distinct rows in 1..N-1
    walsh_order: int        # N
    gains: list             # per layer float64 [fan_out]: static neuron gain
    offsets: list           # per layer float64 [fan_out]: static input offset
    sampler_seed: int       # xorshift64* state of the sampler


def build_plan(chip: Chip, seed: int) -> Plan:
    sizes = chip.layer_sizes
    net, pert, noise = chip.network, chip.perturbation, chip.noise
    wfmt, bfmt = chip.formats.weight, chip.formats.bias
    n_gen = chip.n_generators

    init = Stream(seed, STREAM_INIT)
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        if net.init == "glorot":
            lim = math.sqrt(6.0 / (fan_in + fan_out))
            lo, hi = -lim, lim
        else:
            lo, hi = net.init_low, net.init_high
        w = lo + (hi - lo) * init.uniforms(fan_in * fan_out)   # row by row, as [fan_out, fan_in]
        if net.bias and net.init == "uniform":
            b = lo + (hi - lo) * init.uniforms(fan_out)
        else:
            b = np.zeros(fan_out)
        weights.append(quantize_array(w, wfmt).reshape(fan_out, fan_in))
        biases.append(quantize_array(b, bfmt).reshape(fan_out))

    assert STREAM_LFSR == 2
    if pert.generator_seeds == "hashed":
        lfsr = _hashed_lfsr_seeds(np.uint64(seed), n_gen)
    else:  # (seed + i) % (2**32 - 1) + 1, without overflow for any 63-bit seed
        m = 0xFFFFFFFF
        lfsr = (np.uint64(seed % m) + np.arange(n_gen, dtype=np.uint64) % np.uint64(m)) % np.uint64(m) + np.uint64(1)

    # Each scheme's table is drawn from its own stream, and only for the
    # scheme the chip uses (the others stay zero): a seeded shuffle of P
    # entries is most of the build time of a wide chip.
    mux = pert.multiplexing
    time_order = Stream(seed, STREAM_TIME_ORDER).shuffle(n_gen) if mux == "time" else np.zeros(n_gen, np.int64)

    freqs, phases = np.zeros(n_gen), np.zeros(n_gen)
    if mux == "frequency":
        fstream = Stream(seed, STREAM_FREQUENCY)
        freqs = np.linspace(pert.freq_min, pert.freq_max, n_gen) if n_gen > 1 else np.array([pert.freq_min])
        freqs = freqs[fstream.shuffle(n_gen)]
        phases = 2.0 * math.pi * fstream.uniforms(n_gen)

    order = 1 << max(1, math.ceil(math.log2(n_gen + 1)))
    rows = Stream(seed, STREAM_WALSH).shuffle(order - 1)[:n_gen] + 1 if mux == "walsh" else np.zeros(n_gen, np.int64)

    dev = Stream(seed, STREAM_DEVICE)
    gains, offsets = [], []
    for fan_out in sizes[1:]:
        gains.append(1.0 + noise.gain_sigma * dev.normals(fan_out))
        offsets.append(noise.offset_sigma * dev.normals(fan_out))

    return Plan(
        weights=weights,
        biases=biases,
        amplitude=quantize_const(element_amplitude(chip), chip.formats.perturbation),
        lfsr_seeds=np.array(lfsr, dtype=np.uint64),
        time_order=time_order,
        frequencies=np.ascontiguousarray(freqs, dtype=np.float64),
        phases=phases,
        walsh_rows=np.ascontiguousarray(rows, dtype=np.int64),
        walsh_order=order,
        gains=gains,
        offsets=offsets,
        sampler_seed=int(derive_seed(seed, STREAM_SAMPLER, 0)),
    )
