"""The `file` task: the user's own data from an NPZ, HDF5 or CSV file.

    [task]
    name = "file"
    path = "data/mnist.npz"     # relative to the working directory
    scale = 0.00392156862745098 # inputs x 1/255: 8-bit pixels into [0, 1]

Layouts (docs/datasets.md has worked conversions):

* NPZ, HDF5: an inputs array (`inputs`, default "x": [n, features], or
  [n, ...] flattened row-major, e.g. [n, 28, 28] images) and a labels array
  (`labels`, default "y"): integer class labels [n] (one-hot outputs, one
  per class), or real targets [n, outputs]. HDF5 names may be paths
  ("train/x"). A test set in the same file under `test_inputs` /
  `test_labels` (default "x_test", "y_test"), or in a second file
  `test_path` of the same layout.
* CSV: one sample per row, numbers only, an optional header row; the label
  in column `label_column` (default 0, negative counts from the end), the
  inputs in the others.

`split` decides the test set: "given" (the file's test arrays or
`test_path`), "seeded" (the first round(test_fraction * n) samples of
`np.random.default_rng(split_seed).permutation(n)`), "none" (test = train),
"auto" (given when the file has a test set, else seeded).

Every problem with the data is a `DataFileError` naming the data file, the
task key to change and what is allowed; the chip loader turns it into its
one-line ChipError. Data are loaded once per process per (file, size, mtime,
parameters).
"""
from __future__ import annotations

import hashlib
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

FORMATS = ("auto", "npz", "hdf5", "csv")
SUFFIXES = {".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5", ".he5": "hdf5", ".csv": "csv", ".txt": "csv"}
SPLITS = ("auto", "given", "seeded", "none")

# name -> (type, default, allowed: (lo, hi), a tuple of choices, or None for any string, doc)
FILE_PARAMS = {
    "path": (str, "", None, "the data file (.npz, .h5/.hdf5, .csv), relative to the working directory"),
    "format": (str, "auto", FORMATS, "the file's format; auto: from its suffix"),
    "inputs": (str, "x", None, "NPZ/HDF5: name of the inputs array, [n, features] or [n, ...] (flattened)"),
    "labels": (str, "y", None, "NPZ/HDF5: name of the labels array: integer labels [n] or targets [n, outputs]"),
    "test_inputs": (str, "x_test", None, "NPZ/HDF5: name of the test inputs, if the file holds a test set"),
    "test_labels": (str, "y_test", None, "NPZ/HDF5: name of the test labels"),
    "test_path": (str, "", None, "a second file (same layout) holding the test set; empty: none"),
    "split": (str, "auto", SPLITS, "test set: given (in the file or test_path), seeded (split off), none (test = "
              "train), auto (given if there is one, else seeded)"),
    "test_fraction": (float, 0.2, (0.01, 0.9), "seeded split: fraction of the samples held out for testing"),
    "split_seed": (int, 0, (0, 2**31 - 1), "seeded split: seed of the permutation"),
    "classes": (int, 0, (0, 65536), "integer labels: number of classes (outputs); 0: the largest label + 1"),
    "label_column": (int, 0, (-65536, 65535), "CSV: the column holding the label (negative: from the end)"),
    "scale": (float, 1.0, (1e-12, 1e12), "every input is multiplied by this (e.g. 1/255 for 8-bit pixels)"),
    "max_train": (int, 0, (0, 2**31 - 1), "use only the first N training samples (0: all)"),
    "max_test": (int, 0, (0, 2**31 - 1), "use only the first N test samples (0: all)"),
    "sha256": (str, "", None, "if set: the data digest (16 hex digits, as `mgd-emu show` prints it); other "
               "data are refused"),
}


class DataFileError(ValueError):
    """A data file that cannot be used: `key` is the task parameter to change."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"task.{key}: {message}")


def load_file_task(params: dict):
    """The Task of a `file` task's parameters (all of FILE_PARAMS), cached."""
    path = _path(params["path"], "path")
    test_path = _path(params["test_path"], "test_path") if params["test_path"] else None
    stamp = tuple(_stamp(p) for p in (path, test_path) if p is not None)
    key = tuple(sorted((k, v) for k, v in params.items()))
    return _load(key, stamp)


