"""Pictures of a run, drawn from its trace alone, and of a comparison.

plot_trace: cost and test accuracy over cycles; weight and bias trajectories;
and, when the integrators were probed with the weights, the chip's gradient
estimate against the exact gradient (reference backpropagation on the
recorded weights, over the training set). Every x axis is in cycles, with
chip time (from `timing.clock_hz`) on a secondary axis.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import reference  # noqa: E402
from .tasks import make_task  # noqa: E402
from .trace import Trace  # noqa: E402

MAX_LINES = 40  # trajectories drawn per panel; more become unreadable


def _time_unit(seconds: float) -> tuple[str, float]:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return unit, scale
    return "ns", 1e-9


def _chip_time_axis(ax, clock_hz: float, last_cycle: float) -> None:
    unit, scale = _time_unit(max(last_cycle, 1) / clock_hz)
    k = 1.0 / (clock_hz * scale)
    top = ax.secondary_xaxis("top", functions=(lambda c: c * k, lambda t: t / k))
    top.set_xlabel(f"chip time ({unit}) at {clock_hz:.3g} Hz", fontsize=8)
    top.tick_params(labelsize=7)


def _cycles_axis(ax) -> None:
    ax.set_xlabel("cycle")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    ax.grid(alpha=0.3)


def _moving_mean(y: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or y.size < n:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = (c[n:] - c[:-n]) / n
    return np.concatenate([np.full(n - 1, np.nan), out])


def _parameter_signals(trace: Trace, n_layers: int) -> list | None:
    """Every layer's whole weight (then bias) signal; None if one is missing or subset."""
    names = [f"layer{i}.weight" for i in range(n_layers)]
    if trace.chip.network.bias:
        names += [f"layer{i}.bias" for i in range(n_layers)]
    sigs = []
    for n in names:
        if n not in trace.signals:
            return None
        s = trace.signal(n)
        if s.data.shape[1:] != s.register_shape:
            return None  # an index subset: the exact gradient needs every parameter
        sigs.append(s)
    return sigs


def gradient_alignment(trace: Trace):
    """The chip's gradient estimate against the exact gradient over the run.

    Returns (source, cycles, cosine, estimate, exact) or None when the trace
    lacks what it needs. source "integrator": the probed integrators G at the
    cycles the weights were sampled too (samples with G just cleared are
    skipped). source "update": with tau_theta = 1 the integrators clear every
    cycle, so the estimate is the update the chip applied between two weight
    samples, -(theta(c2) - theta(c1)), against the exact gradient at c1.
    estimate/exact: the last point, flattened."""
    chip = trace.chip
    n_layers = len(chip.layer_sizes) - 1
    params = _parameter_signals(trace, n_layers)
    if params is None:
        return None
    integ = [n for n in trace.signals if n.endswith("_integrator") and np.any(trace.signal(n).data)]
    common = set(params[0].cycles.tolist())
    for s in params[1:] + [trace.signal(n) for n in integ]:
        common &= set(s.cycles.tolist())
    cycles = np.array(sorted(common))
    source = "integrator" if integ else "update"
    if cycles.size < (1 if integ else 2):
        return None
    # At most 200 points: each needs a backpropagation over the training set.
    pick = np.unique(np.linspace(0, cycles.size - (1 if integ else 2), min(cycles.size, 200)).astype(int))
    task = make_task(chip.task.name, **chip.task_params())
    X, Y = task.train.inputs, task.train.targets
    w_sigs, b_sigs = params[:n_layers], params[n_layers:]

    def at(sig, c):
        return sig.values[np.searchsorted(sig.cycles, c)]

    out_c, cos, last = [], [], None
    for k in pick:
        c = cycles[k]
        W = [at(s, c) for s in w_sigs]
        b = [at(s, c) for s in b_sigs] if b_sigs else [np.zeros(s.register_shape[0]) for s in w_sigs]
        dW, db = reference.exact_gradient(chip, W, b, X, Y)
        if integ:
            est, ex = [], []
            for n in integ:
                s = trace.signal(n)
                layer = int(n[len("layer"):n.index(".")])
                g = dW[layer] if n.endswith("weight_integrator") else db[layer]
                est.append(np.ravel(at(s, c)))
                ex.append(np.ravel(g)[s.elements.astype(int).ravel()])
            est, ex = np.concatenate(est), np.concatenate(ex)
        else:
            c2 = cycles[k + 1]
            est = np.concatenate([np.ravel(at(s, c) - at(s, c2)) for s in params])
            ex = np.concatenate([np.ravel(g) for g in dW] + ([np.ravel(g) for g in db] if b_sigs else []))
        ne, nx = np.linalg.norm(est), np.linalg.norm(ex)
        if ne == 0 or nx == 0:
            continue  # integrators just cleared, no update, or a stationary point
        out_c.append(c)
        cos.append(float(est @ ex / (ne * nx)))
        last = (est, ex)
    if not out_c:
        return None
    return source, np.array(out_c), np.array(cos), last[0], last[1]


