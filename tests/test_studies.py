"""Design-space studies: the study file, the grid, the journal and resume, the
results Dataset, the plots, and runs on a real dask LocalCluster of two
worker processes (bit-identical to serial, a killed worker, an interrupted
and resumed study, a failing grid point)."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mgd_emu.cli import split_values
from mgd_emu.engine import Emulator
from mgd_emu.studies import StudyError, collect, load_study, loads_study, open_results, read_journal, run_study
from mgd_emu.studies.plot import fit_slope, plot_results, summarize
from mgd_emu.studies.runner import JOURNAL, _Bar

ROOT = Path(__file__).resolve().parents[1]
MGD = [sys.executable, "-m", "mgd_emu.cli"]

# Variables that must agree bit for bit between two executions of one study
# (timings and the worker that ran a run may differ).
RESULTS = ["accuracy", "cost", "cycles_to_target", "chip_time_to_target", "saturations", "wraps", "status",
           "error", "run_id", "n_parameters", "chip_hash", "final_accuracy", "final_cost", "cycles_run",
           "chip_time_s"]


def study_text(cycles=4_000, every=1_000, seeds=(0, 1), grid='"timing.tau_theta" = [1, 2]', extra="",
               chip="xor_8bit"):
    return (f'[study]\nchip = "{chip}"\nseeds = {list(seeds)}\ncycles = {cycles}\neval_every = {every}\n'
            f"targets = [0.75, 1.0]\n{extra}\n[grid]\n{grid}\n")


def write(tmp_path, text, name="s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def same_results(a, b) -> None:
    for name in RESULTS:
        xr.testing.assert_identical(a[name], b[name])


# ----------------------------------------------------------------- the file


def test_a_base_chip_refused_for_its_own_key_is_not_blamed_on_a_set_override(tmp_path):
    chip = tmp_path / "c.toml"
    chip.write_text('[network]\nlayers = [2, 2, 2]\n[task]\nname = "file"\npath = "nowhere.csv"\n')
    text = study_text(chip=str(chip)) + '[set]\n"optimizer.learning_rate" = 0.01\n'
    with pytest.raises(StudyError) as info:
        loads_study(text, "s.toml", {"set.optimizer.learning_rate": 0.02})
    said = str(info.value)
    assert said.startswith("s.toml: study.chip: the base chip is refused: ") and "task.path" in said, said
    with pytest.raises(StudyError, match=r"^--set set\.optimizer\.learning_rate=-1\.0: "):
        loads_study(study_text(), "s.toml", {"set.optimizer.learning_rate": -1.0})

def test_a_grid_is_every_combination_and_a_zip_group_one_dimension(tmp_path):
    text = study_text(grid='"formats.weight.frac_bits" = [4, 5, 6]\n"timing.tau_theta" = [1, 4]',
                      extra="") + ('[zip.width]\n"network.layers" = [[2, 2, 1], [2, 4, 1]]\n'
                                   '"optimizer.learning_rate" = [0.05, 0.1]\n')
    study = loads_study(text, "s.toml")
    assert study.shape == (3, 2, 2) and study.n_runs == 24
    assert [d.name for d in study.dimensions] == ["formats.weight.frac_bits", "timing.tau_theta", "width"]
    points = study.points()
    assert len(points) == 12 and points[0].index == (0, 0, 0) and points[-1].index == (2, 1, 1)
    assert points[1].values == {"formats.weight.frac_bits": 4, "timing.tau_theta": 1,
                                "network.layers": [2, 4, 1], "optimizer.learning_rate": 0.1}
    chip = study.point_chip(points[1])
    assert chip.layer_sizes == (2, 4, 1) and chip.optimizer.learning_rate == 0.1 and chip.timing.tau_theta == 1
    assert study.eval_cycles() == [1_000, 2_000, 3_000, 4_000]


def test_nested_and_quoted_chip_keys_are_the_same_key():
    a = loads_study(study_text(grid='"timing.tau_theta" = [1, 2]'), "s.toml")
    b = loads_study(study_text(grid="timing.tau_theta = [1, 2]"), "s.toml")
    assert a.dimensions == b.dimensions
    # nested keys of a format set those keys; a quoted format table replaces the whole format
    nested = loads_study(study_text(extra="[set]\nformats.weight.frac_bits = 4\nformats.weight.int_bits = 3"),
                         "s.toml")
    quoted = loads_study(study_text(extra='[set]\n"formats.weight.frac_bits" = 4\n"formats.weight.int_bits" = 3'),
                         "s.toml")
    assert nested.chip.to_toml() == quoted.chip.to_toml() and nested.chip.formats.weight.rounding == "stochastic"
    whole = loads_study(study_text(extra='[set]\n"formats.weight" = { kind = "fixed", int_bits = 3, '
                                   'frac_bits = 4 }'), "s.toml")
    assert whole.chip.formats.weight.rounding == "nearest-even"
    # unquoted, a table that names its kind is a whole format, as in a chip file
    unquoted = loads_study(study_text(extra='[set]\nformats.weight = { kind = "fixed", int_bits = 3, '
                                      'frac_bits = 4 }'), "s.toml")
    assert unquoted.chip.to_toml() == whole.chip.to_toml()
    # a key after its whole table is applied inside it
    inside = loads_study(study_text(extra='[set]\n"formats.weight" = { kind = "fixed", int_bits = 3, '
                                    'frac_bits = 4 }\n"formats.weight.frac_bits" = 5'), "s.toml")
    assert inside.chip.formats.weight.frac_bits == 5 and inside.chip.formats.weight.rounding == "nearest-even"


def test_a_key_varied_inside_a_table_that_set_gives_whole_leaves_the_grid_values_as_written():
    study = loads_study(study_text(grid='"formats.weight.frac_bits" = [4, 5]',
                                   extra='[set]\n"formats.weight" = { kind = "fixed", int_bits = 2, frac_bits = 5 }'),
                        "s.toml")
    chips = [study.point_chip(p) for p in study.points()]
    assert [c.formats.weight.frac_bits for c in chips] == [4, 5]
    assert [p.values for p in study.points()] == [{"formats.weight.frac_bits": 4}, {"formats.weight.frac_bits": 5}]
    assert study.set == {"formats.weight": {"kind": "fixed", "int_bits": 2, "frac_bits": 5}}


def test_the_last_evaluation_is_at_the_cap_when_eval_every_does_not_divide_it():
    assert loads_study(study_text(cycles=2_500, every=1_000), "s.toml").eval_cycles() == [1_000, 2_000, 2_500]


@pytest.mark.parametrize("change, where", [
    (("[study]", "[stduy]"), "s.toml: stduy: unknown section; did you mean 'study'?"),
    (("eval_every", "eval_evry"), "s.toml: study.eval_evry: unknown key; did you mean 'eval_every'?"),
    (("seeds = [0, 1]", "seeds = []"), "s.toml: study.seeds: must be a non-empty list"),
    (("seeds = [0, 1]", "seeds = [0, 0]"), "s.toml: study.seeds: has a seed twice"),
    (("seeds = [0, 1]", "seeds = [-1]"), "s.toml: study.seeds: must be a non-empty list of integers"),
    (("cycles = 4000", "cycles = 0"), "s.toml: study.cycles: must be a positive integer, got 0"),
    (("eval_every = 1000", "eval_every = 5000"), "s.toml: study.eval_every: must be at most study.cycles"),
    (("targets = [0.75, 1.0]", "targets = [1.5]"),
     "s.toml: study.targets: must be a non-empty list of test accuracies"),
    (("targets = [0.75, 1.0]", "targets = []"), "s.toml: study.targets: must be a non-empty list of test accuracies"),
    (("cycles = 4000", "cycles = 4000.5"), "s.toml: study.cycles: must be a positive integer, got 4000.5"),
    (("[grid]", "grid = 3\n[x]"), "s.toml: x: unknown section"),
    (("[grid]", '[study.extra]\n[grid]'), "s.toml: study.extra: unknown key"),
    (("targets = [0.75, 1.0]", "stop_at = 2"), "s.toml: study.stop_at: must be a test accuracy in [0, 1]"),
    (('chip = "xor_8bit"', 'chip = "no_such_chip"'), "s.toml: study.chip: the base chip is refused: "),
    (('"timing.tau_theta" = [1, 2]', '"timing.tau_thta" = [1, 2]'),
     "s.toml: grid.timing.tau_thta: unknown key of [timing]; did you mean 'tau_theta'?"),
    (('"timing.tau_theta" = [1, 2]', '"formats.wieght.frac_bits" = [1, 2]'),
     "s.toml: grid.formats.wieght.frac_bits: unknown number format class; did you mean 'weight'?"),
    (('"timing.tau_theta" = [1, 2]', '"timing.tau_theta" = 4'),
     "s.toml: grid.timing.tau_theta: must be a non-empty list"),
    (('"timing.tau_theta" = [1, 2]', '"timing.tau_theta" = [1, 1]'),
     "s.toml: grid.timing.tau_theta: has a value twice"),
    (("[grid]", '[set]\n"timing.tau_theta" = 2\n[grid]'), "s.toml: grid.timing.tau_theta: is also in [set]"),
    (("[grid]", '[zip.w]\n"network.layers" = [[2, 2, 1], [2, 4, 1]]\n"optimizer.learning_rate" = [0.1]\n[grid]'),
     "s.toml: zip.w.optimizer.learning_rate: has 1 values; the other keys of [zip.w] have 2"),
    (("[grid]", "[zip]\nw = 3\n[grid]"), "s.toml: zip.w: must be a table of chip keys"),
    (("cycles = 4000", "cycles = 4000\n[set]\nfoo = 1"), "s.toml: set.foo: not a dotted chip key"),
    (('"timing.tau_theta" = [1, 2]', 'timing.tau_theta = [1, 2]\n"timing.tau_theta" = [3]'),
     "s.toml: grid.timing.tau_theta: is given twice (quoted and nested?)"),
    (("[grid]", '[set]\ntiming.tau_theta = 2\n"timing.tau_theta" = 4\n[grid]'),
     "s.toml: set.timing.tau_theta: is given twice"),
    (('"timing.tau_theta" = [1, 2]', '"formats.weight" = [{ kind = "float" }, { kind = "fixed", int_bits = 2, '
      'frac_bits = 5 }]\n"formats.weight.frac_bits" = [4, 5]'),
     "s.toml: grid.formats.weight.frac_bits: and formats.weight in [grid] both vary one table"),
    (("[grid]", '[set]\n"formats.weight.frac_bits" = 4\n[grid]\n"formats.weight" = [{ kind = "float" }]'),
     "s.toml: grid.formats.weight: varies the whole table, which would undo formats.weight.frac_bits in [set]"),
    (("[grid]", '[zip.accuracy]\n"network.layers" = [[2, 2, 1], [2, 4, 1]]\n[grid]'),
     "s.toml: zip.accuracy: this group name is taken"),
    (("[grid]", '[zip."a/b"]\n"network.layers" = [[2, 2, 1], [2, 4, 1]]\n[grid]'),
     "s.toml: zip.a/b: a group name is a word"),
    (("[grid]", '[zip.""]\n"network.layers" = [[2, 2, 1], [2, 4, 1]]\n[grid]'), "s.toml: zip.: a group name is a word"),
    (("[grid]", '[set]\n"formats.weight.frac_bits" = 3\n"formats.weight" = { kind = "float" }\n[grid]'),
     "s.toml: set.formats.weight: sets the whole table after set.formats.weight.frac_bits"),
])
def test_a_mistake_in_a_study_file_is_one_line_naming_file_and_key(tmp_path, change, where):
    text = study_text().replace(*change)
    assert text != study_text()
    with pytest.raises(StudyError) as err:
        load_study(write(tmp_path, text))
    msg = str(err.value).replace(str(tmp_path) + "/", "")
    assert msg.startswith(where) and "\n" not in msg


def test_a_missing_or_unreadable_study_file_is_one_line(tmp_path):
    with pytest.raises(StudyError, match=r"nope\.toml: no such file$"):
        load_study(tmp_path / "nope.toml")
    with pytest.raises(StudyError, match="TOML syntax error"):
        load_study(write(tmp_path, "[study\n"))


def test_set_overrides_any_study_key_and_a_bad_one_is_blamed_on_the_flag(tmp_path):
    path = write(tmp_path, study_text())
    study = load_study(path, {"study.cycles": 8_000, "grid.formats.weight.frac_bits": [4, 5],
                              "set.optimizer.learning_rate": 0.1, "zip.w.network.layers": [[2, 2, 1], [2, 3, 1]]})
    assert study.cycles == 8_000 and study.chip.optimizer.learning_rate == 0.1
    assert [d.name for d in study.dimensions] == ["timing.tau_theta", "formats.weight.frac_bits", "w"]
    with pytest.raises(StudyError, match=r"^--set study.cycles=-5: must be a positive integer, got -5$"):
        load_study(path, {"study.cycles": -5})
    with pytest.raises(StudyError, match=r"^--set timing.tau_x=2: .*; a chip key goes under set\., e\.g\. set\.timing"):
        load_study(path, {"timing.tau_x": 2})


def test_a_chip_path_resolves_beside_the_study_file_then_in_the_working_directory(tmp_path):
    (tmp_path / "mychip.toml").write_text((ROOT / "hw_models/xor_8bit.toml").read_text())
    study = load_study(write(tmp_path, study_text(chip="mychip.toml")))
    assert study.chip_path == tmp_path / "mychip.toml"
    assert load_study(write(tmp_path, study_text())).chip_path == ROOT / "hw_models/xor_8bit.toml"


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_study_loads_and_the_chip_accepts_every_point(path, tmp_path, monkeypatch):
    # studies on user data (scaling_mnist) read data/mnist.npz: a stand-in of MNIST's shape
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data" / "mnist.npz", x=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y=np.arange(20) % 10, x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y_test=np.arange(10))
    study = load_study(path)
    assert study.description and study.n_runs >= 10
    for point in study.points():
        study.point_chip(point)


def test_compare_sweep_values_split_at_top_level_commas_only():
    assert split_values("[49,4,4],[49,8,4]") == ["[49,4,4]", "[49,8,4]"]
    assert split_values('3, 4,"a,b",{ kind = "float", x = [1,2] }') == \
        ["3", "4", '"a,b"', '{ kind = "float", x = [1,2] }']


# --------------------------------------------------------- serial execution

def test_a_run_is_exactly_a_plain_emulator_run_evaluated_every_eval_every(tmp_path):
    study = loads_study(study_text(), "s.toml")
    ds = run_study(study, serial=True).dataset
    for point in study.points():
        chip = study.point_chip(point)
        for k, seed in enumerate(study.seeds):
            emu = Emulator(chip, seed)
            curve = [emu.run(1_000).evaluate() for _ in range(4)]
            run = ds.isel({"timing.tau_theta": point.index[0], "seed": k})
            assert list(run.cost.values) == [c for c, _ in curve]
            assert list(run.accuracy.values) == [a for _, a in curve]
            assert run.final_accuracy.item() == curve[-1][1] and run.cycles_run.item() == 4_000
            assert {r: (s, w) for r, s, w in zip(ds.register.values, run.saturations.values, run.wraps.values)} \
                == emu.events
            assert ds.n_parameters.isel({"timing.tau_theta": point.index[0]}).item() == chip.n_parameters == 9


def test_the_progress_bars_time_left_is_weighted_by_each_runs_work():
    """One large run of four done in 10 s, with 80 % of the study's work:
    2.5 s left, not the 30 s a count of runs would say."""
    bar = _Bar(4, 0, False, "s", work=100)
    assert bar.seconds_left() is None   # nothing to go by before a run has finished
    bar.t0 -= 10.0
    bar.finished({"status": "ok"}, work=80)
    assert bar.seconds_left() == pytest.approx(2.5, rel=0.01)
    assert (bar.done, bar.failed) == (1, 0)
    bar.finished({"status": "failed"}, work=10)   # failed at once: its work is no longer left, nor a measure of the rate
    assert bar.seconds_left() == pytest.approx(10 * 10 / 80, rel=0.01) and bar.failed == 1


def test_without_a_terminal_the_progress_is_a_line_at_every_tenth_of_the_runs(capsys):
    bar = _Bar(20, 0, True, "s", work=20)   # stderr is pytest's capture, not a terminal
    for _ in range(20):
        bar.finished({"status": "ok"}, work=1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"mgd-emu: s: {n}/20 runs" for n in range(2, 21, 2)]
    assert lines[-1].endswith("done=20 failed=0 running=0")


def test_time_to_target_is_the_first_evaluation_reaching_it_and_stop_at_ends_the_run():
    text = study_text(cycles=300_000, every=10_000, seeds=(0, 1, 2), grid='"timing.tau_theta" = [1]',
                      extra="stop_at = 1.0")
    ds = run_study(loads_study(text, "s.toml"), serial=True).dataset.isel({"timing.tau_theta": 0})
    for k in range(3):
        acc, ran = ds.accuracy.values[k], ds.cycles_run.values[k]
        n = int(ran // 10_000)
        assert np.all(np.isnan(acc[n:])) and not np.isnan(acc[:n]).any()
        for t, c in zip(ds.target.values, ds.cycles_to_target.values[k]):
            hits = np.nonzero(acc[:n] >= t)[0]
            assert (c == (hits[0] + 1) * 10_000) if hits.size else np.isnan(c)
        if acc[n - 1] >= 1.0:
            assert ds.cycles_to_target.values[k][-1] == ran
        else:
            assert ran == 300_000
    # xor_8bit learns XOR on seeds 0-2 well within 300k cycles
    assert (ds.cycles_run.values < 300_000).all()


def test_a_point_the_chip_refuses_fails_with_its_error_and_the_rest_run(tmp_path):
    study = loads_study(study_text(grid='"formats.weight.frac_bits" = [5, 40]'), str(tmp_path / "s.toml"))
    out = run_study(study, tmp_path / "out", serial=True)
    ds = out.dataset
    assert list(ds.status.values.ravel()) == ["ok", "ok", "failed", "failed"]
    assert len(out.failures) == 2 and not out.ok
    err = ds.error.values[1, 0]
    assert err.startswith(f"{tmp_path / 's.toml'}: ") and "formats.weight.frac_bits=40: must be an integer 0..32" in err
    assert np.isnan(ds.accuracy.values[1]).all() and ds.n_parameters.values.tolist() == [9, -1]


def test_the_journal_has_one_fsynced_record_per_run_and_resume_runs_only_what_is_missing(tmp_path):
    study = loads_study(study_text(), "s.toml")
    out = tmp_path / "out"
    full = run_study(study, out, serial=True)
    headers, runs = read_journal(out / JOURNAL)
    assert len(headers) == 1 and len(runs) == 4 and full.ran == 4
    # cut the journal after two runs, the second one half written (a crash mid-write)
    lines = (out / JOURNAL).read_text().splitlines(keepends=True)
    (out / JOURNAL).write_text("".join(lines[:2]) + lines[2] + lines[3][: len(lines[3]) // 2])
    assert len(read_journal(out / JOURNAL)[1]) == 2
    with pytest.raises(StudyError, match="holds a study already: add --resume"):
        run_study(study, out, serial=True)
    again = run_study(study, out, serial=True, resume=True)
    assert again.ran == 2 and again.skipped == 2
    lines = (out / JOURNAL).read_text().splitlines()
    runs = [json.loads(x)["run_id"] for x in lines if json.loads(x)["kind"] == "run"]
    assert len(runs) == len(set(runs)) == 4
    same_results(again.dataset, full.dataset)
    assert run_study(study, out, serial=True, resume=True).ran == 0


def test_two_studies_cannot_write_one_journal_at_once(tmp_path):
    from mgd_emu.studies.runner import Journal

    study = loads_study(study_text(seeds=(0,)), "s.toml")
    run_study(study, tmp_path / "o", serial=True)
    held = Journal(tmp_path / "o" / JOURNAL).open()   # as a study still running would
    try:
        with pytest.raises(StudyError, match="another mgd-emu study is writing this journal now"):
            run_study(study, tmp_path / "o", serial=True, resume=True)
    finally:
        held.close()


def test_results_are_netcdf_readable_with_h5py_and_xarray_and_a_csv_row_per_run(tmp_path):
    import csv

    import h5py

    study = loads_study(study_text(grid='"network.layers" = [[2, 2, 1], [2, 3, 1]]'), "s.toml")
    out = run_study(study, tmp_path / "out", serial=True)
    nc, table = out.paths
    with h5py.File(nc, "r") as f:
        assert f.attrs["format"] in ("mgd-emu-study-results", b"mgd-emu-study-results")
        assert f["accuracy"].shape == (2, 2, 4)
    ds = open_results(tmp_path / "out")
    same_results(ds, out.dataset)
    assert list(ds["network.layers"].values) == ["[2, 2, 1]", "[2, 3, 1]"]
    assert ds.n_parameters.values.tolist() == [9, 13]
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 4 and rows[2]["network.layers"] == "[2, 3, 1]" and rows[2]["seed"] == "0"
    assert float(rows[2]["final_accuracy"]) == ds.final_accuracy.values[1, 0]
    # from the journal alone (a study in progress) the same Dataset
    same_results(collect(tmp_path / "out"), ds)


# ------------------------------------------------------------------- plots

def test_fitted_slope_recovers_a_power_law():
    p = np.array([10, 100, 1000, 10000])
    slope, b = fit_slope(p, 3.0 * p ** 1.5)
    assert slope == pytest.approx(1.5) and 10 ** b == pytest.approx(3.0)
    assert fit_slope([10, 10], [1, 2]) is None


def test_median_cycles_counts_a_seed_that_never_reached_the_target_as_infinite():
    study = loads_study(study_text(seeds=(0, 1, 2)), "s.toml")
    ds = run_study(study, serial=True).dataset
    c = ds.cycles_to_target.sel(target=0.75).values.copy()
    c[0] = [1_000, np.nan, np.nan]
    c[1] = [1_000, 3_000, np.nan]
    ds["cycles_to_target"].loc[{"target": 0.75}] = c
    s = summarize(ds, 0.75)
    assert np.isinf(s["median"][0]) and s["median"][1] == 3_000
    assert s["fraction"].tolist() == [1 / 3, 2 / 3] and s["lo"][1] == 1_000 and s["hi"][1] == 3_000


@pytest.mark.parametrize("grid", ['"timing.tau_theta" = [1, 2]',
                                  '"timing.tau_theta" = [1, 2]\n"formats.weight.frac_bits" = [4, 5]',
                                  '"network.layers" = [[2, 2, 1], [2, 3, 1], [2, 5, 1]]'])
def test_plot_draws_what_fits_the_grid(tmp_path, grid):
    study = loads_study(study_text(grid=grid, cycles=2_000), "s.toml")
    out = run_study(study, tmp_path / "o", serial=True)
    png = plot_results(out.dataset, tmp_path / "r.png", target=0.75)
    assert png.stat().st_size > 10_000



def test_the_log_log_panel_fits_one_slope_per_line_never_across_methods(tmp_path):
    from mgd_emu.studies.plot import _size_groups

    study = loads_study(study_text(grid='"optimizer.learning_rate" = [0.05, 0.1]\n'
                                        '"network.layers" = [[2, 2, 1], [2, 4, 1]]', cycles=1_000, seeds=(0,)), "s.toml")
    ds = run_study(study, tmp_path / "o", serial=True).dataset
    params = ds["n_parameters"].values                  # (learning rate, layers): 9 and 17 parameters
    groups = _size_groups(ds, params)
    assert [name for name, _ in groups] == ["optimizer.learning_rate=0.05", "optimizer.learning_rate=0.1"]
    for k, (_, index) in enumerate(groups):             # each line: one learning rate, both sizes
        assert list(params[index]) == [9, 17] and index[0] == k
    partial = np.stack([params[:, 0], params[:, 1], np.zeros(2, params.dtype)], axis=1)   # a width not run yet
    assert [name for name, _ in _size_groups(ds, partial)] == [name for name, _ in groups]

def test_a_heatmap_marks_points_not_run_yet_apart_from_failed_ones(tmp_path, monkeypatch):
    from mgd_emu.studies import plot as study_plot

    study = loads_study(study_text(grid='"timing.tau_theta" = [1, 2]\n"formats.weight.frac_bits" = [5, 40]',
                                   cycles=2_000, seeds=(0,)), "s.toml")
    out = tmp_path / "o"
    run_study(study, out, serial=True)                  # frac_bits = 40 is refused: those points fail
    lines = (out / JOURNAL).read_text().splitlines(keepends=True)
    ok = [line for line in lines if '"status": "ok"' in line]
    (out / JOURNAL).write_text("".join([lines[0], ok[0]] + [x for x in lines if '"failed"' in x]))
    drawn = []
    monkeypatch.setattr(study_plot, "save_figure",
                        lambda fig, path, dpi: drawn.extend(t.get_text() for ax in fig.axes for t in ax.texts))
    plot_results(collect(out), tmp_path / "r.png", target=0.75)
    assert drawn.count("not run") == 2 and drawn.count("failed") == 4   # one ok point, one not run, two failed



def test_a_one_key_plot_marks_points_without_a_result_at_the_foot_of_the_axis(tmp_path, monkeypatch):
    from mgd_emu.studies import plot as study_plot

    study = loads_study(study_text(grid='"formats.weight.frac_bits" = [4, 5, 40]', cycles=2_000, seeds=(0,)),
                        "s.toml")
    out = tmp_path / "o"
    run_study(study, out, serial=True)                  # frac_bits = 40 is refused: that point fails
    lines = (out / JOURNAL).read_text().splitlines(keepends=True)
    (out / JOURNAL).write_text("".join(x for x in lines if '"index": [0]' not in x))   # frac_bits = 4: not run
    drawn = []
    monkeypatch.setattr(study_plot, "save_figure",
                        lambda fig, path, dpi: drawn.extend(t.get_text() for ax in fig.axes for t in ax.texts))
    plot_results(collect(out), tmp_path / "r.png", target=0.75)
    assert drawn.count("failed") == 2 and drawn.count("not run") == 2   # on both panels, cycles and accuracy


# -------------------------------------------------------------- command line

def run_cli(*args, cwd=None, timeout=300):
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    return subprocess.run([*MGD, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_study_help_documents_its_options():
    out = run_cli("study", "--help").stdout
    for option in ("--output", "--set", "--workers", "--scheduler", "--scheduler-file", "--resume", "--collect",
                   "--quiet", "--json"):
        assert option in out, option
    assert "--target" in run_cli("plot", "--help").stdout


def test_cli_mistakes_are_one_line_with_status_2(tmp_path):
    bad = write(tmp_path, study_text().replace("cycles = 4000", "cycles = -1"))
    r = run_cli("study", bad, "-o", tmp_path / "o")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"mgd-emu: error: {bad}: study.cycles: must be a positive integer, got -1"]
    good = write(tmp_path, study_text(), "g.toml")
    r = run_cli("study", good, "-o", tmp_path / "o", "--resume")
    assert r.returncode == 2 and "nothing to resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("study", good, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert r.returncode == 2 and "give one of them" in r.stderr
    r = run_cli("plot", tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = run_cli("study", good, "--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", good)
    assert r.returncode == 2 and "give one of them" in r.stderr
    r = run_cli("study", good, "-o", tmp_path / "o", "--scheduler-file", good)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"mgd-emu: error: {good}: is not a dask scheduler file (the JSON that `dask scheduler --scheduler-file FILE` "
        "writes)"]


def test_a_folder_holding_a_study_is_refused_in_one_line_to_a_new_start_or_another_studys_resume(tmp_path):
    first = write(tmp_path, study_text(cycles=2_000, seeds=(0,), grid='"timing.tau_theta" = [1]'), "first.toml")
    other = write(tmp_path, study_text(cycles=2_000, seeds=(0,), grid='"timing.tau_theta" = [1]'), "other.toml")
    assert run_cli("study", first, "-o", tmp_path / "o", "--workers", "0", "--quiet").returncode == 0
    r = run_cli("study", first, "-o", tmp_path / "o", "--workers", "0")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"mgd-emu: error: {tmp_path / 'o' / JOURNAL}: this folder holds a study already: add --resume to continue "
        "it, or choose another output folder"]
    r = run_cli("study", other, "-o", tmp_path / "o", "--workers", "0", "--resume")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"holds the study 'first' ({first}), not 'other'" in r.stderr
    assert open_results(tmp_path / "o").attrs["study_name"] == "first"   # its results untouched


def test_a_scheduler_that_cannot_be_reached_is_one_line_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import dask

    from mgd_emu.cli import main

    path = write(tmp_path, study_text(grid='"formats.weight.frac_bits" = [5, 40]'))
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        monkeypatch.setattr("mgd_emu.studies.runner.CONNECT_TIMEOUT", "1s")
        assert main(["study", str(path), "-o", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:1",
                     "--quiet"]) == 2
    assert not (tmp_path / "o" / JOURNAL).exists()


def test_the_summary_table_names_a_long_zip_group_by_its_index():
    from mgd_emu.cli import _short_label

    study = loads_study(study_text(grid='"timing.tau_theta" = [1, 2]', extra=(
        '[zip.number]\n"formats.weight" = [{ kind = "float" }, { kind = "fixed", int_bits = 2, frac_bits = 5 }]\n'
        '"formats.bias" = [{ kind = "float" }, { kind = "fixed", int_bits = 2, frac_bits = 5 }]')), "s.toml")
    assert [_short_label(study, p) for p in study.points()] == [
        "timing.tau_theta=1, number[0]", "timing.tau_theta=1, number[1]",
        "timing.tau_theta=2, number[0]", "timing.tau_theta=2, number[1]"]
    from mgd_emu.studies.plot import _axis_name, _labels   # and so do the plots' ticks, legends and axes

    ds = run_study(study, serial=True).dataset
    assert _labels(ds, "number")[0] == ["number[0]", "number[1]"] and _labels(ds, "timing.tau_theta")[0] == ["1", "2"]
    assert _axis_name(ds, "number") == "number: formats.weight / formats.bias"



def test_a_backprop_row_of_a_zip_group_shows_no_perturbation_keys():
    from mgd_emu.cli import _short_label

    study = loads_study(study_text(grid='"timing.tau_theta" = [1]', extra=(
        '[zip.method]\ntrainer = ["mgd", "backprop"]\n"perturbation.mode" = ["node", "node"]\n'
        '"optimizer.learning_rate" = [0.1, 3.0]')), "s.toml")
    assert [_short_label(study, p) for p in study.points()] == [
        "timing.tau_theta=1, method=mgd / node / 0.1", "timing.tau_theta=1, method=backprop / - / 3.0"]

def test_cli_serial_study_writes_results_and_plot_and_json(tmp_path):
    path = write(tmp_path, study_text())
    r = run_cli("study", path, "-o", tmp_path / "o", "--workers", "0", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["runs"] == data["ran"] == 4 and data["failed"] == 0
    assert sorted(Path(p).name for p in data["results"]) == ["results.csv", "results.nc", "results.png"]
    point = data["points"][0]                       # the table's target, and every target of the study
    assert point["target"] == 1.0 and [t["target"] for t in point["targets"]] == [0.75, 1.0]
    assert point["targets"][1]["median_cycles_to_target"] == point["median_cycles_to_target"]
    r = run_cli("plot", tmp_path / "o", "-o", tmp_path / "p.png", "--target", "0.75")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").stat().st_size > 10_000
    r = run_cli("plot", tmp_path / "o", "--target", "0.5")
    assert r.returncode == 2 and "the study recorded targets 0.75, 1" in r.stderr
    r = run_cli("plot", tmp_path / "o", "-o", f"{tmp_path / 'pictures'}/")   # a folder, made; named after the study
    assert r.returncode == 0 and r.stdout.split() == [str(tmp_path / "pictures" / "s.png")]


# ------------------------------------------------- a real cluster, 2 workers

@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client

    from mgd_emu.studies import local_cluster

    cluster = local_cluster(2)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


LONG = dict(cycles=300_000, every=50_000, seeds=(0, 1, 2, 3), grid='"timing.tau_theta" = [1, 2, 4]')


@pytest.fixture(scope="module")
def serial_long():
    """The long study run serially in this process: the reference."""
    return run_study(loads_study(study_text(**LONG), "s.toml"), serial=True).dataset


def test_a_study_on_the_cluster_is_bit_identical_to_serial(client, tmp_path):
    study = loads_study(study_text(grid='"timing.tau_theta" = [1, 2]\n"formats.weight.frac_bits" = [4, 5, 40]'),
                        "s.toml")
    serial = run_study(study, serial=True)
    dist = run_study(study, tmp_path / "o", client=client)
    same_results(dist.dataset, serial.dataset)
    assert (dist.dataset.status.values == "ok").sum() == 8
    workers = set(dist.dataset.worker.values.ravel()) - {""}
    assert len(workers) == 2 and str(os.getpid()) not in " ".join(workers)


def test_on_the_cluster_the_largest_runs_start_first_whatever_the_grids_order():
    """Runs start in order of their work (cycles x parameters), largest first:
    a study does not end waiting on a large run that started last. (One
    worker, so that the order the runs start in is the order dask gives.)"""
    from dask.distributed import Client, get_task_stream

    from mgd_emu.studies import local_cluster

    study = loads_study(study_text(grid='"network.layers" = [[2, 2, 1], [2, 3, 1], [2, 24, 1]]'), "s.toml")
    with local_cluster(1) as cluster, Client(cluster) as one_worker:
        with get_task_stream(one_worker) as stream:
            ds = run_study(study, client=one_worker).dataset
    width = {r: w for w, ids in zip((2, 3, 24), ds.run_id.values) for r in ids}
    runs = sorted((t["startstops"][0]["start"], t["key"].split("-")[2]) for t in stream.data
                  if t["key"].startswith("mgd-run-"))
    assert [width[r] for _, r in runs] == [24, 24, 3, 3, 2, 2]



def test_the_workers_of_a_host_compile_a_structure_once_then_load_it_together(tmp_path, monkeypatch):
    """warm_on_host: the first worker to take the structure's lock compiles;
    the rest wait for it, then load from the shared cache."""
    import mgd_emu.kernel_cache as kc
    from mgd_emu.studies import runner

    monkeypatch.setattr(kc, "CACHE_DIR", tmp_path)
    calls, lock = [], threading.Lock()

    def warm(chip_toml, source):
        start = time.perf_counter()
        cached = any(tmp_path.glob("warm-*[!k]"))  # a structure's mark (not its lock)
        time.sleep(0.2)
        with lock:
            calls.append((cached, start, time.perf_counter()))

    monkeypatch.setattr(runner, "warm", warm)
    workers = [threading.Thread(target=runner.warm_on_host, args=("", "", "weight-digital-dual-fast"))
               for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    compiled = [c for c in calls if not c[0]]
    loaded = [c for c in calls if c[0]]
    assert len(compiled) == 1 and len(loaded) == 2
    assert all(start >= compiled[0][2] for _, start, _ in loaded)
    runner.warm_on_host("", "", "node-digital-dual-fast")
    assert len(calls) == 4 and len(list(tmp_path.glob("warm-*[!k]"))) == 2, "another structure has its own mark"


def test_a_structure_that_fails_to_build_fails_its_warm_up_once_under_the_lock(tmp_path, monkeypatch):
    import mgd_emu.kernel_cache as kc
    from mgd_emu.studies import runner

    monkeypatch.setattr(kc, "CACHE_DIR", tmp_path)
    calls = []

    def warm(chip_toml, source):
        calls.append(any(tmp_path.glob("warm-*[!k]")))
        raise ValueError("refused")

    monkeypatch.setattr(runner, "warm", warm)
    for _ in range(2):
        with pytest.raises(ValueError, match="refused"):
            runner.warm_on_host("", "", "weight-digital-dual-fast")
    assert calls == [False, True], "the second worker does not wait to compile it again"

def test_local_cluster_workers_are_processes_with_one_thread_and_numba_on_one_thread(client):
    import numba

    assert sorted(client.nthreads().values()) == [1, 1]
    assert set(client.run(lambda: os.environ.get("NUMBA_NUM_THREADS")).values()) == {"1"}
    assert set(client.run(numba.get_num_threads).values()) == {1}
    assert os.getpid() not in client.run(os.getpid).values()
    # a worker is sent its next run when the last one ends, not queued a second
    assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION) == 1.0


def test_local_cluster_workers_start_with_the_engine_and_numbas_cpu_target_loaded(client):
    def preloaded(dask_worker):
        module = sys.modules.get("mgd_emu.studies.preload")
        return [p.name for p in dask_worker.preloads], module is not None and module.PREPARED

    assert list(client.run(preloaded).values()) == [(["mgd_emu.studies.preload"], True)] * 2


def test_local_cluster_keeps_the_users_own_worker_preloads(tmp_path):
    import dask
    from dask.distributed import Client

    from mgd_emu.studies import local_cluster

    mine = tmp_path / "my_preload.py"
    mine.write_text("def dask_setup(worker):\n    worker.my_preload_ran = True\n")
    with dask.config.set({"distributed.worker.preload": [str(mine)]}):
        cluster = local_cluster(1)
    with cluster, Client(cluster) as c:
        names, ran = next(iter(c.run(lambda dask_worker: (
            [p.name for p in dask_worker.preloads], getattr(dask_worker, "my_preload_ran", False))).values()))
    assert names == [str(mine), "mgd_emu.studies.preload"] and ran


def test_a_local_cluster_whose_dashboard_port_is_taken_takes_another_quietly_on_this_machine_only():
    import socket
    import warnings

    from mgd_emu.studies import local_cluster

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            cluster = local_cluster(1, dashboard_port=taken)
        with cluster:
            link = cluster.dashboard_link
    assert link.startswith("http://127.0.0.1:") and f":{taken}/" not in link
    assert not [w for w in seen if "already in use" in str(w.message)]


def test_a_failing_grid_point_is_reported_and_the_rest_complete_with_nonzero_status(client, tmp_path):
    path = write(tmp_path, study_text(grid='"formats.weight.frac_bits" = [5, 40]\n"timing.tau_theta" = [1, 2]'))
    r = run_cli("study", path, "-o", tmp_path / "o", "--scheduler", client.scheduler.address, "--quiet")
    assert r.returncode == 1
    failed = [x for x in r.stderr.splitlines() if "seed" in x]
    assert len(failed) == 4 and all("formats.weight.frac_bits=40: must be an integer 0..32, got 40" in x
                                    for x in failed)
    assert "4 run(s) failed" in r.stderr and "Traceback" not in r.stderr
    ds = open_results(tmp_path / "o")
    assert (ds.status.values[0] == "ok").all() and (ds.status.values[1] == "failed").all()
    assert ds.attrs["runs_ok"] == 4 and ds.attrs["complete"] == 1


def test_a_study_whose_client_was_killed_resumes_without_repeating_a_finished_run(client, serial_long, tmp_path):
    path = write(tmp_path, study_text(**LONG))
    out = tmp_path / "o"
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen([*MGD, "study", path, "-o", out, "--scheduler", client.scheduler.address, "--quiet"],
                            stderr=subprocess.PIPE, text=True, env=env)
    journal = out / JOURNAL
    _wait_for_runs(journal, 2, proc)
    proc.kill()                        # a killed client: nothing runs on the way out
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    _, before = read_journal(journal)
    assert 2 <= len(before) < 12

    r = run_cli("study", path, "-o", out, "--scheduler", client.scheduler.address, "--resume", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["skipped"] == len(before) and data["ran"] == 12 - len(before)
    records = [json.loads(x) for x in journal.read_text().splitlines()]
    ids = [x["run_id"] for x in records if x["kind"] == "run"]
    assert len(ids) == len(set(ids)) == 12          # no finished run was run again
    assert [x["kind"] for x in records].count("study") == 2
    same_results(open_results(out), serial_long)


def _start_scheduler(tmp_path, started):
    """A `dask scheduler` process of its own (its process group in `started`); its scheduler file."""
    sfile = tmp_path / "scheduler.json"
    started.append(subprocess.Popen([str(Path(sys.executable).parent / "dask"), "scheduler", "--port", "0",
                                     "--no-dashboard", "--scheduler-file", sfile],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    deadline = time.time() + 60
    while time.time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            json.loads(sfile.read_text())   # written whole
            return sfile
        time.sleep(0.05)
    raise AssertionError("the dask scheduler did not write its scheduler file in 60 s")


def _stop(started):
    for p in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)


def _study_on(sfile, path, out, env, started):
    """`mgd-emu study PATH -o OUT --scheduler-file SFILE --quiet`, in its own process group (in `started`)."""
    proc = subprocess.Popen([*MGD, "study", path, "-o", out, "--scheduler-file", sfile, "--quiet"],
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    started.append(proc)
    return proc


def _wait_for_runs(journal: Path, n: int, proc=None, timeout: float = 120) -> bool:
    """Wait until the journal holds n finished runs (or `proc` has ended); whether it does."""
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if journal.exists() and journal.read_text().count('"kind": "run"') >= n:
            return True
        time.sleep(0.02)
    return False


def _kill_scheduler(proc, started) -> str:
    """SIGKILL the scheduler (started[0]) under the study `proc`; the study's stderr once it has ended."""
    os.killpg(started[0].pid, signal.SIGKILL)
    return proc.communicate(timeout=120)[1]


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [x for x in err.splitlines() if x.startswith("mgd-emu: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_a_study_whose_scheduler_goes_away_stops_with_one_line_records_no_lost_run_and_resumes(tmp_path):
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    started = []
    try:
        sfile = _start_scheduler(tmp_path, started)
        started.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "dask"), "worker", "--scheduler-file", sfile, "--nworkers", "2",
             "--nthreads", "1", "--no-dashboard", "--preload", "mgd_emu.studies.preload"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env))
        path = write(tmp_path, study_text(cycles=3_000_000, every=500_000, seeds=(0, 1, 2, 3),
                                          grid='"timing.tau_theta" = [1, 2, 4]'))
        out = tmp_path / "o"
        proc = _study_on(sfile, path, out, env, started)
        journal = out / JOURNAL
        assert _wait_for_runs(journal, 1, proc), "no run finished in 120 s"
        err = _kill_scheduler(proc, started)
    finally:
        _stop(started)
    assert proc.returncode == 2, err[-3000:]
    line = _one_error_line(err)
    assert "dask scheduler" in line and "unfinished (nothing is recorded for them)" in line and "--resume" in line
    _, before = read_journal(journal)
    assert 1 <= len(before) < 12 and all(r["status"] == "ok" for r in before.values())   # lost is not failed

    r = run_cli("study", path, "-o", out, "--resume", "--workers", "2", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["skipped"] == len(before) and data["ran"] == 12 - len(before) and data["failed"] == 0


def test_a_study_whose_scheduler_goes_away_before_any_worker_came_stops_with_one_line(tmp_path):
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    started = []
    try:
        sfile = _start_scheduler(tmp_path, started)
        out = tmp_path / "o"
        proc = _study_on(sfile, write(tmp_path, study_text()), out, env, started)
        deadline = time.time() + 60
        while time.time() < deadline and not (out / JOURNAL).exists():   # then it waits for a worker
            time.sleep(0.02)
        time.sleep(0.5)
        err = _kill_scheduler(proc, started)   # the client tries to reconnect for 30 s, then the study stops
    finally:
        _stop(started)
    assert proc.returncode == 2, err[-3000:]
    line = _one_error_line(err)
    assert "lost the dask scheduler" in line and "4 run(s) unfinished" in line and "--resume" in line


def test_a_worker_killed_mid_study_costs_only_its_run_and_the_study_completes(client, serial_long, tmp_path):
    study = loads_study(study_text(**LONG), "s.toml")
    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            journal = tmp_path / "o" / JOURNAL
            if journal.exists() and journal.read_text().count('"kind": "run"') >= 1:
                busy = [addr for addr, keys in client.processing().items()
                        if any(str(k).startswith("mgd-run-") for k in keys)]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])
                    return
            time.sleep(0.02)

    t = threading.Thread(target=kill_a_busy_worker)
    t.start()
    out = run_study(study, tmp_path / "o", client=client)
    t.join()
    assert killed, "no worker was busy to kill"
    assert killed[0] not in client.run(os.getpid).values()   # it died (the nanny started another)
    assert out.ok and out.dataset.attrs["runs_ok"] == 12
    same_results(out.dataset, serial_long)



