"""Scaling with network size: cycles to a target accuracy against the parameter count P.

For a study whose points differ in width (one grid dimension, `over`, along
which P changes) and in anything else (perturbation mode, number format,
optimizer, trainer: the other dimensions), each combination of the other
dimensions is one *line*: its cycles to the target at each width.

The slope of a line is the least-squares slope of log10(cycles) on log10(P).
It is fitted per seed, over the widths that seed reached the target at (a
seed needs MIN_POINTS of them, or all widths when there are fewer), and the
line's slope is the mean over the fitted seeds with its standard error
(sample standard deviation / sqrt(seeds); none with one seed). A seed that
missed the target at some widths is fitted on the rest, so such a slope is
marked: it leaves out the hardest points. The slope of the median curve (a
width counts when more than half of its seeds reached the target) is given
beside it.

    python -m mgd_emu.studies.scaling DIR --target 0.9 --panels number -o docs/images/x.png --table x.md
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .plot import _cycles, _labels, _log_labels, fit_slope, grid_dimensions, save_figure, summarize

MIN_POINTS = 3


@dataclass
class Line:
    """One combination of the non-width dimensions: its curve and its slopes."""

    index: dict                      # dimension -> position
    label: str
    params: np.ndarray               # P per width
    median: np.ndarray               # median cycles per width (inf: half or more missed)
    lo: np.ndarray
    hi: np.ndarray
    reached: np.ndarray              # seeds that reached it, per width
    runs: np.ndarray                 # successful runs, per width
    accuracy: np.ndarray             # median final accuracy per width
    seed_slopes: list = field(default_factory=list)
    partial: bool = False            # some fitted seed missed some widths
    median_slope: float | None = None

    @property
    def slope(self) -> float | None:
        return float(np.mean(self.seed_slopes)) if self.seed_slopes else None

    @property
    def slope_se(self) -> float | None:
        n = len(self.seed_slopes)
        return float(np.std(self.seed_slopes, ddof=1) / math.sqrt(n)) if n >= 2 else None

    def slope_text(self) -> str:
        if self.slope is None:
            return "-"
        se = f" ± {self.slope_se:.2f}" if self.slope_se is not None else ""
        return f"{self.slope:+.2f}{se} ({len(self.seed_slopes)} seeds{', partial' if self.partial else ''})"


def _fmt_text(v) -> str:
    if isinstance(v, dict):
        if v.get("kind") != "fixed":
            return "float"
        return f"{'s' if v.get('signed', True) else 'u'}{v.get('int_bits')}.{v.get('frac_bits')}"
    from ..spec import toml_literal

    return toml_literal(v)


def short_labels(ds, dim) -> list[str]:
    """Labels of a grid dimension's values: of a zip group, only the keys
    whose values differ between its rows; number formats as float or s1.6
    (and a group of formats as "float", or the weight format)."""
    study = json.loads(ds.attrs["study"])
    d = next(x for x in study["dimensions"] if x["name"] == dim)
    keys, rows = d["keys"], d["values"]
    varying = [j for j in range(len(keys)) if len({json.dumps(r[j], sort_keys=True) for r in rows}) > 1] or [0]
    formats = [j for j in varying if keys[j].startswith("formats.")]
    trainer = keys.index("trainer") if "trainer" in keys else None
    out = []
    for r in rows:
        # perturbation keys say nothing about a backprop row
        skip = {j for j in varying if trainer is not None and r[trainer] == "backprop"
                and keys[j].startswith("perturbation.")}
        parts = [_fmt_text(r[j]) for j in varying if j not in formats and j not in skip]
        if formats:
            if all(_fmt_text(r[j]) == "float" for j in formats):
                parts.append("float")
            else:
                w = next((j for j in formats if keys[j] == "formats.weight"), formats[0])
                parts.append(f"fixed ({keys[w].split('.')[1]} {_fmt_text(r[w])})")
        out.append(", ".join(parts))
    return out


def width_dimension(ds) -> str:
    """The first grid dimension along which the parameter count changes."""
    params = ds["n_parameters"]
    for dim in grid_dimensions(ds):
        if params.sizes[dim] > 1 and (params.max(dim) != params.min(dim)).any():
            return dim
    raise ValueError("no grid dimension changes the parameter count: nothing to scale against")


def per_seed_slopes(params, cycles, min_points: int = MIN_POINTS) -> tuple[list[float], bool]:
    """Slopes of log10(cycles) on log10(params), one per seed (cycles: [width, seed], NaN = not reached),
    for the seeds that reached min(min_points, widths) distinct widths; and whether any of them missed one."""
    params = np.asarray(params, float)
    need = min(min_points, np.unique(params[params > 0]).size)
    slopes, partial = [], False
    for s in range(cycles.shape[1]):
        c = cycles[:, s]
        keep = np.isfinite(c) & (c > 0) & (params > 0)
        if np.unique(params[keep]).size >= max(need, 2):
            slopes.append(fit_slope(params[keep], c[keep])[0])
            partial |= bool((~keep).any())
    return slopes, partial


def scaling_lines(ds, target: float, over: str | None = None) -> tuple[str, list[Line]]:
    """(the width dimension, one Line per combination of the other grid dimensions)."""
    over = over or width_dimension(ds)
    dims = grid_dimensions(ds)
    others = [d for d in dims if d != over]
    s = summarize(ds, target)
    c = ds["cycles_to_target"].sel(target=target).values     # (*grid, seed)
    ok = ds["status"].values == "ok"
    c = np.where(ok, c, np.nan)
    params = ds["n_parameters"].values
    labels = {d: short_labels(ds, d) for d in others}
    lines = []
    for combo in itertools.product(*(range(ds.sizes[d]) for d in others)):
        index = dict(zip(others, combo))

        def take(a, extra=0):
            sl = [slice(None)] * (len(dims) + extra)
            for d, i in index.items():
                sl[dims.index(d)] = i
            return a[tuple(sl)]

        p = take(params).astype(float)
        line = Line(index, ", ".join(labels[d][i] for d, i in index.items()) or "all", p,
                    take(s["median"]), take(s["lo"]), take(s["hi"]), take(s["reached"]), take(s["n_ok"]),
                    take(s["acc_median"]))
        cyc = take(c, extra=1)                                 # [width, seed]
        line.seed_slopes, line.partial = per_seed_slopes(p, cyc)
        fit = fit_slope(p, line.median)
        line.median_slope = fit[0] if fit else None
        lines.append(line)
    return over, lines


def plot_scaling(ds, out, targets=None, over: str | None = None, panels: str | None = None,
                 title: str | None = None) -> Path:
    """Cycles to each target against P, log-log: a row per target, a column per
    value of `panels` (a grid dimension, e.g. the number format), a line per
    combination of the remaining dimensions with its slope ± standard error,
    and a dashed linear-in-P guide."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    targets = targets or [float(t) for t in ds["target"].values]
    over = over or width_dimension(ds)
    columns = list(range(ds.sizes[panels])) if panels else [None]
    col_labels = short_labels(ds, panels) if panels else [""]
    fig, axes = plt.subplots(len(targets), len(columns), figsize=(6.2 * len(columns), 4.6 * len(targets)),
                             squeeze=False)
    for r, target in enumerate(targets):
        _, lines = scaling_lines(ds, target, over)
        for k, col in enumerate(columns):
            ax = axes[r][k]
            shown = [ln for ln in lines if col is None or ln.index.get(panels) == col]
            finite = []
            for n, ln in enumerate(shown):
                keep = np.isfinite(ln.median) & (ln.params > 0)
                name = ", ".join(short_labels(ds, d)[i] for d, i in ln.index.items() if d != panels) or "all"
                backprop = "backprop" in name
                style = dict(color="k" if backprop else f"C{n % 10}", marker="s" if backprop else "o",
                             ls=":" if "momentum" in name else "-")
                label = f"{name}: slope {ln.slope_text()}"
                if keep.any():
                    ax.loglog(ln.params[keep], ln.median[keep], label=label, **style)
                    ax.fill_between(ln.params[keep], ln.lo[keep], ln.hi[keep], color=style["color"], alpha=0.08)
                    finite += list(zip(ln.params[keep], ln.median[keep]))
                else:
                    why = "not reached" if np.sum(ln.runs) else "no run finished yet"
                    ax.plot([], [], label=f"{name}: {why}", **style)
            if finite:
                p, m = np.array(finite).T
                xs = np.geomspace(p.min(), p.max(), 20)
                gm_p, gm_c = np.exp(np.mean(np.log(p))), np.exp(np.mean(np.log(m)))
                ax.loglog(xs, gm_c * xs / gm_p, "--", color="0.6", label="linear in P (slope 1)")
                _log_labels(ax.yaxis, _cycles)
                ticks = np.unique(p)
                ax.set_xticks(ticks, [f"{v:g}" for v in ticks], fontsize=7)
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("parameters P")
            ax.set_ylabel(f"cycles to accuracy {target:g} (median; band: seed range)")
            ax.set_title(f"{col_labels[k]}{' ' if col_labels[k] else ''}target {target:g}", fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=6, loc="best")
    if not ds.attrs.get("complete", 1):
        a = ds.attrs
        title = (f"{title}  " if title else "") + (f"(incomplete: {a.get('runs_ok', '?')} of {a.get('runs', '?')} "
                                                   f"runs ok, {a.get('runs_missing', '?')} not run)")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out, dpi=110)


