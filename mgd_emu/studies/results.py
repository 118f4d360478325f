"""Study results as one self-describing xarray Dataset, written as netCDF
(h5netcdf: an HDF5 file readable with h5py) and as a flat CSV table.

Dimensions: one per grid key (named by the key) and per zip group (named by
the group, with one coordinate per zipped key), then `seed`, `evaluation`
(coordinate `cycle`), `target` and `register`. A run with no result (failed,
or not run yet) is NaN, with its `status` and `error` saying why.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..spec import toml_literal
from .runner import JOURNAL, RESULTS_CSV, RESULTS_NC, read_journal, reached_cycle, run_id
from .spec import Study, StudyError

FORMAT = "mgd-emu-study-results"
FORMAT_VERSION = 1

PER_RUN = {  # name: (meaning, units)
    "final_accuracy": ("test accuracy at the last evaluation", "1"),
    "final_cost": ("test cost at the last evaluation", "1"),
    "cycles_run": ("clock cycles the run ran (the cap, or fewer when it stopped at stop_at)", "cycles"),
    "chip_time_s": ("cycles_run in chip time at the chip's clock", "s"),
    "wall_s": ("wall time of the run's cycles and evaluations (compilation excluded)", "s"),
    "startup_s": ("wall time building the emulator and loading its kernels", "s"),
    "cycles_per_s": ("emulated cycles per wall-clock second", "1/s"),
}


def _coord(values):
    """A coordinate array: numbers and booleans as such, anything else
    (lists such as network.layers, tables, mixed types) as its TOML text."""
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.float64)
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=object)
    return np.array([toml_literal(v) for v in values], dtype=object)


def to_dataset(study: Study, records: dict):
    """The Dataset of a study from its run records (by run id); runs with no
    record are "missing"."""
    import xarray as xr

    dims = [d.name for d in study.dimensions]
    shape = study.shape
    n_seed, evals, targets = len(study.seeds), study.eval_cycles(), study.targets
    registers: list[str] = []
    for rec in records.values():
        for name in rec.get("events") or {}:
            if name not in registers:
                registers.append(name)
    run_shape = (*shape, n_seed)
    nan = lambda *extra: np.full((*run_shape, *extra), np.nan)
    acc, cost = nan(len(evals)), nan(len(evals))
    to_target, time_to_target = nan(len(targets)), nan(len(targets))
    per_run = {name: nan() for name in PER_RUN}
    sat, wrap = nan(len(registers)), nan(len(registers))
    status = np.full(run_shape, "missing", dtype=object)
    error = np.full(run_shape, "", dtype=object)
    ids = np.full(run_shape, "", dtype=object)
    worker = np.full(run_shape, "", dtype=object)
    warning = np.full(run_shape, "", dtype=object)
    n_params = np.full(shape, -1, dtype=np.int64)
    hashes = np.full(shape, "", dtype=object)
    eval_index = {c: i for i, c in enumerate(evals)}
    for point in study.points():
        for k, seed in enumerate(study.seeds):
            at = (*point.index, k)
            rid = run_id(study, point, seed)
            ids[at] = rid
            rec = records.get(rid)
            if rec is None:
                continue
            status[at] = rec["status"]
            warning[at] = rec.get("saturation_warning") or ""
            error[at] = rec.get("error") or ""
            worker[at] = rec.get("worker") or ""
            if rec["status"] != "ok":
                continue
            n_params[point.index] = rec["n_parameters"]
            hashes[point.index] = rec["chip_hash"]
            for c, a, q in zip(rec["eval_cycles"], rec["accuracy"], rec["cost"]):
                i = eval_index[c]
                acc[(*at, i)] = a
                cost[(*at, i)] = q
            for j, t in enumerate(targets):
                r = reached_cycle(rec["eval_cycles"], rec["accuracy"], t)
                if r is not None:
                    to_target[(*at, j)] = r
                    time_to_target[(*at, j)] = r / rec["clock_hz"]
            per_run["final_accuracy"][at] = rec["final_accuracy"]
            per_run["final_cost"][at] = rec["final_cost"]
            per_run["cycles_run"][at] = rec["cycles"]
            for name in ("chip_time_s", "wall_s", "startup_s", "cycles_per_s"):
                v = rec.get(name)
                per_run[name][at] = np.nan if v is None else v
            for r, name in enumerate(registers):
                s, w = rec["events"].get(name, (np.nan, np.nan))
                sat[(*at, r)], wrap[(*at, r)] = s, w

    run_dims = (*dims, "seed")
    data = {
        "accuracy": ((*run_dims, "evaluation"), acc, {"long_name": "test accuracy at each evaluation", "units": "1"}),
        "cost": ((*run_dims, "evaluation"), cost, {"long_name": "test cost at each evaluation", "units": "1"}),
        "cycles_to_target": ((*run_dims, "target"), to_target,
                             {"long_name": "first evaluated cycle with test accuracy >= target; NaN: not reached "
                              "(or no result)", "units": "cycles"}),
        "chip_time_to_target": ((*run_dims, "target"), time_to_target,
                                {"long_name": "cycles_to_target in chip time", "units": "s"}),
        "saturations": ((*run_dims, "register"), sat, {"long_name": "saturation events per register", "units": "1"}),
        "wraps": ((*run_dims, "register"), wrap, {"long_name": "wrap-around events per register", "units": "1"}),
        "status": (run_dims, status.astype(str), {"long_name": "ok, failed, or missing (not run yet)"}),
        "error": (run_dims, error.astype(str), {"long_name": "why a run failed, one line"}),
        "run_id": (run_dims, ids.astype(str), {"long_name": "the run's id in the journal"}),
        "worker": (run_dims, worker.astype(str), {"long_name": "host:pid that ran it"}),
        "saturation_warning": (run_dims, warning.astype(str),
                               {"long_name": "registers saturating in >= 5 % of their writes, one line; empty: none"}),
        "n_parameters": (tuple(dims), n_params, {"long_name": "trainable parameters of the point's chip; "
                                                 "-1: no run of it succeeded"}),
        "chip_hash": (tuple(dims), hashes.astype(str), {"long_name": "sha256 (first 16 hex) of the point's "
                                                        "resolved chip description"}),
    }
    for name, (meaning, units) in PER_RUN.items():
        data[name] = (run_dims, per_run[name], {"long_name": meaning, "units": units})
    coords = {"seed": ("seed", np.array(study.seeds, dtype=np.int64)),
              "cycle": ("evaluation", np.array(evals, dtype=np.int64), {"long_name": "cycle of each evaluation"}),
              "target": ("target", np.array(targets, dtype=np.float64)),
              "register": ("register", np.array(registers, dtype=object).astype(str))}
    for d in study.dimensions:
        if d.is_zip:
            coords[d.name] = (d.name, np.arange(len(d), dtype=np.int64),
                              {"long_name": f"zip group of {', '.join(d.keys)}"})
            for j, key in enumerate(d.keys):
                coords[key] = (d.name, _coord([row[j] for row in d.values]), {"long_name": f"chip key {key}"})
        else:
            coords[d.name] = (d.name, _coord([row[0] for row in d.values]), {"long_name": f"chip key {d.name}"})
    ds = xr.Dataset({k: xr.Variable(*v) for k, v in data.items()},
                    coords={k: xr.Variable(*v) for k, v in coords.items()})
    n_ok = int((status == "ok").sum())
    n_failed = int((status == "failed").sum())
    ds.attrs.update({
        "format": FORMAT, "format_version": FORMAT_VERSION, "mgd_emu_version": __version__,
        "study_name": study.name, "study_source": study.source, "description": study.description,
        "study": json.dumps(study.to_dict()), "base_chip": study.chip.to_toml(),
        "grid_dimensions": json.dumps(dims), "set": json.dumps(study.set),
        "cycles_cap": study.cycles, "eval_every": study.eval_every,
        "stop_at": -1.0 if study.stop_at is None else study.stop_at,
        "runs": study.n_runs, "runs_ok": n_ok, "runs_failed": n_failed,
        "runs_missing": study.n_runs - n_ok - n_failed, "complete": int(n_ok + n_failed == study.n_runs),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return ds


def write_results(ds, out) -> list[Path]:
    """DIR/results.nc and DIR/results.csv, each written beside and renamed
    into place by safe_io.output: a reader never sees half a file, and a
    write that fails (a full disk) leaves nothing behind. Both are written
    before either is renamed, so that a failure does not leave one new file
    beside the other of an older collection.

    The netCDF file is built in memory and written as bytes: HDF5 writing
    straight to a full disk fails again at every later flush and close, and
    the process crashed on exit (measured on a full tmpfs)."""
    import dask

    from ..safe_io import output

    out = Path(out)
    nc, table = out / RESULTS_NC, out / RESULTS_CSV
    # numpy arrays, nothing for dask to compute. With a client of a scheduler
    # in another process active, xarray asks that scheduler for a lock named
    # after the target, which an in-memory target cannot give ("Semaphore or
    # Lock ... not known"); the synchronous scheduler takes a local lock.
    with dask.config.set(scheduler="synchronous"):
        image = ds.to_netcdf(engine="h5netcdf")
    with output(nc, mode="wb") as f_nc, output(table, mode="w", newline="") as f_csv:
        f_nc.write(image)
        write_csv(ds, f_csv)
    return [nc, table]


def write_csv(ds, f) -> None:
    """One row per run: grid values, seed, status, results, error."""
    study = json.loads(ds.attrs["study"])
    keys = [k for d in study["dimensions"] for k in d["keys"]]
    targets = [float(t) for t in ds["target"].values]
    w = csv.writer(f)
    w.writerow([*keys, "seed", "status", "n_parameters", "final_accuracy", "final_cost", "cycles_run",
                "chip_time_s", *(f"cycles_to_{t:g}" for t in targets), "wall_s", "cycles_per_s",
                "saturations", "wraps", "run_id", "error", "saturation_warning"])
    dims = [d["name"] for d in study["dimensions"]]
    v = {name: ds[name].values for name in ("status", "error", "run_id", "saturation_warning", "final_accuracy",
                                            "final_cost", "cycles_run", "chip_time_s", "wall_s", "cycles_per_s",
                                            "cycles_to_target", "n_parameters")}
    sat, wrap = ds["saturations"].values.sum(axis=-1), ds["wraps"].values.sum(axis=-1)
    seeds = ds["seed"].values
    for idx in np.ndindex(*(ds.sizes[d] for d in dims), ds.sizes["seed"]):
        values = []
        for d, i in zip(study["dimensions"], idx):
            values += [toml_literal(x) for x in d["values"][i]]
        ok = v["status"][idx] == "ok"
        num = lambda name: _cell(float(v[name][idx]))
        w.writerow([*values, int(seeds[idx[-1]]), v["status"][idx], int(v["n_parameters"][idx[:-1]]) if ok else "",
                    num("final_accuracy"), num("final_cost"), num("cycles_run"), num("chip_time_s"),
                    *(_cell(float(c)) for c in v["cycles_to_target"][idx]), num("wall_s"), num("cycles_per_s"),
                    _cell(float(sat[idx])) if ok else "", _cell(float(wrap[idx])) if ok else "",
                    v["run_id"][idx], v["error"][idx], v["saturation_warning"][idx]])


def _cell(v):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return repr(v) if isinstance(v, float) else v


def collect(out) -> "object":
    """The Dataset of a study folder from its journal (finished or not), as
    the last session that ran it described the study."""
    headers, records = read_journal(Path(out) / JOURNAL)
    study = Study.from_dict(headers[-1]["study"])
    mine = {run_id(study, p, s) for p in study.points() for s in study.seeds}
    return to_dataset(study, {i: r for i, r in records.items() if i in mine})


def open_results(path):
    """A results Dataset: a results.nc file, or a study folder (its
    results.nc, or collected from its journal when there is none or the
    journal is newer: a study resumed and still running)."""
    import xarray as xr

    path = Path(path)
    if path.is_dir():
        nc, journal = path / RESULTS_NC, path / JOURNAL
        if journal.exists() and (not nc.exists() or journal.stat().st_mtime > nc.stat().st_mtime):
            return collect(path)
        if nc.exists():
            path = nc
        else:
            raise StudyError(str(path), "", f"is not a study folder (no {RESULTS_NC} or {JOURNAL})")
    elif path.name == JOURNAL:
        return collect(path.parent)
    if not path.exists():
        raise StudyError(str(path), "", "no such file")
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as exc:
        raise StudyError(str(path), "", f"is not a study results file ({' '.join(str(exc).split())})") from None
    if ds.attrs.get("format") != FORMAT:
        raise StudyError(str(path), "", "is not a study results file (no format attribute "
                         f"{FORMAT!r}; traces are plotted the same way)")
    return ds


def is_results(path) -> bool:
    """Whether `path` is a study results file or folder (rather than a trace)."""
    path = Path(path)
    if path.is_dir():
        return (path / RESULTS_NC).exists() or (path / JOURNAL).exists()
    if path.name == JOURNAL or path.suffix == ".nc":
        return True
    if path.suffix in (".h5", ".hdf5") or not path.is_file():
        return False
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return f.attrs.get("format") in (FORMAT, FORMAT.encode())
    except OSError:
        return False
