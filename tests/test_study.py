"""Studies: comparisons on shared seeds, one-key sweeps, the float-ideal twin."""
import json
from pathlib import Path

import pytest

from mgd_emu import ChipError, load_chip
from mgd_emu.engine import Emulator
from mgd_emu.study import compare, ideal_twin, sweep, twin

ROOT = Path(__file__).resolve().parents[1]
XOR8 = load_chip(ROOT / "hw_models/xor_8bit.toml")
IDEAL = load_chip(ROOT / "hw_models/xor_ideal.toml")
PIPELINED = load_chip(ROOT / "hw_models/xor_pipelined.toml")


def test_a_sweep_is_the_chip_with_one_key_set_to_each_value():
    points = sweep(XOR8, "formats.weight.frac_bits", [3, 4])
    assert [label for label, _ in points] == ["weight.frac_bits=3", "weight.frac_bits=4"]
    assert [chip.formats.weight.frac_bits for _, chip in points] == [3, 4]
    assert all(chip.formats.bias == XOR8.formats.bias for _, chip in points)


def test_a_sweep_value_the_chip_description_refuses_names_the_key():
    with pytest.raises(ChipError, match="formats.weight.frac_bits"):
        sweep(XOR8, "formats.weight.frac_bits", [4, 40])


def test_a_comparison_runs_every_design_point_on_the_same_seeds():
    points = sweep(XOR8, "optimizer.learning_rate", [0.05, 0.1])
    result = compare(points, [0, 1], cycles=6_000, eval_every=2_000)
    assert result.labels == ["optimizer.learning_rate=0.05", "optimizer.learning_rate=0.1"]
    for label, (_, chip) in zip(result.labels, points):
        runs = result.runs[label]
        assert [r.seed for r in runs] == [0, 1]
        for r in runs:
            assert list(r.cycles) == [2_000, 4_000, 6_000]
            # A row is exactly what a plain run of that chip and seed gives.
            assert (r.cost[-1], r.accuracy[-1]) == Emulator(chip, r.seed).run(6_000).evaluate()
    table = result.table()
    assert all(label in table for label in result.labels) and "cycles to 100%" in table
    data = json.loads(json.dumps(result.to_json()))
    assert [p["label"] for p in data["design_points"]] == result.labels


def test_cycles_to_target_is_the_first_evaluation_that_reaches_it():
    result = compare([("ideal", IDEAL)], [1], cycles=300_000, eval_every=50_000)
    run = result.runs["ideal"][0]
    hits = [c for c, a in zip(run.cycles, run.accuracy) if a >= 1.0]
    assert run.reached(1.0) == (hits[0] if hits else None)
    assert run.reached(0.0) == 50_000


def test_the_twin_of_an_ideal_chip_never_diverges():
    assert ideal_twin(IDEAL).to_dict()["formats"] == IDEAL.to_dict()["formats"]
    report = twin(IDEAL, seed=1, cycles=20_000, check_every=5_000)
    assert report.registers and all(d.first_cycle is None and d.max_abs == 0.0 for d in report.registers)
    assert report.chip_eval[-1][1:] == report.twin_eval[-1][1:]


def test_the_twin_of_a_pipelined_8_bit_chip_shows_where_it_departs():
    twin_chip = ideal_twin(PIPELINED)
    assert all(twin_chip.formats[c].kind == "float" for c in twin_chip.formats)
    t = twin_chip.timing
    assert (t.cost_latency, t.broadcast_latency, t.layer_pipelining) == (0, 0, False)
    report = twin(PIPELINED, seed=2, cycles=20_000, check_every=5_000)
    by = {d.register: d for d in report.registers}
    # Pipelining delays the output by a cycle: it differs from the first cycle on.
    assert by["output"].first_cycle == 1
    assert by["layer0.weight"].first_cycle is not None
    # Quantised perturbation codes stay within one LSB of the ideal ones.
    assert by["layer0.weight_perturbation"].first_cycle is None
    assert by["layer0.weight_perturbation"].max_abs <= by["layer0.weight_perturbation"].tolerance
    # Checks double (1, 2, 4, ...), then come every check_every: a departure is
    # located between the last check that agreed and the first that did not.
    assert report.checks[:4] == [1, 2, 4, 8] and report.checks[-2:] == [15_000, 20_000]
    for d in report.registers:
        if d.first_cycle is not None:
            k = report.checks.index(d.first_cycle)
            assert d.last_same == (report.checks[k - 1] if k else 0)
    table = report.table()
    assert "diverges in cycles" in table
    w = by["layer0.weight"]
    row = next(line for line in table.splitlines() if line.startswith("layer0.weight "))
    span = f"{w.first_cycle:,}" if w.first_cycle - w.last_same == 1 else f"{w.last_same + 1:,}-{w.first_cycle:,}"
    assert row.split()[2] == span
    json.dumps(report.to_json())