def _path(text: str, key: str) -> Path:
    if not text:
        raise DataFileError(key, 'is required for task "file": the data file to learn (.npz, .h5, .hdf5 or .csv)')
    p = Path(os.path.expanduser(text))
    if not p.exists():
        raise DataFileError(key, f"{text}: no such file (relative paths start at the working directory, "
                                 f"{os.getcwd()})")
    if not p.is_file():
        raise DataFileError(key, f"{text}: is not a regular file")
    return p.resolve()


def _stamp(p: Path):
    st = p.stat()
    return (str(p), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _load(key: tuple, stamp: tuple):
    from .tasks import Task, _dataset

    params = dict(key)
    path = Path(stamp[0][0])
    fmt = _format(path, params["format"], "format")
    x, y, x_test, y_test = _read(path, fmt, params, "path", test=True)
    where = params["path"]
    if params["test_path"]:
        tpath = Path(stamp[1][0])
        x_test, y_test, _, _ = _read(tpath, _format(tpath, params["format"], "test_path"), params, "test_path",
                                     test=False)
        where_test = params["test_path"]
    else:
        where_test = where
    split = params["split"]
    has_test = x_test is not None
    if split == "given" and not has_test:
        raise DataFileError("split", f'"given" needs a test set: {where} has no {params["test_inputs"]!r} and '
                                     f'{params["test_labels"]!r} arrays and task.test_path is empty; use split = '
                                     f'"seeded" (or "auto")')
    if split in ("seeded", "none") and has_test:
        x_test = y_test = None   # the file's own test set is not used
    if split == "auto":
        split = "given" if has_test else "seeded"

    x = _inputs(x, where, "inputs", params["scale"])
    if x_test is not None:
        x_test = _inputs(x_test, where_test, "test_inputs", params["scale"])
        if x_test.shape[1] != x.shape[1]:
            raise DataFileError("test_inputs", f"{where_test}: the test inputs have {x_test.shape[1]} features, the "
                                               f"training inputs {x.shape[1]}: they must match")
    if len(y) != len(x):
        raise DataFileError("labels", f"{where}: {len(x)} inputs but {len(y)} labels: one label (or target row) "
                                      f"per sample")
    if y_test is not None and len(y_test) != len(x_test):
        raise DataFileError("test_labels", f"{where_test}: {len(x_test)} test inputs but {len(y_test)} test "
                                           f"labels: one per sample")
    classes = params["classes"]
    parts = [(y, where, "labels")] + ([(y_test, where_test, "test_labels")] if y_test is not None else [])
    if all(np.ndim(a) == 1 for a, _, _ in parts):
        ints = [_labels(a, w, k) for a, w, k in parts]
        top = max(int(a.max()) for a in ints if len(a))
        n_out = classes or top + 1
        if n_out < 2:
            raise DataFileError("classes", f"{where}: every label is 0, so there is only one class; a classifier "
                                           f"needs at least 2 (set task.classes = 2 for a 0/1 task)")
        for a, w, k in zip(ints, [w for _, w, _ in parts], [k for _, _, k in parts]):
            bad = np.flatnonzero(a >= n_out)
            if len(bad):
                raise DataFileError(k, f"{w}: label {int(a[bad[0]])} (sample {int(bad[0])}) is out of range: "
                                       f"task.classes = {n_out} allows labels 0..{n_out - 1}")
        eye = np.eye(n_out)
        data = [(ints[0], eye[ints[0]])] + ([(ints[1], eye[ints[1]])] if len(ints) > 1 else [])
    else:
        data = []
        widths = set()
        for a, w, k in parts:
            t = np.asarray(a)
            if t.ndim != 2 or t.shape[1] < 1:
                raise DataFileError(k, f"{w}: the labels must be integer labels [n] or targets [n, outputs], "
                                       f"got shape {list(t.shape)}")
            t = _finite(t.astype(np.float64), w, k, "targets")
            widths.add(t.shape[1])
            labels = (t[:, 0] > 0.5).astype(np.int64) if t.shape[1] == 1 else np.argmax(t, axis=1)
            data.append((labels, t))
        if len(widths) > 1:
            raise DataFileError("test_labels", f"{where_test}: the test targets have {sorted(widths)} columns; "
                                               f"the training and test targets must have as many")
        if classes:
            raise DataFileError("classes", f"{where}: the labels are targets [n, outputs]: the outputs are their "
                                           f"columns, so task.classes must be 0 (left out)")
        n_out = data[0][1].shape[1]

    labels, targets = data[0]
    if split == "given":
        xt, (lt, tt) = x_test, data[1]
        xr, lr, tr = x, labels, targets
    elif split == "none":
        xr, lr, tr = x, labels, targets
        xt, lt, tt = x, labels, targets
    else:
        n = len(x)
        n_test = int(round(params["test_fraction"] * n))
        if n_test < 1 or n_test >= n:
            raise DataFileError("test_fraction", f"{where}: {params['test_fraction']!r} of {n} samples leaves "
                                                 f"{n_test} for testing and {n - n_test} for training; each needs "
                                                 f"at least one")
        perm = np.random.default_rng(params["split_seed"]).permutation(n)
        te, tr_i = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        xr, lr, tr = x[tr_i], labels[tr_i], targets[tr_i]
        xt, lt, tt = x[te], labels[te], targets[te]
    if params["max_train"]:
        xr, lr, tr = xr[:params["max_train"]], lr[:params["max_train"]], tr[:params["max_train"]]
    if params["max_test"]:
        xt, lt, tt = xt[:params["max_test"]], lt[:params["max_test"]], tt[:params["max_test"]]
    if len(xr) == 0:
        raise DataFileError("path", f"{where}: no training samples")
    digest = data_digest(xr, tr, xt, tt)
    if params["sha256"] and params["sha256"] != digest:
        raise DataFileError("sha256", f"{where}: the data's digest is {digest}, the chip expects "
                                      f"{params['sha256']}: the file (or a task parameter that selects the data) "
                                      f"changed; set task.sha256 = \"{digest}\" if the new data are intended")
    desc = f"file {where}" + (f" test_path={params['test_path']}" if params["test_path"] else "") + \
        f" split={split} scale={params['scale']!r} data={digest}"
    train = _dataset("file-train", xr, tr, lr, f"{desc} part=train")
    test = _dataset("file-test", xt, tt, lt, f"{desc} part=test")
    for ds in (train, test):
        for a in (ds.inputs, ds.targets, ds.labels):
            a.flags.writeable = False
    task = Task("file", train, test, xr.shape[1], n_out)
    return _FileTask(task, digest)


class _FileTask:
    """A loaded file task and its data digest."""

    def __init__(self, task, digest):
        self.task, self.digest = task, digest
        self.name, self.train, self.test = task.name, task.train, task.test
        self.n_in, self.n_out = task.n_in, task.n_out


def data_digest(*arrays) -> str:
    """First 16 hex digits of sha256 over the float64 bytes of train inputs,
    train targets, test inputs, test targets."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _format(path: Path, given: str, key: str) -> str:
    if given != "auto":
        return given
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(key, f"{path.name}: cannot tell the format from the suffix {path.suffix!r} "
                                 f"(known: {', '.join(SUFFIXES)}); set task.format to npz, hdf5 or csv")
    return fmt


def _read(path: Path, fmt: str, params: dict, key: str, test: bool):
    """(x, y, x_test or None, y_test or None) as stored (not yet checked).
    Messages name the file as the chip does (params[key])."""
    shown = params[key]
    names = (params["inputs"], params["labels"], params["test_inputs"], params["test_labels"])
    if fmt == "csv":
        return (*_read_csv(path, shown, params["label_column"], key), None, None)
    if fmt == "npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {n: z[n] for n in names if n in z.files}
                stored = list(z.files)
        except ValueError as exc:
            raise DataFileError(key, f"{shown}: cannot read it as NPZ ({_line(exc)}); object arrays (pickles) "
                                     f"are refused: save plain numeric arrays") from None
        except (OSError, EOFError) as exc:
            raise DataFileError(key, f"{shown}: is not a readable NPZ file ({_line(exc)})") from None
    else:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                arrays = {}
                for n in names:
                    if n in f and isinstance(f[n], h5py.Dataset):
                        arrays[n] = f[n][()]
                stored = []
                f.visititems(lambda name, obj: stored.append(name) if isinstance(obj, h5py.Dataset) else None)
        except OSError as exc:
            raise DataFileError(key, f"{shown}: is not a readable HDF5 file ({_line(exc)})") from None
    for n, which in zip(names[:2], ("inputs", "labels")):
        if n not in arrays:
            raise DataFileError(which, f"{shown}: has no array {n!r} (it holds: {', '.join(stored) or 'nothing'}); "
                                       f"set task.{which} to the name of the {which} array")
    if test and (names[2] in arrays) != (names[3] in arrays):
        have, miss = (names[2], names[3]) if names[2] in arrays else (names[3], names[2])
        raise DataFileError("test_labels" if miss == names[3] else "test_inputs",
                            f"{shown}: has {have!r} but no {miss!r}: a test set needs both")
    return (arrays[names[0]], arrays[names[1]], arrays.get(names[2]) if test else None,
            arrays.get(names[3]) if test else None)


def _read_csv(path: Path, shown: str, label_column: int, key: str):
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(key, f"{shown}: cannot be read as text ({_line(exc)})") from None
    skip = 0
    try:
        [float(v) for v in first.strip().split(",") if v.strip()]
    except ValueError:
        skip = 1   # a header row
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise DataFileError(key, f"{shown}: is not a CSV table of numbers ({_line(exc)})") from None
    if table.shape[0] == 0:
        raise DataFileError(key, f"{shown}: has no rows")
    cols = table.shape[1]
    if not -cols <= label_column < cols or cols < 2:
        raise DataFileError("label_column", f"{shown}: has {cols} columns, so the label column must be in "
                                            f"{-cols}..{cols - 1} and at least one other column is an input; "
                                            f"got {label_column}")
    c = label_column % cols
    return np.delete(table, c, axis=1), table[:, c]


def _inputs(x, where: str, key: str, scale: float) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataFileError(key, f"{where}: the inputs must be numbers, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0 or math.prod(x.shape[1:]) == 0:
        raise DataFileError(key, f"{where}: the inputs must be [n, features] or [n, ...] with n >= 1, got shape "
                                 f"{list(x.shape)}")
    x = x.reshape(x.shape[0], -1).astype(np.float64) * scale
    return _finite(x, where, key, "inputs")


def _finite(a: np.ndarray, where: str, key: str, what: str) -> np.ndarray:
    bad = ~np.isfinite(a)
    if bad.any():
        n, row = int(bad.sum()), int(np.argwhere(bad)[0][0])
        raise DataFileError(key, f"{where}: the {what} hold {n} NaN or infinite value(s), the first in sample "
                                 f"{row}; remove or impute them")
    return a


def _labels(a, where: str, key: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise DataFileError(key, f"{where}: the labels must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        _finite(a, where, key, "labels")
        if not np.all(a == np.round(a)):
            i = int(np.flatnonzero(a != np.round(a))[0])
            raise DataFileError(key, f"{where}: label {a[i]!r} (sample {i}) is not an integer: labels are class "
                                     f"indices 0..classes-1 (real-valued targets are [n, outputs])")
    if len(a) and a.min() < 0:
        i = int(np.argmin(a))
        raise DataFileError(key, f"{where}: label {int(a[i])} (sample {i}) is negative: labels are class indices "
                                 f"0..classes-1")
    return a.astype(np.int64)


def check_input_range(chip) -> None:
    """Refuse inputs the chip's input format cannot hold (fixed point only)."""
    fmt = chip.formats.input
    if not fmt.is_fixed:
        return
    params = chip.task_params()
    t = load_file_task({**{k: v[1] for k, v in FILE_PARAMS.items()}, **params})
    lo = min(float(t.train.inputs.min()), float(t.test.inputs.min()))
    hi = max(float(t.train.inputs.max()), float(t.test.inputs.max()))
    if lo >= fmt.min_value and hi <= fmt.max_value:
        return
    span = max(abs(lo), abs(hi))
    fit = (fmt.max_value / span) * params.get("scale", 1.0) if span else 1.0
    how = (f"set task.scale = {fit:.6g} (or less) to bring them into range, or rescale the data"
           if lo >= 0 or fmt.signed else
           "shift the data to be non-negative (the input format is unsigned), or make formats.input signed")
    raise DataFileError("scale", f"{params['path']}: the inputs (times task.scale = {params.get('scale', 1.0)!r}) "
                                 f"span [{lo:.6g}, {hi:.6g}], outside formats.input ({fmt.describe()}: "
                                 f"[{fmt.min_value:.6g}, {fmt.max_value:.6g}]); {how}")


def _line(exc) -> str:
    return " ".join(str(exc).split())
