"""Datasets the chips learn: N-bit parity, NIST7x7 letters, 8x8 digits.

Every array is float64 (labels int64) and C-contiguous, so the compiled
kernels take them as they are.  Each dataset carries an ``identity`` line
that names its generator, its parameters, its size and the first 16 hex
digits of a sha256 over ``inputs.tobytes() + targets.tobytes()``: two runs
with the same identity learned exactly the same data.

Tasks (parameters in :data:`TASKS`):

``parity``   all ``2**bits`` patterns of ``bits`` 0/1 inputs, row ``i`` holding
             the bits of ``i`` most significant first; one output, the parity
             (2-bit parity is XOR).  Train and test are the same dataset.
``nist7x7``  the NIST7x7 task of McCaughan et al. (2023): 7x7 binary images of
             the letters N, I, S, T (4 one-hot outputs), each a 3x3 glyph
             placed at all 5x5 = 25 positions in the frame: 100 images.  With
             ``noise`` > 0 each pixel is flipped with that probability (drawn
             once, at build time, from ``np.random.default_rng(seed)``).  Train
             and test are the same dataset.
``digits``   scikit-learn's bundled 8x8 handwritten digits, pixels / 16, 10
             one-hot outputs (or ``classes`` of them: only labels < classes are
             kept); a simple random split by
             ``np.random.default_rng(split_seed).permutation``, the first
             ``round(test_fraction * n)`` samples of which are the test set.
``random``   ``samples`` random 0/1 input patterns of ``inputs`` bits with
             random labels among ``outputs`` classes (one output: 0/1), from
             ``np.random.default_rng(seed)``: a task of any size, for
             benchmarking wide chips.  Train and test are the same dataset.
``file``     the user's own data from an NPZ, HDF5 or CSV file (see
             :mod:`mgd_emu.datafile` and docs/datasets.md): inputs times
             ``scale``, integer labels (one-hot outputs) or real targets, a
             test set given in the file or in ``test_path``, or split off by
             ``split_seed``.  The identity carries the path and the data digest.
"""
from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    inputs: np.ndarray   # float64 [n, n_in] in [0, 1], C-contiguous
    targets: np.ndarray  # float64 [n, n_out], C-contiguous (one-hot, or 0/1 for one output)
    labels: np.ndarray   # int64 [n]: class index (argmax of target; 0/1 for one output)
    identity: str        # identifies the data exactly (with a sha256 prefix)


@dataclass(frozen=True)
class Task:
    name: str
    train: Dataset
    test: Dataset        # may be the very object ``train`` (parity, nist7x7)
    n_in: int
    n_out: int

    def accuracy(self, outputs: np.ndarray, dataset: Dataset) -> float:
        """Fraction correct.  One output: ``(y > 0.5) == (y* > 0.5)``;
        several: ``argmax(y) == label``."""
        outputs = np.asarray(outputs, dtype=np.float64).reshape(len(dataset.labels), -1)
        if outputs.shape[1] == 1:
            hit = (outputs[:, 0] > 0.5) == (dataset.targets[:, 0] > 0.5)
        else:
            hit = np.argmax(outputs, axis=1) == dataset.labels
        return float(np.mean(hit)) if len(hit) else 0.0


def data_digest(inputs: np.ndarray, targets: np.ndarray) -> str:
    """First 16 hex digits of sha256(inputs bytes + targets bytes)."""
    return hashlib.sha256(inputs.tobytes() + targets.tobytes()).hexdigest()[:16]


def _dataset(name, inputs, targets, labels, describe) -> Dataset:
    inputs = np.ascontiguousarray(inputs, dtype=np.float64)
    targets = np.ascontiguousarray(targets, dtype=np.float64)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    return Dataset(name, inputs, targets, labels,
                   f"{describe} n={len(inputs)} sha256:{data_digest(inputs, targets)}")


# name -> {param: (type, default, allowed (lo, hi) inclusive, one-line doc)}
TASKS = {
    "parity": {"bits": (int, 2, (2, 10), "input bits; 2-bit parity is XOR")},
    "nist7x7": {"noise": (float, 0.0, (0.0, 0.5), "probability of flipping each pixel (fixed at build)"),
                "seed": (int, 0, (0, 2**31 - 1), "seed of the pixel noise")},
    "digits": {"test_fraction": (float, 0.2, (0.05, 0.5), "fraction held out as the test set"),
               "split_seed": (int, 0, (0, 2**31 - 1), "seed of the train/test split"),
               "classes": (int, 10, (2, 10), "keep the digits 0..classes-1")},
    "random": {"inputs": (int, 16, (1, 65536), "input bits per pattern"),
               "outputs": (int, 2, (1, 65536), "classes (one output: a 0/1 label)"),
               "samples": (int, 256, (1, 65536), "patterns"),
               "seed": (int, 0, (0, 2**31 - 1), "seed of the patterns and labels")},
}


def _file_params():
    from .datafile import FILE_PARAMS

    return FILE_PARAMS


TASKS["file"] = _file_params()


def task_shape(name: str, params: dict) -> tuple[int, int]:
    """(inputs, outputs) of a task, without building its data."""
    full = {k: params.get(k, spec[1]) for k, spec in TASKS[name].items()}
    if name == "file":
        from .datafile import load_file_task

        t = load_file_task(full)
        return t.n_in, t.n_out
    return {"parity": lambda: (int(full["bits"]), 1), "nist7x7": lambda: (49, 4),
            "digits": lambda: (64, int(full["classes"])),
            "random": lambda: (int(full["inputs"]), int(full["outputs"]))}[name]()


# ------------------------------------------------------------------ parity

