"""Pictures of a study's results, chosen by the shape of its grid.

- no grid (seeds only): test accuracy over cycles, one line per seed;
- one key: cycles to the target and final accuracy against the key (median
  over seeds, band from the lowest to the highest seed);
- two keys: heatmaps of the median cycles to the target and of the fraction
  of seeds that reached it;
- three or more: the first key on the x axis, one line per combination of
  the others;
- and whenever the points differ in parameter count P: median cycles to the
  target against P, log-log, with the fitted slope and a linear-in-P guide.

A run that did not reach the target counts as never reaching it (infinitely
many cycles): a median is shown only where more than half the seeds reached it.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

MAX_LINES = 12


def _cycles(v, _pos=None) -> str:
    """20k, 1.5M: cycle counts short."""
    if not np.isfinite(v):
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def summarize(ds, target: float | None = None) -> dict:
    """Per grid point, over seeds: median cycles to `target` (inf: fewer than
    half reached it; NaN: no run succeeded), lowest and highest among the seeds
    that reached it, fraction of successful runs that reached it, and median,
    lowest and highest final accuracy. Arrays shaped like the grid."""
    targets = [float(t) for t in ds["target"].values]
    if target is None:
        target = max(targets)
    if target not in targets:
        shown = ", ".join(f"{t:g}" for t in targets)
        raise ValueError(f"target {target:g} is not one of the study's targets ({shown})")
    c = ds["cycles_to_target"].sel(target=target).values      # (*grid, seed)
    ok = ds["status"].values == "ok"
    with np.errstate(invalid="ignore"):
        counted = np.where(ok, np.where(np.isnan(c), np.inf, c), np.nan)
        n_ok = ok.sum(axis=-1)
        reached = (ok & ~np.isnan(c)).sum(axis=-1)
        median = _nanmedian(counted)
        lo = np.where(reached > 0, np.nanmin(np.where(np.isnan(c), np.inf, c), axis=-1), np.nan)
        hi = np.where(reached > 0, np.nanmax(np.where(np.isnan(c), -np.inf, c), axis=-1), np.nan)
        frac = np.where(n_ok > 0, reached / np.maximum(n_ok, 1), np.nan)
        acc = ds["final_accuracy"].values
        amed = _nanmedian(acc)
        alo = np.where(n_ok > 0, np.nanmin(np.where(ok, acc, np.inf), axis=-1), np.nan)
        ahi = np.where(n_ok > 0, np.nanmax(np.where(ok, acc, -np.inf), axis=-1), np.nan)
    return {"target": target, "median": median, "lo": lo, "hi": hi, "fraction": frac, "n_ok": n_ok,
            "reached": reached, "acc_median": amed, "acc_lo": alo, "acc_hi": ahi}


def _nanmedian(a):
    """Median over the last axis ignoring NaN (inf counts); NaN where all are NaN."""
    out = np.full(a.shape[:-1], np.nan)
    for idx in np.ndindex(*a.shape[:-1]):
        v = a[idx]
        v = v[~np.isnan(v)]
        if v.size:
            out[idx] = np.median(v)
    return out


LONG_LABEL = 40   # characters: a dimension's values (or a zip group's keys) longer than this are named by index


def grid_dimensions(ds) -> list[str]:
    return json.loads(ds.attrs["grid_dimensions"])


def value_labels(name: str, keys, values) -> list[str]:
    """The labels of one grid dimension's values, as the plots and the
    summary table show them: each value (a zip group's values joined by
    " / ", with "-" for the perturbation keys of a backprop row, which does
    not perturb), or NAME[i] for every one when any would run past
    LONG_LABEL characters (a zip group of format tables, say)."""
    from ..spec import toml_literal

    trainer = list(keys).index("trainer") if "trainer" in keys else None
    labels = [" / ".join("-" if trainer is not None and row[trainer] == "backprop" and k.startswith("perturbation.")
                         else toml_literal(v) for k, v in zip(keys, row)) for row in values]
    if max(map(len, labels)) > LONG_LABEL:
        labels = [f"{name}[{i}]" for i in range(len(labels))]
    return labels


def point_label(name: str, label: str) -> str:
    """One dimension of a grid point: NAME=VALUE, or NAME[i] as it is."""
    return label if label.startswith(f"{name}[") else f"{name}={label}"


def _labels(ds, dim) -> tuple[list[str], np.ndarray | None]:
    """Tick labels of a grid dimension, and its numeric values when it has them."""
    study = json.loads(ds.attrs["study"])
    d = next(x for x in study["dimensions"] if x["name"] == dim)
    labels = value_labels(dim, d["keys"], d["values"])
    vals = None
    if len(d["keys"]) == 1 and all(isinstance(r[0], (int, float)) and not isinstance(r[0], bool) for r in d["values"]):
        vals = np.array([r[0] for r in d["values"]], dtype=float)
    return labels, vals


def _axis_name(ds, dim) -> str:
    study = json.loads(ds.attrs["study"])
    d = next(x for x in study["dimensions"] if x["name"] == dim)
    if d["keys"] == [dim]:
        return dim
    keys = " / ".join(d["keys"])
    return f"{dim}: {keys}" if len(keys) <= LONG_LABEL else f"{dim} (zip group of {len(d['keys'])} keys)"


def plot_results(ds, out, target: float | None = None) -> Path:
    """Draw the figure that fits the study's grid into `out` (any image suffix)."""
    s = summarize(ds, target)
    dims = grid_dimensions(ds)
    params = ds["n_parameters"].values
    distinct_p = np.unique(params[params > 0])
    panels = []
    if not dims:
        panels += ["curves"]
    elif len(dims) == 1:
        panels += ["line_cycles", "line_accuracy"]
    elif len(dims) == 2:
        panels += ["heat_cycles", "heat_fraction"]
    else:
        panels += ["lines_cycles", "lines_accuracy"]
    if distinct_p.size >= 2:
        panels.append("loglog")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.6), squeeze=False)
    t = s["target"]
    for ax, kind in zip(axes[0], panels):
        if kind == "curves":
            _curves(ax, ds)
        elif kind == "line_cycles":
            _line(ax, ds, dims[0], s["median"], s["lo"], s["hi"], f"cycles to accuracy {t:g}", log=True,
                  fraction=s["fraction"])
        elif kind == "line_accuracy":
            _line(ax, ds, dims[0], s["acc_median"], s["acc_lo"], s["acc_hi"], "final test accuracy")
        elif kind == "heat_cycles":
            _heat(ax, ds, dims, s["median"], f"median cycles to accuracy {t:g}", cycles=True)
        elif kind == "heat_fraction":
            _heat(ax, ds, dims, s["fraction"], f"fraction of seeds reaching {t:g}", counts=(s["reached"], s["n_ok"]))
        elif kind == "lines_cycles":
            _lines(ax, ds, dims, s["median"], f"median cycles to accuracy {t:g}", log=True)
        elif kind == "lines_accuracy":
            _lines(ax, ds, dims, s["acc_median"], "median final test accuracy")
        elif kind == "loglog":
            _loglog(ax, ds, params, s["median"], t)
        if kind in ("line_cycles", "lines_cycles", "loglog") and not np.isfinite(s["median"]).any():
            ax.text(0.5, 0.5, f"no grid point reached accuracy {t:g}\non more than half of its seeds",
                    ha="center", va="center", transform=ax.transAxes, color="0.3")
    name = ds.attrs.get("study_name", "study")
    n_seeds = ds.sizes["seed"]
    fig.suptitle(f"{name}: {ds.attrs.get('runs_ok', '?')} of {ds.attrs.get('runs', '?')} runs ok, "
                 f"{n_seeds} seed(s), cap {int(ds.attrs.get('cycles_cap', 0)):,} cycles"
                 + ("" if ds.attrs.get("complete", 1) else "  (incomplete)"), fontsize=11)
    return save_figure(fig, out, dpi=120)


