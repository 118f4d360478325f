"""Pictures of a run, drawn from its trace alone, and of a comparison.

plot_trace: cost and test accuracy over cycles; weight and bias trajectories;
and, when the integrators were probed with the weights, the chip's gradient
estimate against the exact gradient (reference backpropagation on the
recorded weights, over the training set). Every x axis is in cycles, with
chip time (from `timing.clock_hz`) on a secondary axis.

Memory is bounded whatever the length of the run: a drawn signal is read
decimated (every k-th sample, at most MAX_SAMPLES samples and
MAX_SIGNAL_BYTES of values), and the gradient panels look up their <= 200
cycles in each signal's cycle numbers 262,144 at a time (2 MB), then read
only those samples. The image is written by safe_io (a temporary file renamed on
success).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from . import reference  # noqa: E402
from .tasks import make_task  # noqa: E402
from .trace import Trace, TraceError  # noqa: E402

MAX_LINES = 40  # trajectories drawn per panel; more become unreadable
MAX_SAMPLES = 20_000          # samples drawn per signal (a plot is ~1000 pixels wide)
MAX_SIGNAL_BYTES = 16 << 20   # values read per drawn signal
# The image formats a plot can be saved in, by file suffix (png, pdf, svg, ...).
IMAGE_FORMATS = sorted(FigureCanvasBase.get_supported_filetypes())


def image_format(out) -> str:
    """The image format of file `out`, from its suffix; ValueError naming the
    allowed suffixes when there is none or it is not one matplotlib writes."""
    fmt = Path(out).suffix[1:].lower()
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"{out}: not an image file name (allowed suffixes: "
                         f"{', '.join('.' + f for f in IMAGE_FORMATS)})")
    return fmt


def _save(fig, out: Path, inputs=()) -> Path:
    """Save to exactly `out` (matplotlib would add .png to a name without a
    suffix), through a temporary file renamed on success; never over an input."""
    from .safe_io import output

    fmt = image_format(out)
    try:
        with output(out, inputs) as tmp:
            fig.savefig(tmp, dpi=110, format=fmt)
    finally:
        plt.close(fig)
    return out


def _drawn(sig):
    """The signal decimated to what a plot draws (memory bound: module docstring)."""
    per = max(1, int(np.prod(sig.shape)) * 8)
    return sig.decimated(max(2, min(MAX_SAMPLES, MAX_SIGNAL_BYTES // per)))


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


def _cycle_label(v, _pos=None) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.4g}{suffix}"
    return f"{v:.4g}"


def _cycles_axis(ax, last_cycle: float | None = None) -> None:
    """x axis in clock cycles; with last_cycle, the whole run [0, last_cycle]
    (and a margin, so points at either end show whole), so every panel of a
    figure shows the same span."""
    ax.set_xlabel("cycle")
    ax.xaxis.set_major_formatter(FuncFormatter(_cycle_label))  # 20k, 1.5M: no offset text
    if last_cycle is not None:
        ax.set_xlim(-0.015 * last_cycle, 1.015 * last_cycle)
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
        if s.shape != s.register_shape:
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
    integ = [n for n in trace.signals if n.endswith("_integrator") and _any_nonzero(trace.signal(n))]
    sigs = params + [trace.signal(n) for n in integ]
    source = "integrator" if integ else "update"
    # At most 200 points: each needs a backpropagation over the training set.
    # Candidates: evenly spaced samples of the sparsest signal (and, for
    # "update", the sample after each), kept where every signal has them.
    first = min(sigs, key=lambda s: s.count)  # the sparsest: its samples are the likeliest common
    if first.count < (1 if integ else 2):
        return None
    idx = np.unique(np.linspace(0, first.count - (1 if integ else 2), min(first.count, 200)).astype(int))
    with trace._open() as f:
        fc = f["signals"][first.name]["cycles"]
        cand = fc[idx]
        succ = fc[np.minimum(idx + 1, first.count - 1)] if not integ else cand
    wanted = np.unique(np.concatenate([cand, succ]))
    found = {s.name: _find_cycles(s, wanted) for s in sigs}
    ok = np.ones(wanted.size, bool)
    for pos in found.values():
        ok &= pos >= 0
    present = set(wanted[ok].tolist())
    keep = [i for i, (c, c2) in enumerate(zip(cand, succ)) if int(c) in present and int(c2) in present]
    if not keep:
        return None
    cycles, nexts = cand[keep], succ[keep]
    rows = {}
    with trace._open() as f:  # the needed samples of each signal, in one read per signal
        for s in sigs:
            pos = found[s.name]
            sel = np.flatnonzero(pos >= 0)
            data = f["signals"][s.name]["data"][pos[sel]] if sel.size else None
            rows[s.name] = {int(wanted[j]): data[k] for k, j in enumerate(sel)}
    try:   # the exact gradient needs the training data; without its file, no gradient panel
        chip = trace.data_chip("the gradient panel")
    except TraceError:
        return None
    task = make_task(chip.task.name, **chip.task_params())
    X, Y = task.train.inputs, task.train.targets
    w_sigs, b_sigs = params[:n_layers], params[n_layers:]

    def at(sig, c):
        data = rows[sig.name][int(c)]
        if sig.format is not None and sig.format.is_fixed:
            return np.ldexp(data.astype(np.float64), -sig.format.frac_bits)
        return data.astype(np.float64)

    out_c, cos, last = [], [], None
    for k in range(len(cycles)):
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
            c2 = nexts[k]
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


def _any_nonzero(sig, block_bytes: int = 4 << 20) -> bool:
    """Whether any sample of `sig` is nonzero, read in blocks of ~4 MB."""
    rows = max(1, block_bytes // max(1, int(np.prod(sig.shape)) * 8))
    for a in range(0, sig.count, rows):
        if np.any(sig.read(a, min(sig.count, a + rows))[1]):
            return True
    return False


def _find_cycles(sig, wanted: np.ndarray, block: int = 1 << 18) -> np.ndarray:
    """The sample index of each wanted cycle in `sig` (-1 where it has none),
    reading its cycle numbers in blocks (2 MB at a time)."""
    out = np.full(wanted.size, -1, dtype=np.int64)
    for a in range(0, sig.count, block):
        c = sig.read_cycles(a, min(sig.count, a + block))
        pos = np.searchsorted(c, wanted)
        hit = (pos < c.size) & (c[np.minimum(pos, c.size - 1)] == wanted)
        out[hit] = a + pos[hit]
    return out


def panel_layout(trace: Trace, grad="compute") -> list[list[str]]:
    """The panels plot_trace draws, row by row: each only when the trace
    holds what it shows, so no panel is empty. Rows: cost | accuracy,
    weights | biases, gradient | gradient_scatter."""
    if isinstance(grad, str):
        grad = gradient_alignment(trace)
    n_layers = len(trace.chip.layer_sizes) - 1
    evaluated = len(trace.evaluation[0]) > 0
    has = {"cost": "cost" in trace.signals or evaluated, "accuracy": evaluated,
           "weights": any(f"layer{i}.weight" in trace.signals for i in range(n_layers)),
           "biases": any(f"layer{i}.bias" in trace.signals for i in range(n_layers)),
           "gradient": grad is not None, "gradient_scatter": grad is not None}
    rows = [["cost", "accuracy"], ["weights", "biases"], ["gradient", "gradient_scatter"]]
    return [r for r in ([p for p in row if has[p]] for row in rows) if r]


def plot_trace(trace: Trace, out, inputs=()) -> Path:
    """Draw the trace's run into `out` (PNG, or any suffix in IMAGE_FORMATS);
    returns the path.

    Panels (see panel_layout), two to a row, each only when the trace holds
    what it shows; a row with one panel spans the width: cost | test
    accuracy; weights | biases; gradient estimate vs exact over the run | at
    the last check. A trace with none of them gives a figure saying what to
    probe."""
    out = Path(out)
    image_format(out)
    inputs = [trace.path, *inputs]
    chip = trace.chip
    hz = chip.timing.clock_hz
    last = max(trace.cycles_completed + int(trace.attrs.get("start_cycle", 0)), 1)
    grad = gradient_alignment(trace)
    n_layers = len(chip.layer_sizes) - 1
    ev_c, ev_cost, ev_acc = trace.evaluation
    weights = [n for n in (f"layer{i}.weight" for i in range(n_layers)) if n in trace.signals]
    biases = [n for n in (f"layer{i}.bias" for i in range(n_layers)) if n in trace.signals]

    def cost_panel(ax):
        if "cost" in trace.signals:
            sig = _drawn(trace.signal("cost"))
            c, v = sig.cycles, sig.values
            every = f", every {sig.decimation:,}th" if sig.decimation > 1 else ""
            ax.plot(c, v, lw=0.4, color="0.7", label=f"cost C, per measurement{every}")
            n = max(1, c.size // 100)
            ax.plot(c, _moving_mean(v, n), lw=1.2, color="C0", label=f"moving mean ({n} samples)")
        if len(ev_c):
            ax.plot(ev_c, ev_cost, "o-", ms=3, color="C3", label="test cost (unperturbed)")
        ax.set_ylabel(f"cost ({chip.cost.function})")
        ax.set_title("cost" if "cost" in trace.signals else "test cost (probe `cost` for the chip's own)",
                     fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
        _time_axes(ax)

    def accuracy_panel(ax):
        ax.plot(ev_c, ev_acc, "o-", ms=3, color="C2", label="test accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_ylabel("accuracy (fraction of test samples)")
        ax.set_title("test accuracy (unperturbed network)", fontsize=10)
        _time_axes(ax)

    def trajectory_panel(names, kind):
        def draw(ax):
            drawn = total = 0
            for k, n in enumerate(names):
                sig = _drawn(trace.signal(n))
                v = sig.values.reshape(sig.cycles.size, -1)
                total += v.shape[1]
                keep = max(0, min(v.shape[1], MAX_LINES - drawn))
                for j in range(keep):
                    ax.plot(sig.cycles, v[:, j], lw=0.8, color=f"C{k}", alpha=0.8, label=n if j == 0 else None)
                drawn += keep
            fmt = trace.signal(names[0]).format
            limits = fmt is not None and fmt.is_fixed
            if limits:
                for lim in (fmt.min_value, fmt.max_value):
                    ax.axhline(lim, color="k", ls=":", lw=0.8,
                               label=f"format range ({fmt.describe().split()[0]})" if lim == fmt.min_value else None)
            more = f" ({drawn} of {total} drawn)" if drawn < total else ""
            ax.set_title(f"{kind} theta{more}", fontsize=10)
            ax.set_ylabel(f"{kind[:-1] if kind == 'weights' else 'bias'} value")
            ax.legend(fontsize=7, loc="best", ncol=2)
            _time_axes(ax)
        return draw

    def cosine_panel(ax):
        source, gc, cos, est, ex = grad
        what = "integrator G" if source == "integrator" else "update -dtheta"
        ax.plot(gc, cos, ".", ms=3, color="C4", label=f"cos({what}, exact gradient)")
        n = max(1, gc.size // 20)
        ax.plot(gc, _moving_mean(cos, n), color="C4", lw=1.2, label=f"moving mean ({n} samples)")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel("cosine similarity")
        ax.set_title(f"gradient estimate ({what}) vs exact gradient (backprop, training set)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        _time_axes(ax)

    def scatter_panel(ax):
        source, gc, cos, est, ex = grad
        what = "integrator G" if source == "integrator" else "update -dtheta"
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

    def _time_axes(ax):
        _cycles_axis(ax, last)
        _chip_time_axis(ax, hz, last)

    draw = {"cost": cost_panel, "accuracy": accuracy_panel, "weights": trajectory_panel(weights, "weights"),
            "biases": trajectory_panel(biases, "biases"), "gradient": cosine_panel,
            "gradient_scatter": scatter_panel}
    rows = [[draw[name] for name in row] for row in panel_layout(trace, grad)]
    status = trace.status
    title = (f"{trace.attrs['chip_name']}: seed {trace.seed}, task {trace.attrs['task']}, "
             f"{trace.cycles_completed:,} cycles ({status})")
    if not rows:  # nothing this plot draws was recorded: say what to probe
        fig = plt.figure(figsize=(8, 2.4), layout="constrained")
        fig.suptitle(title, fontsize=11)
        fig.text(0.5, 0.45, "this trace records none of cost, weights, biases or evaluations:\n"
                 "probe them, e.g. --probe cost --probe layer0.weight, and evaluate with --eval-every",
                 ha="center", va="center", fontsize=10)
        return _save(fig, out, inputs)
    fig = plt.figure(figsize=(11, 3.6 * len(rows) + 0.6), layout="constrained")
    gs = fig.add_gridspec(len(rows), 2)
    fig.suptitle(title, fontsize=11)
    for r, row in enumerate(rows):
        for col, panel in enumerate(row):
            panel(fig.add_subplot(gs[r, col] if len(row) == 2 else gs[r, :]))
    return _save(fig, out, inputs)


def plot_compare(result, out) -> Path:
    """Accuracy and test cost over cycles of each design point of a
    `study.Comparison`: the mean over seeds, with the seeds' range shaded."""
    out = Path(out)
    image_format(out)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    clocks = {chip.timing.clock_hz for chip in result.chips}
    several = len(result.seeds) > 1
    for k, label in enumerate(result.labels):
        runs = result.runs[label]
        c = runs[0].cycles
        for ax, key in zip(axes, ("accuracy", "cost")):
            ys = np.array([getattr(r, key) for r in runs])
            ax.plot(c, ys.mean(axis=0), color=f"C{k}", lw=1.5, label=label)
            if several:
                ax.fill_between(c, ys.min(axis=0), ys.max(axis=0), color=f"C{k}", alpha=0.15, lw=0)
    how = "line: mean over seeds; band: min-max" if several else f"seed {result.seeds[0]}"
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("test accuracy (fraction of test samples)")
    axes[0].set_title(f"test accuracy ({how})", fontsize=10)
    axes[1].set_ylabel("test cost")
    axes[1].set_yscale("log")
    # plain numbers (0.3, not 3x10^-1); minor ticks labelled only when about a decade is in view
    narrow = lambda: np.log10(max(axes[1].get_ylim()) / max(min(axes[1].get_ylim()), 1e-300)) < 1.2
    axes[1].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axes[1].yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}" if narrow() else ""))
    axes[1].set_title(f"test cost, unperturbed network ({how})", fontsize=10)
    for ax in axes:
        _cycles_axis(ax, result.cycles)
        if len(clocks) == 1:
            _chip_time_axis(ax, next(iter(clocks)), result.cycles)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{len(result.labels)} design points, seed{'s' if several else ''} "
                 f"{', '.join(map(str, result.seeds))}, "
                 f"evaluated every {result.eval_every:,} cycles", fontsize=11)
    return _save(fig, out)