def scaling_markdown(ds, targets=None, over: str | None = None) -> str:
    """Markdown tables: per line, median cycles to each target at each width
    (reached / runs), the slopes, and the median final accuracy per width."""
    targets = targets or [float(t) for t in ds["target"].values]
    over = over or width_dimension(ds)
    widths = _labels(ds, over)[0]
    out = []
    if not ds.attrs.get("complete", 1):
        a = ds.attrs
        out += [f"**Incomplete study:** {a.get('runs_ok', '?')} of {a.get('runs', '?')} runs ok, "
                f"{a.get('runs_missing', '?')} not run yet (`(0/0)`: no run of that point has finished).", ""]
    for target in targets:
        _, lines = scaling_lines(ds, target, over)
        out += [f"**Cycles to {target:g} test accuracy** (median over seeds; in brackets: seeds that reached it / "
                f"runs; `-`: half or more did not)", "",
                "| " + " | ".join(["line", *widths, "slope over seeds", "slope of medians"]) + " |",
                "|" + "---|" * (len(widths) + 3)]
        for ln in lines:
            cells = [f"{_cycles(m) if np.isfinite(m) else '-'} ({int(r)}/{int(n)})"
                     for m, r, n in zip(ln.median, ln.reached, ln.runs)]
            ms = f"{ln.median_slope:+.2f}" if ln.median_slope is not None else "-"
            out.append("| " + " | ".join([ln.label, *cells, ln.slope_text(), ms]) + " |")
        out.append("")
    _, lines = scaling_lines(ds, targets[0], over)
    out += ["**Final test accuracy** (median over seeds, at the end of each run: the cap, or stop_at)", "",
            "| " + " | ".join(["line", *widths]) + " |", "|" + "---|" * (len(widths) + 1)]
    for ln in lines:
        out.append("| " + " | ".join([ln.label, *(f"{a:.3f}" if np.isfinite(a) else "-" for a in ln.accuracy)])
                   + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    from .results import open_results
    from .spec import StudyError

    ap = argparse.ArgumentParser(prog="python -m mgd_emu.studies.scaling",
                                 description="Cycles to target against parameter count: the markdown tables "
                                             "(stdout, or --table FILE) and, with -o FILE, the figure.")
    ap.add_argument("results", help="a study folder or results.nc")
    ap.add_argument("--target", type=float, action="append", help="target accuracy (repeat; default: all)")
    ap.add_argument("--over", help="the width dimension (default: the one that changes P)")
    ap.add_argument("--panels", help="a grid dimension drawn as columns (e.g. number)")
    ap.add_argument("-o", "--output", help="draw the figure into this file (.png, .pdf, .svg); without -o, no figure")
    ap.add_argument("--table", help="write the markdown tables here (default: stdout)")
    ap.add_argument("--title")
    args = ap.parse_args(argv)

    def error(text) -> int:
        print(f"mgd-emu: error: {' '.join(str(text).split())}", file=sys.stderr)
        return 2

    from ..plot import IMAGE_FORMATS

    # the outputs are checked before any work, so that a mistake costs nothing and leaves nothing
    for flag, path in (("-o", args.output), ("--table", args.table)):
        if path is None:
            continue
        where = Path(path).resolve().parent
        if flag == "-o" and Path(path).suffix[1:].lower() not in IMAGE_FORMATS:
            return error(f"-o {path}: not an image file name (allowed: "
                         f"{', '.join('.' + f for f in IMAGE_FORMATS)})")
        if Path(path).is_dir() or not where.is_dir() or not os.access(where, os.W_OK):
            return error(f"{flag} {path}: cannot be written (" + ("a folder" if Path(path).is_dir() else
                         f"no writable folder {where}") + ")")
    try:
        ds = open_results(args.results)
        dims = grid_dimensions(ds)
        for flag, dim in (("--over", args.over), ("--panels", args.panels)):
            if dim is not None and dim not in dims:
                return error(f"{flag} {dim}: not a dimension of the study (its dimensions: {', '.join(dims)})")
        text = scaling_markdown(ds, args.target, args.over)
    except (StudyError, ValueError, KeyError) as exc:
        return error(exc)
    written = []
    try:
        if args.output:
            written.append(plot_scaling(ds, args.output, args.target, args.over, args.panels, args.title))
        if args.table:
            written.append(Path(args.table))
            Path(args.table).write_text(text, encoding="utf-8")
    except (OSError, ValueError, KeyError) as exc:
        for path in written:   # all of them or none
            Path(path).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            return error(f"{exc.filename or args.output or args.table}: cannot be written ({exc.strerror or exc})")
        return error(exc)
    if not args.table:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