def save_figure(fig, out, dpi: int) -> Path:
    """Lay `fig` out, write it to `out` (creating its folder) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _curves(ax, ds):
    cyc = ds["cycle"].values
    for k, seed in enumerate(ds["seed"].values):
        ax.plot(cyc, ds["accuracy"].values[k], marker=".", label=f"seed {seed}")
    ax.set_xlabel("cycle")
    ax.set_ylabel("test accuracy")
    ax.xaxis.set_major_formatter(FuncFormatter(_cycles))
    ax.legend(fontsize=8)


def _line(ax, ds, dim, med, lo, hi, ylabel, log=False, fraction=None):
    labels, vals = _labels(ds, dim)
    x = vals if vals is not None else np.arange(len(labels), dtype=float)
    finite = np.isfinite(med)
    ax.plot(x[finite], med[finite], marker="o", label="median over seeds")
    band = np.isfinite(lo) & np.isfinite(hi)
    # cycles to a target: the range over the seeds that reached it (the others are counted by "% reached")
    ax.fill_between(x, np.where(band, lo, np.nan), np.where(band, hi, np.nan), alpha=0.25,
                    label="seed range" if fraction is None else "range of the seeds that reached it")
    if fraction is not None:
        for xi, m, f in zip(x, med, fraction):
            if np.isfinite(f) and f < 1:
                y = m if np.isfinite(m) else (np.nanmax(hi) if np.isfinite(hi).any() else 1)
                ax.annotate(f"{f:.0%} reached", (xi, y), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=7, color="C3")
    _mark_no_result(ax, ds, x)
    pad = 0.05 * (x.max() - x.min()) or 0.5   # every grid value on the axis, drawn or not
    ax.set_xlim(x.min() - pad, x.max() + pad)
    if vals is None:
        ax.set_xticks(x, labels, rotation=30 if max(map(len, labels)) > 6 else 0, ha="right" if
                      max(map(len, labels)) > 6 else "center", fontsize=8)
    ax.set_xlabel(_axis_name(ds, dim))
    ax.set_ylabel(ylabel)
    if log and np.isfinite(med).any() and np.nanmin(np.where(np.isfinite(med), med, np.nan)) > 0:
        ax.set_yscale("log")
        _log_labels(ax.yaxis, _cycles)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _no_result(ds) -> np.ndarray:
    """Per grid point: "" where a run succeeded, else "failed" (a run failed)
    or "not run" (none has run yet)."""
    status = ds["status"].values   # (*grid, seed)
    why = np.where((status == "failed").any(axis=-1), "failed", "not run")
    return np.where((status == "ok").any(axis=-1), "", why)


def _mark_no_result(ax, ds, x) -> None:
    """Write "failed" or "not run" at the foot of the axis for a point of a
    one-key grid without a successful run, which has no value to draw."""
    for xi, why in zip(x, _no_result(ds)):
        if why:
            colour = "C3" if why == "failed" else "0.4"
            ax.axvline(xi, color=colour, linestyle=":", linewidth=1)   # also keeps the point in the x range
            ax.annotate(why, (xi, 0.03), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                        fontsize=8, color=colour, backgroundcolor="w")


def _heat(ax, ds, dims, values, title, cycles=False, counts=None):
    ylabels, _ = _labels(ds, dims[0])
    xlabels, _ = _labels(ds, dims[1])
    v = np.array(values, dtype=float)
    shown = np.where(np.isfinite(v), v, np.nan)
    ax.set_facecolor("0.85")
    if cycles:
        pos = shown[np.isfinite(shown) & (shown > 0)]
        norm = LogNorm(vmin=pos.min(), vmax=max(pos.max(), pos.min() * 1.01)) if pos.size else None
        im = ax.imshow(np.where(shown > 0, shown, np.nan), cmap="viridis_r", norm=norm, aspect="auto")
        cb = ax.figure.colorbar(im, ax=ax)
        if norm is not None and pos.min() == pos.max():
            cb.set_ticks([pos.min()])
        elif norm is not None:
            cb.set_ticks(np.unique(np.round(np.geomspace(norm.vmin, norm.vmax, 5), -3) + 0.0) if norm.vmin >= 1e3
                         else np.geomspace(norm.vmin, norm.vmax, 5))
            cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        cb.ax.yaxis.set_major_formatter(FuncFormatter(_cycles))
    else:
        im = ax.imshow(shown, cmap="magma", vmin=0, vmax=1, aspect="auto")
        ax.figure.colorbar(im, ax=ax)
    no_run = _no_result(ds)
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            if cycles:
                text = _cycles(v[i, j]) if np.isfinite(v[i, j]) else ("not\nreached" if np.isinf(v[i, j]) else
                                                                      no_run[i, j])
            else:
                text = f"{counts[0][i, j]}/{counts[1][i, j]}" if counts[1][i, j] else no_run[i, j]
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=_ink(im, v[i, j]))
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=8)
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=8)
    ax.set_ylabel(_axis_name(ds, dims[0]))
    ax.set_xlabel(_axis_name(ds, dims[1]))
    ax.set_title(title, fontsize=10)


def _ink(im, value) -> str:
    """Black or white, whichever reads on the cell's colour."""
    if not np.isfinite(value) or (im.norm is not None and isinstance(im.norm, LogNorm) and value <= 0):
        return "k"
    r, g, b, _ = im.cmap(im.norm(value))
    return "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"


