"""Studies over design points: side-by-side comparisons, one-key sweeps, and
the float-ideal twin of a chip.

    compare([("8-bit", chip_a), ("6-bit", chip_b)], seeds=[0, 1, 2], cycles=200_000, eval_every=5_000)
    sweep(chip, "formats.weight.frac_bits", [3, 4, 5, 6])   # -> labelled chips for compare()
    twin(chip, seed, cycles, check_every)                    # where the chip leaves its ideal twin

Every run is an ordinary `Emulator` run, evaluated on the task's test set
every `eval_every` cycles, so a row of a comparison is what `mgd-emu run`
would print for the same chip and seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .engine import Emulator
from .spec import FORMAT_CLASSES, Chip


# ------------------------------------------------------------------ compare

@dataclass
class Run:
    """One chip on one seed: accuracy and cost at every evaluation."""

    label: str
    seed: int
    cycles: np.ndarray
    cost: np.ndarray
    accuracy: np.ndarray
    wall_s: float
    events: dict

    def reached(self, target: float = 1.0) -> int | None:
        """First evaluated cycle with accuracy >= target (None: never)."""
        hit = np.nonzero(self.accuracy >= target)[0]
        return int(self.cycles[hit[0]]) if hit.size else None


@dataclass
class Comparison:
    """Design points run on the same seeds for the same cycles."""

    labels: list[str]
    chips: list[Chip]
    seeds: list[int]
    cycles: int
    eval_every: int
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def table(self, target: float = 1.0) -> str:
        """One row per design point: final accuracy over the seeds, cycles to
        reach `target` per seed, saturation/wrap events, emulation speed."""
        w = max(12, *(len(lab) for lab in self.labels))
        head = (f"{'design point':<{w}}  {'final accuracy (mean, range)':>28}  {'cycles to ' + format(target, '.0%') + ' per seed':<34}"
                f"  {'overflow events':>15}  {'cycles/s':>10}")
        lines = [f"{len(self.seeds)} seed(s) {', '.join(map(str, self.seeds))}; {self.cycles:,} cycles; "
                 f"test accuracy every {self.eval_every:,} cycles", head, "-" * len(head)]
        for label in self.labels:
            runs = self.runs[label]
            final = np.array([r.accuracy[-1] for r in runs])
            acc = f"{final.mean():.3f} ({final.min():.2f}-{final.max():.2f})"
            reach = ", ".join(f"{r.reached(target):,}" if r.reached(target) is not None else "-" for r in runs)
            events = sum(a + b for r in runs for a, b in r.events.values())
            speed = sum(int(r.cycles[-1]) for r in runs) / max(sum(r.wall_s for r in runs), 1e-9)
            lines.append(f"{label:<{w}}  {acc:>28}  {reach:<34}  {events:>15,}  {speed:>10,.0f}")
        return "\n".join(lines)

    def to_json(self, target: float = 1.0) -> dict:
        return {
            "seeds": self.seeds, "cycles": self.cycles, "eval_every": self.eval_every,
            "design_points": [{
                "label": label, "chip": chip.name, "clock_hz": chip.timing.clock_hz,
                "runs": [{"seed": r.seed, "cycles": r.cycles.tolist(), "accuracy": r.accuracy.tolist(),
                          "cost": r.cost.tolist(), "final_accuracy": float(r.accuracy[-1]),
                          "reached_cycle": r.reached(target), "wall_s": r.wall_s,
                          "overflow_events": {k: list(v) for k, v in r.events.items() if v != (0, 0)}}
                         for r in self.runs[label]],
            } for label, chip in zip(self.labels, self.chips)],
        }


def run_curve(label: str, chip: Chip, seed: int, cycles: int, eval_every: int) -> Run:
    """Run `chip` for `cycles`, evaluating every `eval_every` cycles."""
    emu = Emulator(chip, seed)
    emu.warm_up()
    points = []
    t0 = time.perf_counter()
    while emu.cycle < cycles:
        emu.run(min(eval_every, cycles - emu.cycle))
        points.append((emu.cycle, *emu.evaluate()))
    wall = time.perf_counter() - t0
    c, cost, acc = (np.array(v) for v in zip(*points))
    return Run(label, seed, c.astype(np.int64), cost, acc, wall, emu.events)


def compare(chips, seeds, cycles: int, eval_every: int, progress=None) -> Comparison:
    """Run every (label, chip) on every seed. `progress(label, seed)` is
    called before each run."""
    labels = _unique([label for label, _ in chips])
    result = Comparison(labels, [chip for _, chip in chips], list(seeds), cycles, eval_every)
    for label, (_, chip) in zip(labels, chips):
        result.runs[label] = []
        for seed in seeds:
            if progress:
                progress(label, seed)
            result.runs[label].append(run_curve(label, chip, seed, cycles, eval_every))
    return result


def sweep(chip: Chip, key: str, values) -> list[tuple[str, Chip]]:
    """The chip with `key` set to each value, labelled "key=value"; a value
    the chip description refuses raises its ChipError."""
    short = key.split(".", 1)[-1] if key.startswith("formats.") else key
    return [(f"{short}={_show(v)}", chip.replace({key: v})) for v in values]


def _show(v) -> str:
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}={_show(x)}" for k, x in v.items()) + "}"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label} #{seen[label]}")
    return out


# --------------------------------------------------------------------- twin

def ideal_twin(chip: Chip) -> Chip:
    """The same chip (network, task, perturbation codes, noise, seed policy)
    with every format float and every latency zero."""
    overrides = {f"formats.{cls}": {"kind": "float"} for cls in FORMAT_CLASSES}
    overrides.update({"timing.layer_pipelining": False, "timing.cost_latency": 0, "timing.broadcast_latency": 0,
                      "timing.correlator_delay": "auto", "timing.correlator_skew": 0, "trace.probes": [],
                      "chip.name": f"{chip.name} (float-ideal twin)"})
    return chip.replace(overrides)


@dataclass
class Divergence:
    """How one register of the chip departs from the same register of its twin."""

    register: str
    tolerance: float        # what counts as "the same": one LSB of the chip's format
    first_cycle: int | None  # first checked cycle with a difference above tolerance
    last_same: int | None    # the check before it (0: none), where they still agreed: the
                             # departure happened after this cycle and by first_cycle
    max_abs: float           # largest |chip - twin| over the run's checks
    final_abs: float         # max |chip - twin| at the last check
    final_rel: float         # ||chip - twin|| / ||twin|| at the last check


@dataclass
class TwinReport:
    chip: str
    seed: int
    cycles: int
    checks: list[int]
    registers: list[Divergence]
    chip_eval: list[tuple[int, float, float]]
    twin_eval: list[tuple[int, float, float]]

    def table(self) -> str:
        shown = ", ".join(f"{c:,}" for c in self.checks[:5]) + (", ..." if len(self.checks) > 5 else "")
        lines = [f"float-ideal twin of {self.chip} (seed {self.seed}): float formats, zero latency; "
                 f"compared at {len(self.checks)} cycles up to {self.cycles:,} ({shown})",
                 "diverges in cycles A-B: still within tolerance at the check at cycle A-1, "
                 "apart at the check at cycle B (checks double, then come at a fixed period)",
                 f"{'register':<28} {'tolerance':>10} {'diverges in cycles':>20} {'max |diff|':>11} "
                 f"{'final |diff|':>12} {'final rel':>10}"]
        for d in self.registers:
            if d.first_cycle is None:
                where = "never"
            elif d.first_cycle - d.last_same == 1:
                where = f"{d.first_cycle:,}"
            else:
                where = f"{d.last_same + 1:,}-{d.first_cycle:,}"
            lines.append(f"{d.register:<28} {d.tolerance:>10.3g} {where:>20} {d.max_abs:>11.4g} "
                         f"{d.final_abs:>12.4g} {d.final_rel:>10.3g}")
        (c, cc, ca), (_, tc, ta) = self.chip_eval[-1], self.twin_eval[-1]
        lines.append(f"at cycle {c:,}: chip accuracy {ca:.3f} (cost {cc:.5f}), twin accuracy {ta:.3f} (cost {tc:.5f})")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"chip": self.chip, "seed": self.seed, "cycles": self.cycles, "checks": self.checks,
                "registers": [d.__dict__ for d in self.registers],
                "chip_evaluation": self.chip_eval, "twin_evaluation": self.twin_eval}


# The stimulus registers: identical on both chips while their samplers stay in step.
_STIMULUS = ("input", "target", "sample_index")


def _check_cycles(cycles: int, check_every: int) -> list[int]:
    """1, 2, 4, ... up to check_every, then every check_every: early
    divergence is located to within a factor of two, later to check_every."""
    out, c = [], 1
    while c < min(check_every, cycles):
        out.append(c)
        c *= 2
    out += list(range(check_every, cycles, check_every))
    return sorted(set(out + [cycles]))


def twin(chip: Chip, seed: int, cycles: int, check_every: int = 10_000) -> TwinReport:
    """Run `chip` and its float-ideal twin in lock step and report, per
    register, the first checked cycle at which they differ by more than one
    LSB of the chip's format (float registers: 1e-9 relative), and the check
    before it: the registers part somewhere in between."""
    a, b = Emulator(chip, seed), Emulator(ideal_twin(chip), seed)
    names = [n for n in a.registers if n not in _STIMULUS]
    tol = {}
    for n in names:
        fmt = a.register_format(n)
        tol[n] = fmt.lsb if fmt is not None and fmt.is_fixed else 0.0
    first = dict.fromkeys(names)
    last_same = dict.fromkeys(names)
    max_abs = dict.fromkeys(names, 0.0)
    previous = 0
    checks, chip_eval, twin_eval = _check_cycles(cycles, check_every), [], []
    for c in checks:
        a.run(c - a.cycle)
        b.run(c - b.cycle)
        ra, rb = a.registers, b.registers
        for n in names:
            x, y = np.asarray(ra[n], float), np.asarray(rb[n], float)
            d = float(np.max(np.abs(x - y))) if x.size else 0.0
            limit = tol[n] if tol[n] > 0 else 1e-9 * max(1.0, float(np.max(np.abs(y))) if y.size else 1.0)
            if first[n] is None and d > limit:
                first[n], last_same[n] = c, previous
            max_abs[n] = max(max_abs[n], d)
        previous = c
    ra, rb = a.registers, b.registers
    out = []
    for n in names:
        x, y = np.asarray(ra[n], float), np.asarray(rb[n], float)
        norm = float(np.linalg.norm(y))
        diff = float(np.linalg.norm(x - y))
        out.append(Divergence(n, tol[n], first[n], last_same[n], max_abs[n], float(np.max(np.abs(x - y))) if x.size else 0.0,
                              diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))))
    chip_eval.append((a.cycle, *a.evaluate()))
    twin_eval.append((b.cycle, *b.evaluate()))
    return TwinReport(chip.name, seed, cycles, checks, out, chip_eval, twin_eval)
