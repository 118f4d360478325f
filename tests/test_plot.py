"""Plots drawn from a trace alone, and the gradient comparison behind them."""
from pathlib import Path

import numpy as np
import pytest

from mgd_emu import load_chip, reference
from mgd_emu.tasks import make_task
from mgd_emu.engine import Emulator
from mgd_emu.plot import IMAGE_FORMATS, gradient_alignment, panel_layout, plot_compare, plot_trace
from mgd_emu.study import compare
from mgd_emu.trace import TraceWriter, open_trace

ROOT = Path(__file__).resolve().parents[1]
XOR8 = load_chip(ROOT / "hw_models/xor_8bit.toml")
IDEAL = load_chip(ROOT / "hw_models/xor_ideal.toml")
WEIGHTS = ["layer0.weight", "layer1.weight", "layer0.bias", "layer1.bias"]


def record(path, chip, seed, cycles, probes, eval_every):
    emu = Emulator(chip, seed, probes=probes)
    with TraceWriter(path, emu, cycles) as w:
        while emu.cycle < cycles:
            emu.run(eval_every, sink=w)
            w.evaluation(emu.cycle, *emu.evaluate())
    return open_trace(path)


def exact_at_start(trace):
    """The exact gradient at the first recorded weights: weight grads then bias grads."""
    chip = trace.chip
    W = [trace.values(f"layer{i}.weight")[1][0] for i in range(2)]
    b = [trace.values(f"layer{i}.bias")[1][0] for i in range(2)]
    data = make_task(chip.task.name, **chip.task_params()).train
    dW, db = reference.exact_gradient(chip, W, b, data.inputs, data.targets)
    return dW + db


def is_png(path):
    return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_integrators_estimate_the_exact_gradient(tmp_path):
    # A float chip integrating 64 steps per update, with learning rate 0 so
    # the weights stay where the gradient is large: its integrators point
    # along the exact (backpropagated) gradient of the recorded weights.
    chip = IDEAL.replace({"timing.tau_theta": 64, "optimizer.learning_rate": 0.0})
    integ = [n.replace("weight", "weight_integrator").replace("bias", "bias_integrator") for n in WEIGHTS]
    t = record(tmp_path / "g.h5", chip, 1, 20_000, [p + " every=64 window=63:" for p in WEIGHTS + integ], 10_000)
    source, cycles, cos, est, exact = gradient_alignment(t)
    assert source == "integrator" and len(cycles) > 100
    assert np.median(cos) > 0.6  # one window: the exact gradient plus estimation noise
    # Averaged over every window the estimate is unbiased: it lines up with the exact gradient.
    mean_g = np.concatenate([t.values(n)[1].mean(axis=0).ravel() for n in integ])
    g = np.concatenate([x.ravel() for x in exact_at_start(t)])
    assert mean_g @ g / (np.linalg.norm(mean_g) * np.linalg.norm(g)) > 0.99
    # The same check against a wrong gradient fails: the comparison can tell.
    assert abs(float(est @ np.roll(exact, 1)) / (np.linalg.norm(est) * np.linalg.norm(exact))) < np.median(cos)


def test_with_tau_theta_1_the_estimate_is_the_applied_update(tmp_path):
    chip = IDEAL.replace({"optimizer.learning_rate": 0.02})
    t = record(tmp_path / "u.h5", chip, 1, 2_000, [p + " every=100" for p in WEIGHTS], 1_000)
    source, cycles, cos, _, _ = gradient_alignment(t)
    assert source == "update" and list(cycles) == list(range(0, 1_900, 100))
    assert np.median(cos) > 0.5


def test_a_trace_without_weights_has_no_gradient_panel_but_still_plots(tmp_path):
    t = record(tmp_path / "c.h5", XOR8, 0, 4_000, ["cost every=10"], 2_000)
    assert gradient_alignment(t) is None
    out = plot_trace(t, tmp_path / "c.png")
    assert is_png(out)


def test_plot_trace_draws_cost_accuracy_weights_and_gradients(tmp_path):
    t = record(tmp_path / "d.h5", XOR8, 1, 20_000, ["cost every=10"] + [p + " every=100" for p in WEIGHTS], 5_000)
    out = plot_trace(t, tmp_path / "d.png")
    assert is_png(out) and out.stat().st_size > 20_000


def test_plot_compare_draws_every_design_point(tmp_path):
    result = compare([("8-bit", XOR8), ("ideal", IDEAL)], [0, 1], 4_000, 2_000)
    out = plot_compare(result, tmp_path / "cmp.png")
    assert is_png(out)


def drawn_figures(monkeypatch):
    """Keep the figures plot_trace / plot_compare save, to look at their axes."""
    from mgd_emu import plot

    figs, save = [], plot._save

    def keep(fig, out, *inputs):
        figs.append(fig)
        return save(fig, out, *inputs)
    monkeypatch.setattr(plot, "_save", keep)
    return figs


def readable(ax):
    """A panel with data, a legend, a labelled cycle axis and chip time on top."""
    top = [c for c in ax.child_axes if "chip time" in c.get_xlabel()]
    return ax.has_data() and ax.get_legend() is not None and ax.get_xlabel() == "cycle" and ax.get_ylabel() and top


def test_only_recorded_signals_get_a_panel(tmp_path, monkeypatch):
    figs = drawn_figures(monkeypatch)
    t = record(tmp_path / "w.h5", XOR8, 0, 2_000, ["cost every=10", "layer0.weight every=10"], 1_000)
    assert panel_layout(t) == [["cost", "accuracy"], ["weights"]]  # no empty biases panel
    plot_trace(t, tmp_path / "w.png")
    axes = figs[-1].axes
    assert len(axes) == 3 and all(readable(ax) for ax in axes)
    # A row with one panel spans the figure; every panel shows the whole run.
    assert axes[2].get_position().width > 1.8 * axes[0].get_position().width
    assert all(ax.get_xlim()[0] <= 0 and ax.get_xlim()[1] >= 2_000 for ax in axes)
    t = record(tmp_path / "a.h5", XOR8, 0, 1_000, ["layer0.activation"], 1_000)
    assert panel_layout(t) == [["cost", "accuracy"]]  # the test cost stands in for the chip's own
    empty = Emulator(XOR8, 0, probes=["layer0.activation"])
    with TraceWriter(tmp_path / "e.h5", empty, 100) as w:
        empty.run(100, sink=w)
    assert panel_layout(open_trace(tmp_path / "e.h5")) == []
    assert is_png(plot_trace(open_trace(tmp_path / "e.h5"), tmp_path / "e.png"))  # a note on what to probe


def test_both_comparison_panels_have_legends_and_time_axes(tmp_path, monkeypatch):
    figs = drawn_figures(monkeypatch)
    result = compare([("8-bit", XOR8), ("ideal", IDEAL)], [0], 2_000, 1_000)
    plot_compare(result, tmp_path / "cmp.png")
    axes = figs[-1].axes
    assert len(axes) == 2 and all(readable(ax) for ax in axes)
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["8-bit", "ideal"]


def test_a_plot_is_written_to_exactly_the_path_asked_for(tmp_path):
    t = record(tmp_path / "c.h5", XOR8, 0, 1_000, ["cost"], 1_000)
    assert plot_trace(t, tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
    for bad in ("c", "c.foo"):  # matplotlib would write c.png, or fail late
        with pytest.raises(ValueError, match=r"allowed suffixes: .*\.png"):
            plot_trace(t, tmp_path / bad)
        assert not (tmp_path / bad).exists() and not (tmp_path / "c.png").exists()
    assert "png" in IMAGE_FORMATS and "svg" in IMAGE_FORMATS
