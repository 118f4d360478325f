"""Datasets the chips learn: N-bit parity, NIST7x7 letters, 8x8 digits."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    inputs: np.ndarray   # float64 [n, n_in] in [0, 1]
    targets: np.ndarray  # float64 [n, n_out]
    labels: np.ndarray   # int64 [n]
    identity: str        # identifies the data exactly (with a sha256 prefix)


@dataclass(frozen=True)
class Task:
    name: str
    train: Dataset
    test: Dataset
    n_in: int
    n_out: int

    def accuracy(self, outputs: np.ndarray, dataset: Dataset) -> float:
        """1 output: (y > 0.5) == (y* > 0.5); several: argmax(y) == label."""
        outputs = np.asarray(outputs, dtype=float).reshape(len(dataset.labels), -1)
        if outputs.shape[1] == 1:
            hit = (outputs[:, 0] > 0.5) == (dataset.targets[:, 0] > 0.5)
        else:
            hit = np.argmax(outputs, axis=1) == dataset.labels
        return float(np.mean(hit))


def _dataset(name, inputs, targets, labels, describe) -> Dataset:
    inputs = np.ascontiguousarray(inputs, dtype=np.float64)
    targets = np.ascontiguousarray(targets, dtype=np.float64)
    digest = hashlib.sha256(inputs.tobytes() + targets.tobytes()).hexdigest()[:16]
    return Dataset(name, inputs, targets, np.asarray(labels, dtype=np.int64),
                   f"{describe} n={len(inputs)} sha256:{digest}")


# name -> {param: (type, default, allowed (lo, hi) or choices, doc)}
TASKS = {
    "parity": {"bits": (int, 2, (2, 10), "input bits; 2-bit parity is XOR")},
    "nist7x7": {"noise": (float, 0.0, (0.0, 0.5), "probability of flipping each pixel (fixed at build)"),
                "seed": (int, 0, (0, 2**31 - 1), "seed of the pixel noise")},
    "digits": {"test_fraction": (float, 0.2, (0.05, 0.5), "fraction held out as the test set"),
               "split_seed": (int, 0, (0, 2**31 - 1), "seed of the train/test split"),
               "classes": (int, 10, (2, 10), "keep the digits 0..classes-1")},
}


def _parity(bits: int) -> Task:
    n = 1 << bits
    x = np.array([[(i >> (bits - 1 - b)) & 1 for b in range(bits)] for i in range(n)], dtype=float)
    labels = x.sum(axis=1).astype(np.int64) % 2
    ds = _dataset(f"parity{bits}", x, labels[:, None].astype(float), labels, f"parity bits={bits}")
    return Task(f"parity{bits}", ds, ds, bits, 1)


# The four 3x3 letters of NIST7x7 (# = 1):
#   N: #.#   I: ###   S: .##   T: ###
#      ###      .#.      .#.      .#.
#      #.#      ###      ##.      .#.
GLYPHS = {
    "N": [[1, 0, 1], [1, 1, 1], [1, 0, 1]],
    "I": [[1, 1, 1], [0, 1, 0], [1, 1, 1]],
    "S": [[0, 1, 1], [0, 1, 0], [1, 1, 0]],
    "T": [[1, 1, 1], [0, 1, 0], [0, 1, 0]],
}


def _nist7x7(noise: float, seed: int) -> Task:
    images, labels = [], []
    for label, glyph in enumerate(GLYPHS.values()):
        for r in range(5):
            for c in range(5):
                img = np.zeros((7, 7))
                img[r:r + 3, c:c + 3] = glyph
                images.append(img.ravel())
                labels.append(label)
    x = np.array(images)
    if noise > 0:
        flip = np.random.default_rng(seed).random(x.shape) < noise
        x = np.where(flip, 1.0 - x, x)
    labels = np.array(labels)
    ds = _dataset("nist7x7", x, np.eye(4)[labels], labels, f"nist7x7 noise={noise} seed={seed}")
    return Task("nist7x7", ds, ds, 49, 4)


@lru_cache(maxsize=8)
def _digits(test_fraction: float, split_seed: int, classes: int) -> Task:
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target < classes
    x, labels = d.data[keep] / 16.0, d.target[keep]
    perm = np.random.default_rng(split_seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = perm[:n_test], perm[n_test:]
    eye = np.eye(classes)
    desc = f"sklearn digits classes={classes} test_fraction={test_fraction} split_seed={split_seed}"
    train = _dataset("digits-train", x[tr], eye[labels[tr]], labels[tr], desc + " part=train")
    test = _dataset("digits-test", x[te], eye[labels[te]], labels[te], desc + " part=test")
    return Task("digits", train, test, 64, classes)


def make_task(name: str, **params) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (allowed: {', '.join(TASKS)})")
    allowed = TASKS[name]
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(f"task {name}: unknown parameter {key!r} (allowed: {', '.join(allowed) or 'none'})")
        typ, _, (lo, hi), _ = allowed[key]
        if isinstance(value, bool) or not isinstance(value, (int, float) if typ is float else typ) or not lo <= value <= hi:
            raise ValueError(f"task {name}: {key} must be in [{lo}, {hi}], got {value!r}")
    full = {k: params.get(k, spec[1]) for k, spec in allowed.items()}
    if name == "parity":
        return _parity(full["bits"])
    if name == "nist7x7":
        return _nist7x7(float(full["noise"]), full["seed"])
    return _digits(float(full["test_fraction"]), full["split_seed"], full["classes"])