def test_compare_sweeps_a_list_valued_key(tmp_path, capsys):
    from mgd_emu.cli import main

    rc = main(["compare", "xor_8bit", "--sweep", "network.layers=[2,2,1],[2,3,1]", "--seeds", "0",
               "--cycles", "2000", "--eval-every", "1000", "-o", str(tmp_path / "c.png"), "--quiet", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in data["design_points"]] == ["network.layers=[2, 2, 1]", "network.layers=[2, 3, 1]"]



def test_ctrl_c_while_the_local_cluster_starts_stops_once_it_has_started(tmp_path):
    script = tmp_path / "start.py"
    script.write_text(
        "import os, signal, threading, time\n"
        "import dask.distributed   # imported before the timer: the signal must come while the cluster starts\n"
        "from mgd_emu.errors import Interrupted\n"
        "from mgd_emu.studies import local_cluster\n"
        "if __name__ == '__main__':   # the workers import this module too\n"
        "    threading.Timer(0.3, lambda: os.killpg(0, signal.SIGINT)).start()   # Ctrl-C: the whole group\n"
        "    t0 = time.perf_counter()\n"
        "    try:\n"
        "        local_cluster(1)\n"
        "        print('started')\n"
        "    except Interrupted as exc:\n"
        "        print('interrupted', exc.status, round(time.perf_counter() - t0, 1))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         start_new_session=True, cwd=ROOT)
    said = out.stdout.split()
    assert said[:2] == ["interrupted", "130"] and float(said[2]) > 0.3, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr

def test_ctrl_c_in_a_terminal_stops_a_local_cluster_study_cleanly(tmp_path):
    # Ctrl-C reaches the whole foreground process group: client and workers
    path = write(tmp_path, study_text(cycles=600_000, every=100_000, seeds=range(8)))
    out = tmp_path / "o"
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen([*MGD, "study", path, "-o", out, "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    _wait_for_runs(out / JOURNAL, 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    said = [line for line in err.splitlines() if "interrupted by SIGINT" in line]
    assert len(said) == 1 and said[0].endswith("--workers 2 --resume` runs the rest"), err   # as typed
    finished = len(read_journal(out / JOURNAL)[1])
    assert 1 <= finished < 16
    partial = open_results(out / "results.nc")    # the runs so far, written on the way out
    assert partial.attrs["complete"] == 0 and partial.attrs["runs_ok"] == finished


def test_collect_writes_results_from_the_journal_of_a_study_in_progress(tmp_path, capsys):
    from mgd_emu.cli import main

    path = write(tmp_path, study_text())
    study = load_study(path)
    out = tmp_path / "o"
    run_study(study, out, serial=True)
    lines = (out / JOURNAL).read_text().splitlines(keepends=True)
    (out / JOURNAL).write_text("".join(lines[:3]))          # header + 2 runs: a study still going
    for name in ("results.nc", "results.csv"):
        (out / name).unlink()
    assert main(["study", str(path), "-o", str(out), "--collect"]) == 0
    said = capsys.readouterr()
    assert said.out.split() == [str(out / "results.nc"), str(out / "results.csv"), str(out / "results.png")]
    assert said.err.strip() == f"mgd-emu: collected {out / JOURNAL}: 2 of 4 runs ok, 0 failed, 2 not run (incomplete)"
    ds = open_results(out)
    assert ds.attrs["runs_ok"] == 2 and ds.attrs["runs_missing"] == 2 and ds.attrs["complete"] == 0
    assert main(["study", str(path), "-o", str(out), "--collect", "--json", "--no-plot"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["runs_ok"], data["runs_missing"], data["complete"]) == (2, 2, False) and len(data["results"]) == 2
    assert main(["study", str(path), "-o", str(tmp_path / "none"), "--collect"]) == 2
    other = write(tmp_path, study_text(), "other.toml")
    assert main(["study", str(other), "-o", str(out), "--collect"]) == 2
    assert "holds the study 's', not 'other'" in capsys.readouterr().err
    assert main(["study", str(path), "-o", str(out), "--collect", "--set", "study.targets=[0.5]"]) == 2
    assert "with your --set its targets would differ" in capsys.readouterr().err
    assert main(["study", str(path), "-o", str(out), "--collect", "--set", "study.targets=[0.75, 1.0]",
                 "--no-plot"]) == 0                       # the same study as it ran: collected


def test_a_study_folder_opens_as_its_journal_when_the_journal_is_newer_than_its_results(tmp_path):
    out = tmp_path / "o"
    run_study(loads_study(study_text(cycles=2_000, seeds=(0,)), "s.toml"), out, serial=True)
    assert open_results(out).attrs["runs_ok"] == 2
    journal = out / JOURNAL
    lines = journal.read_text().splitlines(keepends=True)
    time.sleep(0.01)
    journal.write_text("".join(lines[:2]))   # as a resumed study still running may hold it: one run so far
    assert open_results(out).attrs["runs_ok"] == 1


def test_a_retried_run_continues_from_its_checkpoint_bit_exactly(tmp_path):
    from mgd_emu.studies.runner import _save_progress, execute, plan

    text = study_text(cycles=8_000, every=1_000, seeds=(3,), grid='"timing.tau_theta" = [2]',
                      extra="checkpoint_every = 2000")
    study = loads_study(text, "s.toml")
    (task,), _, _ = plan(study, set(), tmp_path / "checkpoints")
    assert task["checkpoint"] == str(tmp_path / "checkpoints" / task["run_id"]) and task["checkpoint_every"] == 2000
    whole = execute(dict(task, checkpoint=None))
    assert whole["status"] == "ok" and whole["resumed_from_cycle"] is None
    # what a worker that died after 4,000 cycles leaves behind
    emu = Emulator(study.point_chip(study.points()[0]), 3)
    at, cost, acc = [], [], []
    for _ in range(4):
        emu.run(1_000)
        c, a = emu.evaluate()
        at.append(emu.cycle), cost.append(c), acc.append(a)
    _save_progress(task["checkpoint"], emu, at, cost, acc)
    (replanned,), _, _ = plan(study, set(), tmp_path / "checkpoints")
    assert replanned["work"] * 2 == task["work"]   # half its cycles left: half the work, for the order runs start in
    again = execute(task)
    assert again["resumed_from_cycle"] == 4_000
    for key in ("eval_cycles", "cost", "accuracy", "events", "final_accuracy", "cycles", "reached"):
        assert again[key] == whole[key], key
    # the run leaves its checkpoint to the study, which removes it once the run is recorded
    assert sorted(p.suffix for p in (tmp_path / "checkpoints").iterdir()) == [".json", ".npz"]
    # a checkpoint of another seed is not used: the run starts over
    _save_progress(task["checkpoint"], Emulator(study.point_chip(study.points()[0]), 4).run(2_000),
                   [1_000, 2_000], [0.0, 0.0], [0.0, 0.0])
    other = execute(task)
    assert other["resumed_from_cycle"] is None and other["accuracy"] == whole["accuracy"]


def test_a_study_with_checkpoints_gives_the_same_results(tmp_path):
    text = study_text(extra="checkpoint_every = 2000")
    with_ck = run_study(loads_study(text, "s.toml"), tmp_path / "o", serial=True)
    same_results(with_ck.dataset, run_study(loads_study(study_text(), "s.toml"), serial=True).dataset)
    assert not list((tmp_path / "o" / "checkpoints").iterdir())   # each removed once its run was recorded
    with pytest.raises(StudyError, match="study.checkpoint_every: must be a positive multiple of study.eval_every"):
        loads_study(study_text(extra="checkpoint_every = 1500"), "s.toml")


def test_run_checkpoints_and_resume_continue_bit_exactly(tmp_path, capsys):
    from mgd_emu.cli import main

    ck = tmp_path / "run.npz"
    common = ["--eval-every", "5000", "--quiet", "--json"]
    assert main(["run", "xor_8bit", "--seed", "2", "--cycles", "20000", *common]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert main(["run", "xor_8bit", "--seed", "2", "--cycles", "10000", "--checkpoint", str(ck),
                 "--checkpoint-every", "5000", *common]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["checkpoint"] == str(ck) and first["history"] == whole["history"][:2]
    assert main(["run", "--resume", str(ck), "--cycles", "20000", "--checkpoint", str(ck), *common]) == 0
    rest = json.loads(capsys.readouterr().out)
    assert rest["resumed_from_cycle"] == 10_000 and rest["seed"] == 2
    assert rest["history"] == whole["history"][2:]
    assert rest["cycles_per_s"] == pytest.approx(10_000 / rest["wall_s"])   # the cycles this run ran
    for key in ("final_cost", "final_accuracy", "overflow_events", "cycles"):
        assert rest[key] == whole[key], key
    assert main(["run", "--resume", str(ck), "--cycles", "20000", *common]) == 2      # already there
    assert "at cycle 20,000 already" in capsys.readouterr().err
    assert main(["run", "xor_8bit", "--resume", str(ck), *common]) == 2
    assert main(["run", "--resume", str(ck), "--seed", "5", "--cycles", "30000", *common]) == 2
    assert "give no CHIP, --set, --seed or --probe" in capsys.readouterr().err
    assert main(["run", "xor_8bit", "--checkpoint-every", "5000", *common]) == 2
    ck.write_bytes(b"not a checkpoint")
    assert main(["run", "--resume", str(ck), "--cycles", "30000", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"mgd-emu: error: --resume {ck}") and "Traceback" not in "".join(err)