def _lines(ax, ds, dims, values, ylabel, log=False):
    labels, vals = _labels(ds, dims[0])
    x = vals if vals is not None else np.arange(len(labels), dtype=float)
    rest = [(_labels(ds, d)[0], d) for d in dims[1:]]
    combos = list(np.ndindex(*(len(r[0]) for r in rest)))
    for n, combo in enumerate(combos[:MAX_LINES]):
        y = values[(slice(None), *combo)]
        label = ", ".join(point_label(d, r[i]) for (r, d), i in zip(rest, combo))
        ax.plot(x, np.where(np.isfinite(y), y, np.nan), color=f"C{n % 10}", marker=MARKERS[(n // 10) % len(MARKERS)],
                linestyle=LINESTYLES[(n // 10) % len(LINESTYLES)], label=label)   # 10 colours, then new markers
    if len(combos) > MAX_LINES:
        ax.text(0.01, 0.01, f"first {MAX_LINES} of {len(combos)} combinations", transform=ax.transAxes, fontsize=7)
    if vals is None:
        ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel(_axis_name(ds, dims[0]))
    ax.set_ylabel(ylabel)
    if log and np.isfinite(values).any():
        ax.set_yscale("log")
        _log_labels(ax.yaxis, _cycles)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _log_labels(axis, fmt) -> None:
    """Plain labels (20k, 1.5M) at 1, 1.5, 2, 3, 5 and 7 of each decade of a log axis
    (matplotlib's own labels a short range with 2x10^5 or not at all)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0), numticks=12))
    axis.set_major_formatter(FuncFormatter(fmt))
    axis.set_minor_formatter(NullFormatter())


def fit_slope(p, cycles) -> tuple[float, float] | None:
    """Least-squares slope and intercept of log10(cycles) on log10(P) over the
    points with a finite median (None: fewer than two distinct P)."""
    p, c = np.asarray(p, float).ravel(), np.asarray(cycles, float).ravel()
    keep = (p > 0) & np.isfinite(c) & (c > 0)
    if np.unique(p[keep]).size < 2:
        return None
    slope, intercept = np.polyfit(np.log10(p[keep]), np.log10(c[keep]), 1)
    return float(slope), float(intercept)


# Lines beyond the ten colours of the colour cycle take the next marker and line style.
MARKERS = "os^vDP*Xph"
LINESTYLES = ("-", "--", ":", "-.")


def _size_groups(ds, params) -> list[tuple[str, tuple]]:
    """The lines of a log-log panel: one per combination of the grid
    dimensions along which P does not change (a method, a format), each a
    (label, index into the grid) with slices along the dimensions that set P."""
    dims = grid_dimensions(ds)
    known = np.where(params > 0, params, np.nan)   # 0: a point without a successful run
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN slices
        sizes = [i for i in range(params.ndim) if params.shape[i] > 1
                 and np.any(np.nanmax(known, axis=i) > np.nanmin(known, axis=i))]   # NaN: False
    others = [i for i in range(params.ndim) if i not in sizes]
    groups = []
    for combo in np.ndindex(*(params.shape[i] for i in others)):
        index = [slice(None)] * params.ndim
        names = []
        for i, k in zip(others, combo):
            index[i] = k
            if params.shape[i] > 1:
                names.append(point_label(dims[i], _labels(ds, dims[i])[0][k]))
        groups.append((", ".join(names), tuple(index)))
    return groups


def _loglog(ax, ds, params, med, target):
    """Median cycles to the target against P, and a least-squares slope per
    line: points that differ in anything but size (a method, a format) are
    never fitted together."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    p_all, c_all = params.ravel().astype(float), med.ravel()
    keep_all = (p_all > 0) & np.isfinite(c_all) & (c_all > 0)
    groups = _size_groups(ds, params)
    fitted = False
    for n, (name, index) in enumerate(groups):
        p, c = params[index].ravel().astype(float), med[index].ravel()
        keep = (p > 0) & np.isfinite(c) & (c > 0)
        if not keep.any():
            continue
        colour, marker = f"C{n % 10}", MARKERS[(n // 10) % len(MARKERS)]
        fit = fit_slope(p, c)
        what = f"{name}: " if name else ""
        label = f"{what}slope {round(fit[0], 2) + 0.0:.2f}" if fit is not None else f"{what}one size reached it"
        ax.loglog(p[keep], c[keep], marker, color=colour, label=label if len(groups) > 1 else
                  "median over seeds, per point")
        if fit is not None:
            fitted = True
            slope, b = fit
            xs = np.geomspace(p[keep].min(), p[keep].max(), 50)
            ax.loglog(xs, 10 ** b * xs ** slope, "-", color=colour,
                      label=None if len(groups) > 1 else f"fit: slope {slope:.2f}")
    p, c = p_all[keep_all], c_all[keep_all]
    if fitted:
        xs = np.geomspace(p.min(), p.max(), 50)
        gm_p, gm_c = np.exp(np.mean(np.log(p))), np.exp(np.mean(np.log(c)))
        ax.loglog(xs, gm_c * xs / gm_p, "--", color="0.5", label="linear in P (slope 1)")
    elif keep_all.any():
        ax.text(0.5, 0.1, "fewer than two parameter counts reached it on any line: no fit", ha="center",
                transform=ax.transAxes, color="0.3", fontsize=8)
    keep = keep_all
    p = p_all
    ax.set_xlabel("parameters P")
    ax.set_ylabel(f"cycles to accuracy {target:g}")
    _log_labels(ax.yaxis, _cycles)
    ax.set_xticks(np.unique(p[keep]), [f"{v:g}" for v in np.unique(p[keep])])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