def _parity(bits: int) -> Task:
    i = np.arange(1 << bits)
    x = (i[:, None] >> np.arange(bits - 1, -1, -1)[None, :]) & 1   # MSB first
    labels = x.sum(axis=1) % 2
    name = f"parity{bits}"
    ds = _dataset(name, x, labels[:, None], labels, f"parity bits={bits}")
    return Task(name, ds, ds, bits, 1)


# ----------------------------------------------------------------- nist7x7

# The four 3x3 letters of NIST7x7 (# = 1, . = 0), class index in this order:
#
#   0 N    1 I    2 S    3 T
#   #.#    ###    .##    ###
#   ###    .#.    .#.    .#.
#   #.#    ###    ##.    .#.
#
# Each spans the full 3x3 box, so no two placed images coincide.
GLYPHS = {
    "N": ((1, 0, 1), (1, 1, 1), (1, 0, 1)),
    "I": ((1, 1, 1), (0, 1, 0), (1, 1, 1)),
    "S": ((0, 1, 1), (0, 1, 0), (1, 1, 0)),
    "T": ((1, 1, 1), (0, 1, 0), (0, 1, 0)),
}
NIST_SIDE = 7


def _nist7x7(noise: float, seed: int) -> Task:
    side, g = NIST_SIDE, 3
    images, labels = [], []
    for label, glyph in enumerate(GLYPHS.values()):
        for r in range(side - g + 1):
            for c in range(side - g + 1):
                img = np.zeros((side, side))
                img[r:r + g, c:c + g] = glyph
                images.append(img.ravel())
                labels.append(label)
    x = np.array(images)
    if noise > 0:
        flip = np.random.default_rng(seed).random(x.shape) < noise
        x = np.where(flip, 1.0 - x, x)
    labels = np.array(labels)
    ds = _dataset("nist7x7", x, np.eye(len(GLYPHS))[labels], labels,
                  f"nist7x7 noise={noise!r} seed={seed}")
    return Task("nist7x7", ds, ds, side * side, len(GLYPHS))


# ------------------------------------------------------------------ digits

@lru_cache(maxsize=8)
def _digits(test_fraction: float, split_seed: int, classes: int) -> Task:
    """Built once per parameter set; the cached arrays are read-only and
    :func:`make_task` hands out writable copies."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target < classes
    x, labels = d.data[keep] / 16.0, d.target[keep]
    perm = np.random.default_rng(split_seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    eye = np.eye(classes)
    desc = f"sklearn-digits classes={classes} test_fraction={test_fraction!r} split_seed={split_seed}"
    parts = []
    for part, idx in (("train", tr), ("test", te)):
        ds = _dataset(f"digits-{part}", x[idx], eye[labels[idx]], labels[idx], f"{desc} part={part}")
        for a in (ds.inputs, ds.targets, ds.labels):
            a.flags.writeable = False
        parts.append(ds)
    return Task("digits", parts[0], parts[1], 64, classes)


def _random(inputs: int, outputs: int, samples: int, seed: int) -> Task:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(samples, inputs))
    labels = rng.integers(0, max(outputs, 2), size=samples)
    targets = labels[:, None] if outputs == 1 else np.eye(outputs)[labels]
    ds = _dataset("random", x, targets, labels,
                  f"random inputs={inputs} outputs={outputs} samples={samples} seed={seed}")
    return Task("random", ds, ds, inputs, outputs)


def _copy(ds: Dataset) -> Dataset:
    return Dataset(ds.name, ds.inputs.copy(), ds.targets.copy(), ds.labels.copy(), ds.identity)


# -------------------------------------------------------------- make_task

def _check(name: str, key: str, value, spec) -> None:
    typ, _default, allowed, _doc = spec
    if typ is str:
        if not isinstance(value, str) or (allowed is not None and value not in allowed):
            what = f"one of {', '.join(allowed)}" if allowed is not None else "a string"
            raise ValueError(f"task {name}: parameter {key!r} must be {what}, got {value!r}")
        return
    lo, hi = allowed
    if typ is int:
        ok = isinstance(value, numbers.Integral)
        kind = "an integer"
    else:
        ok = isinstance(value, numbers.Real)
        kind = "a number"
    ok = ok and not isinstance(value, (bool, np.bool_)) and bool(lo <= value <= hi)
    if not ok:
        raise ValueError(f"task {name}: parameter {key!r} must be {kind} in [{lo}, {hi}], got {value!r}")


def make_task(name: str, **params) -> Task:
    """Build task ``name`` with ``params`` (see :data:`TASKS`); unknown tasks,
    unknown parameters and values of the wrong type or out of range raise
    ``ValueError`` naming what is allowed."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (allowed: {', '.join(TASKS)})")
    allowed = TASKS[name]
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(f"task {name}: unknown parameter {key!r} "
                             f"(allowed: {', '.join(allowed) or 'none'})")
        _check(name, key, value, allowed[key])
    full = {k: params.get(k, spec[1]) for k, spec in allowed.items()}
    if name == "parity":
        return _parity(int(full["bits"]))
    if name == "nist7x7":
        return _nist7x7(float(full["noise"]), int(full["seed"]))
    if name == "file":
        from .datafile import load_file_task

        t = load_file_task(full)
        return Task(t.name, _copy(t.train), _copy(t.test), t.n_in, t.n_out)
    if name == "random":
        return _random(int(full["inputs"]), int(full["outputs"]), int(full["samples"]), int(full["seed"]))
    t = _digits(float(full["test_fraction"]), int(full["split_seed"]), int(full["classes"]))
    return Task(t.name, _copy(t.train), _copy(t.test), t.n_in, t.n_out)
