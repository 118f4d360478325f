"""Slopes of cycles-to-target against parameter count (mgd_emu.studies.scaling),
checked on synthetic results whose power laws are known exactly."""
import numpy as np
import pytest

from mgd_emu.studies import loads_study
from mgd_emu.studies.results import to_dataset
from mgd_emu.studies.runner import run_id
from mgd_emu.studies.scaling import per_seed_slopes, plot_scaling, scaling_lines, scaling_markdown

P = [100, 10_000, 1_000_000]          # parameter counts of the three widths (as the records state them)
SLOPES = [0.0, 0.5, 1.0]              # seed s takes 1000 * (P / 100) ** SLOPES[s] cycles


def synthetic(missing=()):
    """A study of 3 widths x 2 trainers x 3 seeds whose records are made up:
    trainer index 0 follows the power laws exactly; index 1 too, except the
    (width, seed) pairs in `missing`, which never reach the target."""
    text = ('[study]\nchip = "xor_ideal"\nseeds = [0, 1, 2]\ncycles = 10_000_000\neval_every = 1_000\n'
            'targets = [0.9]\n[grid]\n"network.layers" = [[2, 2, 1], [2, 3, 1], [2, 4, 1]]\n'
            'trainer = ["mgd", "backprop"]\n')
    study = loads_study(text, "s.toml")
    records = {}
    for point in study.points():
        w, t = point.index
        for s, seed in enumerate(study.seeds):
            reached = (t == 1 and (w, s) in missing)
            cycles = int(round(1000 * (P[w] / 100) ** SLOPES[s]))
            at = [1000] if reached else [cycles]
            acc = [0.5] if reached else [1.0]
            rid = run_id(study, point, seed)
            records[rid] = {"run_id": rid, "status": "ok", "n_parameters": P[w], "chip_hash": "x",
                            "eval_cycles": at, "accuracy": acc, "cost": [0.1], "clock_hz": 1e8,
                            "final_accuracy": acc[-1], "final_cost": 0.1, "cycles": at[-1], "events": {}}
    return to_dataset(study, records)


def test_a_line_per_combination_of_the_other_dimensions_along_the_width():
    over, lines = scaling_lines(synthetic(), 0.9)
    assert over == "network.layers"
    assert [ln.label for ln in lines] == ["mgd", "backprop"]
    assert lines[0].params.tolist() == P


def test_the_slope_is_the_mean_of_the_per_seed_slopes_with_its_standard_error():
    line = scaling_lines(synthetic(), 0.9)[1][0]
    assert line.seed_slopes == pytest.approx(SLOPES)
    assert line.slope == pytest.approx(0.5)
    assert line.slope_se == pytest.approx(np.std(SLOPES, ddof=1) / np.sqrt(3)) == pytest.approx(0.5 / np.sqrt(3))
    # medians: 1000; 10,000 (of 1k, 10k, 100k); 100,000 (of 1k, 100k, 10M): slope 1/2
    assert line.median.tolist() == [1000, 10_000, 100_000] and line.median_slope == pytest.approx(0.5)
    assert not line.partial


def test_a_seed_that_misses_a_width_is_left_out_of_the_fit_and_counted_as_not_reaching_the_median():
    line = scaling_lines(synthetic(missing={(2, 2)}), 0.9)[1][1]
    assert line.seed_slopes == pytest.approx([0.0, 0.5])          # seed 2 has two widths: not fitted
    assert line.slope_se == pytest.approx(0.25)
    assert line.reached.tolist() == [3, 3, 2]
    assert line.median[2] == 100_000                             # median of 1k, 100k and "never"
    assert line.slope_text() == "+0.25 ± 0.25 (2 seeds)"


def test_with_fewer_widths_than_min_points_every_width_is_needed():
    slopes, partial = per_seed_slopes([10, 100], np.array([[10.0, np.nan], [100.0, 1000.0]]))
    assert slopes == pytest.approx([1.0]) and not partial


def test_a_line_no_seed_fits_has_no_slope():
    c = np.full((3, 2), np.nan)
    assert per_seed_slopes(P, c) == ([], False)


def test_the_table_and_figure(tmp_path):
    ds = synthetic(missing={(2, 2)})
    text = scaling_markdown(ds)
    assert "| mgd | 1k (3/3) | 10k (3/3) | 100k (3/3) | +0.50 ± 0.29 (3 seeds) | +0.50 |" in text
    assert "Final test accuracy" in text
    png = plot_scaling(ds, tmp_path / "s.png", panels="trainer")
    assert png.stat().st_size > 10_000
    assert "Incomplete" not in text


def test_an_incomplete_study_says_so_and_tells_runs_not_run_from_targets_not_reached(tmp_path, monkeypatch):
    from mgd_emu.studies import scaling

    ds = synthetic()
    ds["status"].values[0, 1, :] = "missing"                # backprop at the narrowest width: not run yet
    ds["status"].values[1:, 1, :] = "missing"
    ds.attrs.update(complete=0, runs_ok=9, runs_missing=9)
    assert scaling_markdown(ds).startswith("**Incomplete study:** 9 of 18 runs ok, 9 not run yet")
    drawn = []
    monkeypatch.setattr(scaling, "save_figure", lambda fig, path, dpi: drawn.extend(
        [fig._suptitle.get_text()] + [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]))
    plot_scaling(ds, tmp_path / "s.png")
    assert drawn[0].startswith("(incomplete: 9 of 18 runs ok, 9 not run)")
    assert any(t.endswith(": no run finished yet") for t in drawn) and not any("not reached" in t for t in drawn)


def test_the_command_checks_its_outputs_and_dimensions_first_in_one_line_and_writes_all_or_nothing(tmp_path, capsys):
    from mgd_emu.studies.scaling import main

    results = tmp_path / "results.nc"
    synthetic().to_netcdf(results, engine="h5netcdf")
    fig, table = tmp_path / "f.png", tmp_path / "t.md"
    assert main([str(results), "--panels", "trainr", "-o", str(fig)]) == 2
    assert "--panels trainr: not a dimension of the study (its dimensions: network.layers, trainer)" in \
        capsys.readouterr().err
    assert main([str(results), "-o", str(tmp_path / "f.txt")]) == 2
    assert main([str(results), "-o", str(tmp_path / "no" / "f.png")]) == 2
    assert "no writable folder" in capsys.readouterr().err
    assert main([str(results), "-o", str(fig), "--table", str(tmp_path)]) == 2     # a folder: refused first
    assert not fig.exists()
    assert main([str(results), "-o", str(fig), "--table", str(table), "--panels", "trainer"]) == 0
    assert fig.stat().st_size > 10_000 and "| mgd |" in table.read_text()