def plot_trace(trace: Trace, out) -> Path:
    """Draw the trace's run into `out` (PNG); returns the path."""
    out = Path(out)
    chip = trace.chip
    hz = chip.timing.clock_hz
    last = max(trace.cycles_completed, 1)
    grad = gradient_alignment(trace)
    n_layers = len(chip.layer_sizes) - 1
    traj = [n for n in (*[f"layer{i}.weight" for i in range(n_layers)], *[f"layer{i}.bias" for i in range(n_layers)])
            if n in trace.signals]
    rows = 1 + (1 if traj else 0) + (1 if grad is not None else 0)
    fig = plt.figure(figsize=(11, 3.6 * rows + 0.6), layout="constrained")
    gs = fig.add_gridspec(rows, 2)
    status = "complete" if trace.complete else f"INCOMPLETE ({trace.attrs.get('end_reason', '')})"
    fig.suptitle(f"{trace.attrs['chip_name']}: seed {trace.seed}, task {trace.attrs['task']}, "
                 f"{trace.cycles_completed:,} cycles ({status})", fontsize=11)

    # Row 1: the cost the chip measured, and the test evaluation.
    ax = fig.add_subplot(gs[0, 0])
    if "cost" in trace.signals:
        c, v = trace.values("cost")
        ax.plot(c, v, lw=0.4, color="0.7", label="cost C, per measurement")
        n = max(1, c.size // 100)
        ax.plot(c, _moving_mean(v, n), lw=1.2, color="C0", label=f"moving mean ({n} samples)")
    ev_c, ev_cost, ev_acc = trace.evaluation
    if len(ev_c):
        ax.plot(ev_c, ev_cost, "o-", ms=3, color="C3", label="test cost (unperturbed)")
    ax.set_ylabel(f"cost ({chip.cost.function})")
    ax.set_title("cost", fontsize=10)
    if ax.has_data():
        ax.legend(fontsize=7, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no cost recorded: probe `cost`", ha="center", va="center", transform=ax.transAxes)
    _cycles_axis(ax)
    _chip_time_axis(ax, hz, last)

    ax = fig.add_subplot(gs[0, 1])
    if len(ev_c):
        ax.plot(ev_c, ev_acc, "o-", ms=3, color="C2", label="test accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no evaluation recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("accuracy")
    ax.set_title("test accuracy (unperturbed network)", fontsize=10)
    _cycles_axis(ax)
    _chip_time_axis(ax, hz, last)

    row = 1
    if traj:
        groups = [[n for n in traj if n.endswith(".weight")], [n for n in traj if n.endswith(".bias")]]
        for col, names in enumerate(groups):
            ax = fig.add_subplot(gs[row, col])
            drawn = total = 0
            for k, n in enumerate(names):
                s = trace.signal(n)
                v = s.values.reshape(s.cycles.size, -1)
                total += v.shape[1]
                keep = max(0, min(v.shape[1], MAX_LINES - drawn))
                for j in range(keep):
                    ax.plot(s.cycles, v[:, j], lw=0.8, color=f"C{k}", alpha=0.8,
                            label=n if j == 0 else None)
                drawn += keep
                fmt = s.format
                if fmt is not None and fmt.is_fixed and k == 0:
                    for lim in (fmt.min_value, fmt.max_value):
                        ax.axhline(lim, color="k", ls=":", lw=0.8)
            kind = "weights" if col == 0 else "biases"
            more = f" ({drawn} of {total} drawn)" if drawn < total else ""
            ax.set_title(f"{kind} theta{more}; dotted: format range", fontsize=10)
            ax.set_ylabel("weight value" if col == 0 else "bias value")
            if names:
                ax.legend(fontsize=7, loc="upper left")
            else:
                ax.text(0.5, 0.5, f"no {kind} recorded", ha="center", va="center", transform=ax.transAxes)
            _cycles_axis(ax)
            _chip_time_axis(ax, hz, last)
        row += 1

    if grad is not None:
        source, gc, cos, est, ex = grad
        what = "integrator G" if source == "integrator" else "update -dtheta"
        ax = fig.add_subplot(gs[row, 0])
        ax.plot(gc, cos, ".", ms=3, color="C4", label=f"cos({what}, exact gradient)")
        n = max(1, gc.size // 20)
        ax.plot(gc, _moving_mean(cos, n), color="C4", lw=1.2, label=f"moving mean ({n} samples)")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel("cosine similarity")
        ax.set_title(f"gradient estimate ({what}) vs exact gradient (backprop, training set)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        _cycles_axis(ax)
        _chip_time_axis(ax, hz, last)

        ax = fig.add_subplot(gs[row, 1])
        x, y = ex / np.linalg.norm(ex), est / np.linalg.norm(est)
        ax.scatter(x, y, s=10, color="C4", alpha=0.7, label=f"{x.size} components")
        lim = 1.05 * max(np.max(np.abs(x)), np.max(np.abs(y)))
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8, label="estimate = exact")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("exact gradient component / its norm")
        ax.set_ylabel(f"{what} component / its norm")
        ax.set_title(f"at cycle {int(gc[-1]):,}: cos = {cos[-1]:.3f}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_compare(result, out) -> Path:
    """Accuracy and test cost over cycles of each design point of a
    `study.Comparison`: the mean over seeds, with the seeds' range shaded."""
    out = Path(out)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    clocks = {chip.timing.clock_hz for chip in result.chips}
    for k, label in enumerate(result.labels):
        runs = result.runs[label]
        c = runs[0].cycles
        for ax, key in zip(axes, ("accuracy", "cost")):
            ys = np.array([getattr(r, key) for r in runs])
            ax.plot(c, ys.mean(axis=0), color=f"C{k}", lw=1.5, label=label)
            if len(runs) > 1:
                ax.fill_between(c, ys.min(axis=0), ys.max(axis=0), color=f"C{k}", alpha=0.15, lw=0)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("test accuracy")
    axes[0].set_title("accuracy (line: mean over seeds; band: min-max)", fontsize=10)
    axes[1].set_ylabel("test cost")
    axes[1].set_yscale("log")
    axes[1].set_title("test cost (unperturbed network)", fontsize=10)
    for ax in axes:
        _cycles_axis(ax)
        if len(clocks) == 1:
            _chip_time_axis(ax, next(iter(clocks)), result.cycles)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{len(result.labels)} design points, seeds {', '.join(map(str, result.seeds))}", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
