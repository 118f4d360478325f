"""The `mgd-emu` command line.

Results go to stdout, progress and diagnostics to stderr. A user mistake, or
an OS/HDF5 error (disk full, permissions, a damaged file), prints one line
`mgd-emu: error: ...` and exits with status 2; SIGINT (Ctrl-C), SIGTERM and
SIGHUP close the trace (flushed, marked incomplete with the signal's name),
print one line and exit with 128 + the signal number (130, 143, 129). The
signal handlers are installed before anything heavy is imported
(mgd_emu.errors), so this holds during imports too.
"""
from __future__ import annotations

import os
import sys

from .errors import install_signal_handlers

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "mgd-emu":
    # the command itself (not a library import): signals from here on are
    # held, and raised by end_startup() once main() can catch them
    install_signal_handlers(defer=True)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from .errors import describe, exit_status, report, signal_name  # noqa: E402
from .safe_io import OutputError, check_writable, same_file  # noqa: E402
from .saturation import saturation_warning  # noqa: E402
from .spec import HW_MODELS, shipped_chip  # noqa: E402  (the shipped chips)

if TYPE_CHECKING:  # spec is imported when a command needs it
    from .spec import Chip

DEFAULT_CHIP = "xor_8bit.toml"
DEFAULT_EVAL_EVERY = 10_000   # run and demo: cycles between evaluations
DEMO_PROBES = ["cost every=10", "layer0.weight every=100", "layer1.weight every=100",
               "layer0.bias every=100", "layer1.bias every=100",
               "layer0.weight_integrator every=100", "layer1.weight_integrator every=100",
               "layer0.bias_integrator every=100", "layer1.bias_integrator every=100"]


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line."""


def load_chip(path, overrides=None):
    from .spec import load_chip as load

    return load(path, overrides)


def parse_override(item):
    from .spec import parse_override as parse

    return parse(item)


def _version() -> str:
    from . import __version__

    return __version__


def _one_line(text) -> str:
    """A message on one line: library errors (HDF5's in particular) carry newlines."""
    return " ".join(str(text).split())


_ARGV: list = []   # the command line being parsed (_main), for the parser's messages


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, `mgd-emu: error: ...`, with status 2
    (argparse prints its whole usage block first)."""

    def error(self, message):
        if "arguments are required" in message and "--signals" in _ARGV:
            # an option of many values takes every word after it, the positional too
            message += " (--signals takes every word after it, the trace too: give the trace before --signals)"
        sys.stderr.write(f"mgd-emu: error: {_one_line(message)} (see `{self.prog} --help`)\n")
        sys.exit(2)


def find_chip(name: str) -> Path:
    """A chip file by path, or by name among the shipped ones."""
    path = Path(name)
    if path.exists() or path.suffix == ".toml" and path.parent != Path("."):
        return path
    shipped = shipped_chip(name)
    if shipped is not None:
        return shipped
    if "/" not in name and not name.endswith(".toml"):   # meant as a shipped chip's name
        import difflib

        names = sorted(p.stem for p in HW_MODELS.glob("*.toml"))
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"{name}: no such file, and no shipped chip of that name ({hint}the shipped chips: "
                        f"{', '.join(names)}; `mgd-emu chips` describes them)")
    return path


def _overrides(items) -> dict:
    return dict(parse_override(item) for item in (items or []))


def _load(args) -> "Chip":
    path = find_chip(args.chip)
    _refuse_empty(path)
    return load_chip(path, _overrides(getattr(args, "set", None)))


def _refuse_empty(path: Path) -> None:
    """An empty chip file (nothing but blanks and comments) would load as the
    all-defaults float chip: a truncated file or a forgotten edit, most likely."""
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return
        text = path.read_text(errors="replace")
    except OSError:
        return   # load_chip says why
    if all(not line.strip() or line.strip().startswith("#") for line in text.splitlines()):
        raise UserError(f"{path}: is empty (no section, no key); every key has a default, but an empty chip "
                        f"file is more likely a mistake: write at least [chip] name = \"...\" "
                        f"(`mgd-emu show xor_ideal` prints a whole description to start from)")


# Argument types. argparse reports their errors as "argument --cycles: MESSAGE".

MAX_CYCLES = 2**62  # cycle counters are int64; a run of 2**62 cycles would take centuries


def _positive(text):
    try:
        v = int(text.replace("_", ""))
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    if v > MAX_CYCLES:
        raise argparse.ArgumentTypeError(f"must be at most 2**62 = {MAX_CYCLES} (cycle counters are "
                                         f"64-bit), got {text!r}")
    return v


MAX_SEED = 2**63 - 1   # engine.MAX_SEED (the engine is imported only to run)


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer 0..{MAX_SEED}, got {text!r}")
    return v


def _accuracy(text):
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a test accuracy in [0, 1] (1 = every test sample "
                                         f"classified right), got {text!r}")
    return v


def _window(text):
    """A:B (A inclusive, B exclusive), A: (to the end) or :B (from the start)."""
    a, sep, b = text.partition(":")
    if sep:
        try:
            return (int(a) if a.strip() else None, int(b) if b.strip() else None)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"must be A:B, A: or :B in cycles (A inclusive, B exclusive), "
                                     f"e.g. 0:2000, got {text!r}")


def _check_output(path: Path, option: str, folder: bool = False, inputs=()) -> Path:
    """Refuse, before any work is done, an output path that cannot be written
    or that is an input of the command (safe_io.check_writable)."""
    return check_writable(path, inputs, option, folder)


def _image_target(text: str | None, default: Path, stem: str, option: str, inputs=()) -> Path:
    """The image a plot goes to: `text` (a file with an image suffix, or a
    folder, existing or written with a trailing '/', then FOLDER/STEM.png) or
    `default`; checked writable."""
    from .plot import IMAGE_FORMATS

    path = default
    if text is not None:
        if not text:
            raise UserError(f"{option}: the path is empty; give a file name such as run.png")
        path = Path(text)
        if path.is_dir() or text.endswith("/"):
            path = path / f"{stem}.png"
    fmt = path.suffix[1:].lower()
    if fmt not in IMAGE_FORMATS:
        what = f"format {path.suffix!r} is not supported" if path.suffix else "has no image suffix"
        raise UserError(f"{option} {path}: {what} (allowed: {', '.join('.' + f for f in IMAGE_FORMATS)})")
    return _check_output(path, option, inputs=inputs)


@contextlib.contextmanager
def _writing(path, option: str):
    """Turn an OS error while writing an output (disk full, a race with the
    check above) into one line."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot be written ({describe(exc)})") from None


def _eta(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _si(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds} s"


# ------------------------------------------------------------------ commands

def cmd_chips(args) -> int:
    for path in sorted(HW_MODELS.glob("*.toml")):
        chip = load_chip(path)
        print(f"{path.stem:<16} {chip.chip.description}")
    return 0


def cmd_cache(args) -> int:
    from .kernel_cache import CACHE_DIR, cache_folders, cache_root, prune_other_versions

    def mb(n):
        return f"{n / 1e6:,.1f} MB"

    folders = cache_folders()
    mine = sum(size for p, size in folders if p == CACHE_DIR)
    others = [(p, size) for p, size in folders if p != CACHE_DIR]
    print(f"compiled-kernel cache: {cache_root()} ($MGD_EMU_CACHE_DIR moves it)")
    print(f"  this version    {CACHE_DIR.name}  {mb(mine)}")
    if args.prune:
        try:
            n, freed = prune_other_versions()
        except OSError as exc:
            report(f"cannot delete {exc.filename}: {exc.strerror}")
            return 1
        print(f"  deleted {n} folder{'s' * (n != 1)} of other versions, {mb(freed)}")
    else:
        print(f"  other versions  {len(others)} folder{'s' * (len(others) != 1)}  "
              f"{mb(sum(size for _, size in others))}" + ("  (`mgd-emu cache --prune` deletes them)" if others else ""))
    return 0


def cmd_show(args) -> int:
    chip = _load(args)
    if not args.registers:
        sys.stdout.write(chip.to_toml())
        return 0
    from .probes import register_table

    print(f"{'register':<28} {'shape':<10} {'format':<36} meaning")
    for reg in register_table(chip):
        fmt = getattr(chip.formats, reg.format_class).describe() if reg.format_class else "-"
        shape = "x".join(map(str, reg.shape)) or "scalar"
        print(f"{reg.name:<28} {shape:<10} {fmt:<36} {reg.meaning}")
    return 0


def train(chip, seed: int, cycles: int, eval_every: int, until_accuracy: float | None,
          quiet: bool, probes=(), trace_path=None, note="", inputs=(), emu=None,
          checkpoint=None, checkpoint_every=None) -> dict:
    """Run a chip, evaluating every `eval_every` cycles, optionally writing a
    trace (never over one of `inputs`); returns a summary. The chip's memory
    is checked against the machine's before anything is built."""
    from tqdm import tqdm

    from .limits import check_chip_fits
    from .probes import ProbeError, parse_probes
    from .trace import END_COMPLETED, TraceWriter, target_reached

    tr = chip.trace
    try:   # with the chip's [trace] defaults, as the emulator parses them
        parsed = parse_probes(list(tr.probes) + list(probes), chip, tr.every, tr.window_start,
                              tr.window_stop if tr.window_stop > 0 else None)
    except ProbeError as exc:
        raise UserError(f"--probe: {exc}") from None
    first = emu.cycle if emu is not None else 0
    ended = [p.name for p in parsed if p.stop is not None and p.stop <= first]
    # a window past this run: a later --resume of its checkpoint may reach it
    late = [p.name for p in parsed if p.start >= cycles and checkpoint is None and p.name not in ended]
    if (ended or late) and not quiet:
        print(f"mgd-emu: warning: the window of {', '.join(ended + late)} lies outside cycles "
              f"{first:,}-{cycles - 1:,} of this run: it records nothing", file=sys.stderr)
    check_chip_fits(chip, probes)
    from .engine import Emulator

    t0 = time.perf_counter()
    resumed_from = emu.cycle if emu is not None else None   # --resume: the checkpoint's emulator
    try:
        emu = emu or Emulator(chip, seed, probes=list(probes))
    except ProbeError as exc:
        raise UserError(f"--probe: {exc}") from None
    emu.warm_up()
    startup = time.perf_counter() - t0
    before = (emu.step, emu.st.syn.theta.copy())   # every parameter, to tell a run whose updates all vanished
    writer = TraceWriter(trace_path, emu, cycles, note=note, inputs=inputs) if trace_path else None
    bar = tqdm(total=cycles, unit="cycle", unit_scale=True, disable=quiet or None, file=sys.stderr,
               dynamic_ncols=True, leave=False, desc=chip.name)
    history, reached = [], None
    t_run = time.perf_counter()

    def progress(e):
        bar.update(e.cycle - bar.n)

    try:
        while emu.cycle < cycles:
            emu.run(min(eval_every, cycles - emu.cycle), sink=writer, progress=progress)
            cost, acc = emu.evaluate()
            history.append((emu.cycle, cost, acc))
            if writer:
                writer.evaluation(emu.cycle, cost, acc)
            bar.set_postfix(cost=f"{cost:.4f}", accuracy=f"{acc:.3f}", refresh=False)
            if checkpoint and (emu.cycle - first) % checkpoint_every == 0:   # counted from where this run began
                from .checkpoint import save_checkpoint

                save_checkpoint(emu, checkpoint, inputs)
            if until_accuracy is not None and acc >= until_accuracy:
                reached = emu.cycle
                break
    except BaseException as exc:
        bar.close()
        notes = []   # said on the same line as the error or the signal (main)
        try:
            if writer:   # closed first: a checkpoint being saved must not keep it open
                writer.__exit__(type(exc), exc, None)
                if writer.failed is None:
                    notes.append(f"the trace {trace_path} holds the {emu.cycle:,} cycles run so far "
                                 "and is marked incomplete")
            if checkpoint and isinstance(exc, KeyboardInterrupt):   # SIGINT, SIGTERM, SIGHUP (Interrupted)
                # a signal stops the run between kernel calls: the state is whole, and "where the run ends"
                from .checkpoint import save_checkpoint

                save_checkpoint(emu, checkpoint, inputs)
                again = (f"mgd-emu run --resume {checkpoint} --cycles {cycles}"
                         + (f" --eval-every {eval_every}" if eval_every != DEFAULT_EVAL_EVERY else "")
                         + (f" --until-accuracy {until_accuracy:g}" if until_accuracy is not None else "")
                         + f" --checkpoint {checkpoint}")
                notes.append(f"the checkpoint {checkpoint} holds cycle {emu.cycle:,} (`{again}` continues it)")
        except Exception as closing:   # the first error is the one to report; this one is said beside it
            notes.append(f"and then: {closing}")
        if notes:
            exc.mgd_note = "; ".join(notes)
        raise
    wall = time.perf_counter() - t_run
    bar.close()
    if checkpoint:   # where the run ended, so that --resume can take it further
        from .checkpoint import save_checkpoint

        save_checkpoint(emu, checkpoint, inputs)
    if writer:
        writer.close(emu.cycle >= cycles or reached is not None,
                     END_COMPLETED if reached is None else target_reached(until_accuracy))
    cost, acc = history[-1][1:] if history else emu.evaluate()
    return {
        "chip": chip.name, "seed": seed, "cycles": emu.cycle, "steps": emu.step,
        "baseline_cycles": emu.baseline_cycles, "chip_time_s": emu.chip_time,
        "clock_hz": chip.timing.clock_hz,
        "final_cost": cost, "final_accuracy": acc, "target_accuracy": until_accuracy, "eval_every": eval_every,
        "reached_cycle": reached, "reached_chip_time_s": reached / chip.timing.clock_hz if reached else None,
        "wall_s": wall, "startup_s": startup,
        "cycles_per_s": (emu.cycle - (resumed_from or 0)) / wall if wall > 0 else None,
        "overflow_events": {k: list(v) for k, v in emu.events.items() if v != (0, 0)},
        "saturation_warning": saturation_warning(emu.events, chip, emu.cycle),
        "frozen_warning": _frozen_warning(chip, before, emu),
        "data": {"train": emu.task.train.identity, "test": emu.task.test.identity},
        "trace": str(trace_path) if trace_path else None,
        "checkpoint": str(checkpoint) if checkpoint else None, "resumed_from_cycle": resumed_from,
        "history": history,
    }


def _frozen_warning(chip, before, emu) -> str | None:
    """One line when a run that had at least ten updates changed no weight and
    no bias: every update rounded away (a bit-width what-if gone too far)."""
    import numpy as np

    step0, theta0 = before
    updates = (emu.step - step0) // chip.timing.tau_theta
    if updates < 10 or chip.optimizer.learning_rate == 0 or not np.array_equal(theta0, emu.st.syn.theta):
        return None
    f = chip.formats
    return (f"no weight or bias changed in {updates:,} updates: every update rounded away (formats.weight "
            f"{f.weight.describe()}, formats.integrator {f.integrator.describe()}, learning rate "
            f"{chip.optimizer.learning_rate:g}); give the formats more fraction bits or stochastic rounding "
            f"(see docs/scaling.md, widening an 8-bit chip)")


def _print_summary(s: dict, out=sys.stdout) -> None:
    hz = s["clock_hz"]
    p = lambda *a: print(*a, file=out)
    p(f"chip            {s['chip']} (seed {s['seed']})")
    p(f"final accuracy  {s['final_accuracy']:.3f}   test cost {s['final_cost']:.5f}")
    if s["target_accuracy"] is not None:
        r, every = s["reached_cycle"], s["eval_every"]
        label = f"accuracy {s['target_accuracy']:g}"
        if r:
            # Accuracy is evaluated every `every` cycles: the target was first
            # met somewhere after the previous evaluation.
            near = f" (to within {every:,} cycles: accuracy is evaluated every {every:,})" if every > 1 else ""
            p(f"{label:<15} first reached at cycle {r:,} = {_si(r / hz)} of chip time{near}")
        else:
            p(f"{label:<15} not reached in {s['cycles']:,} cycles")
    p(f"cycles          {s['cycles']:,} = {_si(s['chip_time_s'])} of chip time at {hz:.4g} Hz")
    rate = f"{s['cycles_per_s']:,.0f}" if s["cycles_per_s"] else "-"
    p(f"wall time       {_eta(s['wall_s'])}, {rate} emulated cycles/s (+{s['startup_s']:.2f} s start-up)")
    if s["overflow_events"]:
        p("overflow events " + ", ".join(f"{k}: {a} saturated, {b} wrapped"
                                         for k, (a, b) in s["overflow_events"].items()))
    if s.get("saturation_warning"):
        p(f"warning         {s['saturation_warning']}")
    if s.get("frozen_warning"):
        p(f"warning         {s['frozen_warning']}")
    if s.get("data") and s["data"]["train"].startswith("file "):
        p(f"data            {s['data']['train']}")
    for key, label in (("trace", "trace"), ("plot", "plot"), ("twin_report", "twin")):
        if s.get(key):
            p(f"{label:<16}{s[key]}")


def _trace_target(args, chip, resumed=None):
    """Where the run's trace goes: --trace PATH; else, when anything is probed
    (--probe, the chip's [trace] section, the demo, or the probes a --resume
    checkpoint carries), the default path; else None."""
    from .trace import default_trace_path

    if args.trace is not None:
        if not args.trace.strip():
            raise UserError("--trace: the path is empty; give a file name such as traces/run.h5 "
                            "(or leave --trace out for the default)")
        return Path(args.trace)
    if args.probe or chip.trace.probes or getattr(args, "always_trace", False) or (resumed and resumed.probes):
        return default_trace_path(chip, resumed.seed if resumed is not None else args.seed)
    return None


def cmd_run(args) -> int:
    resumed = _run_checkpoint_options(args)
    chip = resumed.chip if resumed is not None else _load(args)
    probes = list(args.probe or [])
    if getattr(args, "always_trace", False) and not probes and not chip.trace.probes:
        probes = DEMO_PROBES
    trace_path = _trace_target(args, chip, resumed)
    inputs = [find_chip(args.chip)] if getattr(args, "chip", None) else []
    if getattr(args, "resume", None):
        inputs.append(Path(args.resume))   # its own --checkpoint may save over it: not an input there
    png = None
    checkpoint = Path(args.checkpoint) if getattr(args, "checkpoint", None) else None
    if trace_path is not None:
        _check_output(trace_path, "--trace", inputs=inputs)
        if resumed is not None and trace_path.exists():
            raise UserError(f"--trace {trace_path}: exists (the trace of this run's first part, perhaps); a "
                            f"resumed run writes a new trace from cycle {resumed.cycle:,}: give another file name")
        if not args.no_plot:  # the plot beside the trace: checked before the run, not after it
            png = _check_output(trace_path.with_suffix(".png"), "plot", inputs=[*inputs, trace_path])
    for other, what in ((trace_path, "the --trace path"), (png, "the trace's plot")):
        if checkpoint is not None and other is not None and same_file(checkpoint, other):
            raise UserError(f"--checkpoint {checkpoint}: is also {what} ({other}); one would replace the "
                            f"other: give the checkpoint another file name")
    if trace_path is not None and args.trace is None and not (args.quiet or args.json):
        if not args.probe and chip.trace.probes:
            print(f"mgd-emu: recording the probes of the chip's [trace] section "
                  f"({len(chip.trace.probes)}) into {trace_path}", file=sys.stderr)
        elif resumed is not None:
            print(f"mgd-emu: recording the probes of {args.resume} ({len(resumed.probes)}) from cycle "
                  f"{resumed.cycle:,} into {trace_path}", file=sys.stderr)
    note = "mgd-emu " + " ".join(sys.argv[1:])
    summary = train(chip, args.seed, args.cycles, args.eval_every, args.until_accuracy, args.quiet,
                    probes, trace_path, note, inputs=inputs[:1] if resumed is None else [], emu=resumed,
                    checkpoint=getattr(args, "checkpoint", None),
                    checkpoint_every=getattr(args, "checkpoint_every", None) or args.eval_every)
    if png is not None:
        from .plot import plot_trace
        from .trace import open_trace

        with _writing(png, "plot"):
            summary["plot"] = str(plot_trace(open_trace(trace_path), png, inputs=inputs))
    if args.twin:
        from .study import twin

        report = twin(chip, args.seed, summary["cycles"], args.eval_every)
        summary["twin"] = report.to_json()
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=_json_default)
        print()
        return 0
    _print_summary(summary)
    if args.twin:
        print()
        print(report.table())
    return 0


def _run_checkpoint_options(args):
    """Check `run`'s --checkpoint/--checkpoint-every/--resume; the emulator
    --resume FILE holds (its chip and seed become the run's), or None."""
    if getattr(args, "checkpoint_every", None) and not args.checkpoint:
        raise UserError("--checkpoint-every N needs --checkpoint FILE (where to save)")
    if getattr(args, "checkpoint_every", None) and args.checkpoint_every % args.eval_every:
        raise UserError(f"--checkpoint-every {args.checkpoint_every:,}: must be a multiple of --eval-every "
                        f"({args.eval_every:,}); checkpoints are taken at evaluations")
    if getattr(args, "checkpoint", None) is not None:
        if not args.checkpoint.strip():
            raise UserError("--checkpoint: the path is empty")
        _check_output(Path(args.checkpoint), "--checkpoint",
                      inputs=[find_chip(args.chip)] if getattr(args, "chip", None) else [])
    if not getattr(args, "resume", None):
        if not getattr(args, "chip", None):
            raise UserError("the following arguments are required: chip, unless --resume FILE continues a "
                            "checkpointed run (see `mgd-emu run --help`)")
        return None
    if args.chip or args.set or args.probe or args.seed is not None:
        raise UserError("--resume FILE continues the chip, seed and probes saved in FILE: "
                        "give no CHIP, --set, --seed or --probe with it")
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        emu = load_checkpoint(args.resume)
    except CheckpointError as exc:
        raise UserError(f"--resume {exc}") from None
    if emu.cycle >= args.cycles:
        raise UserError(f"--resume {args.resume}: the run is at cycle {emu.cycle:,} already; "
                        f"give --cycles above it (--cycles is the total, not the cycles to add)")
    args.seed = emu.seed
    return emu


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v))


def cmd_demo(args) -> int:
    args.chip = DEFAULT_CHIP
    args.set = []
    args.always_trace = True
    if not (args.quiet or args.json):
        print(f"mgd-emu {_version()}: training the default chip hw_models/{DEFAULT_CHIP} "
              f"(XOR on 8-bit weights) until it classifies XOR perfectly.", file=sys.stderr)
    return cmd_run(args)


def cmd_inspect(args) -> int:
    from .trace import open_trace

    t = open_trace(args.trace)
    a = t.attrs
    cyc, cost, acc = t.evaluation
    info = {
        "trace": str(args.trace), "format_version": a["format_version"], "mgd_emu_version": a["mgd_emu_version"],
        "chip": a["chip_name"], "chip_source": a["chip_source"], "seed": t.seed, "task": a["task"],
        "train_dataset": a["train_dataset"], "created": a["created"],
        "complete": t.complete, "live": t.live, "end_reason": a["end_reason"], "start_cycle": a["start_cycle"],
        "cycles_requested": a["cycles_requested"], "cycles_completed": t.cycles_completed,
        "clock_hz": a["clock_hz"],
        "signals": {name: _signal_info(t.signal(name)) for name in t.signals},
        "final_cost": float(cost[-1]) if len(cost) else None,
        "final_accuracy": float(acc[-1]) if len(acc) else None,
        "evaluations": int(len(cyc)),
        "overflow_events": {k: list(v) for k, v in t.events.items() if v != (0, 0)},
    }
    if args.json:
        json.dump(info, sys.stdout, indent=2, default=_json_default)
        print()
        return 0
    print(f"trace           {info['trace']} (format v{info['format_version']}, mgd-emu {info['mgd_emu_version']})")
    print(f"chip            {info['chip']} from {info['chip_source']}, seed {info['seed']}, task {info['task']}")
    from .trace import END_COMPLETED

    if t.live or not t.complete:
        status = t.status
    else:  # complete, and why it ended when it stopped before the cycles requested
        status = "complete" + (f" ({info['end_reason']})" if info["end_reason"] != END_COMPLETED else "")
    print(f"run             {status}: {info['cycles_completed']:,} of {info['cycles_requested']:,} cycles "
          f"({_si(info['cycles_completed'] / info['clock_hz'])} of chip time)")
    if info["final_accuracy"] is not None:
        print(f"last evaluation cycle {int(cyc[-1]):,}: accuracy {info['final_accuracy']:.3f}, "
              f"test cost {info['final_cost']:.5f}")
    print(f"signals         {len(info['signals'])}")
    for name, s in info["signals"].items():
        probed = f"{name}[{s['index']}]" if s["index"] else name
        print(f"  {probed:<26} {s['format']:<34} shape {s['shape']:<10} {s['samples']:>10,} samples"
              f"  every {s['every']}")
    if info["overflow_events"]:
        print("overflow events " + ", ".join(f"{k}: {a} saturated, {b} wrapped"
                                             for k, (a, b) in info["overflow_events"].items()))
    return 0


def _signal_info(s) -> dict:
    """A signal's summary, from its attributes and two cycle numbers (no data read)."""
    shape = "x".join(map(str, s.shape)) or "scalar"
    fmt = s.format.describe() if s.format is not None else "index"
    return {"format": fmt, "shape": shape, "samples": int(s.count), "index": s.index,
            "every": int(s.attrs["every"]), "first_cycle": s.first_cycle,
            "last_cycle": s.last_cycle, "description": s.description}


def cmd_plot(args) -> int:
    from .studies.results import is_results

    if is_results(args.trace):
        return cmd_plot_study(args)
    from .plot import plot_trace
    from .trace import open_trace

    trace = Path(args.trace)
    out = _image_target(args.output, trace.with_suffix(".png"), trace.stem, "-o", inputs=[trace])
    t = open_trace(trace)
    if args.target is not None:
        raise UserError(f"--target is for study results (the accuracy whose cycles to reach are drawn); "
                        f"{trace} is a trace")
    with _writing(out, "-o"):
        png = plot_trace(t, out)
    print(png)
    return 0


def _say_if_incomplete(t, what: str) -> None:
    """A line on stderr when a trace being exported is not a whole run: the
    export then covers only what it holds."""
    if not t.complete:
        print(f"mgd-emu: warning: {t.path} is {t.status}: the {what} covers its {t.cycles_completed:,} cycles "
              f"from cycle {int(t.attrs['start_cycle']):,}", file=sys.stderr)


def cmd_export(args) -> int:
    from . import export
    from .trace import open_trace

    trace = Path(args.trace)
    start, stop = args.window if args.window else (None, None)
    if args.output is not None and not args.output.strip():
        raise UserError("-o: the path is empty")
    if args.kind == "rtl":
        return cmd_export_rtl(args, trace, start, stop)
    if args.kind == "vcd":
        if args.block is not None:
            raise UserError("--block selects the block of golden vectors; `export vcd` takes --signals")
        out = Path(args.output) if args.output else trace.with_suffix(".vcd")
        if out.is_dir():
            out = out / f"{trace.stem}.vcd"
        _check_output(out, "-o", inputs=[trace])
        _check_output(out.with_suffix(".gtkw"), "-o", inputs=[trace])
        t = open_trace(trace)
        _say_if_incomplete(t, "VCD")
        with _writing(out, "-o"):
            paths = export.write_vcd(t, out, signals=args.signals, start=start, stop=stop)
    else:
        if args.signals:
            raise UserError("--signals selects the signals of a VCD; `export golden` takes --block "
                            "(its signals are those of the block)")
        out = Path(args.output) if args.output else trace.with_suffix("")
        if not args.output and out == trace:   # a trace named without a suffix: not over itself
            out = trace.with_name(trace.name + "_golden")
        _check_output(out, "-o" if args.output else "the golden vectors' folder", folder=True)
        t = open_trace(trace)
        _say_if_incomplete(t, "export")
        with _writing(out, "-o"):
            paths = export.write_golden(t, out, block=args.block or "synapse", start=start, stop=stop)
    for path in paths:
        print(path)
    return 0


# ---------------------------------------------- reference RTL (rtl/, issue 15)

def cmd_export_rtl(args, trace, start, stop) -> int:
    """`export rtl`: golden vectors, corner cases and the Verilog header of one synapse."""
    from .rtl import export_rtl
    from .trace import open_trace

    if args.signals:
        raise UserError("--signals selects the signals of a VCD; `export rtl` takes --block synapse:...")
    out = Path(args.output) if args.output else trace.with_name(trace.stem + "_rtl")
    _check_output(out, "-o", folder=True)
    t = open_trace(trace)
    _say_if_incomplete(t, "export")
    with _writing(out, "-o"):
        paths = export_rtl(t, out, block=args.block or "synapse", start=start, stop=stop)
    for path in paths:
        print(path)
    return 0


def cmd_rtl_replay(args) -> int:
    """`rtl-replay`: exported synapse vectors through the reference RTL under Icarus Verilog."""
    from .rtl_sim import describe, fault_does_nothing, replay_rtl

    report = replay_rtl(args.vectors, fault=args.fault, waves=args.waves)
    why = fault_does_nothing(args.vectors, args.fault) if args.fault != "none" else None
    if why:
        print(f"mgd-emu: note: --fault {args.fault} changes nothing here ({why}): a PASS says nothing about it",
              file=sys.stderr)
    print(describe(report))
    for path in report.get("waves", []):
        print(path)
    return 0 if report["mismatch"] is None else 1


def cmd_compare(args) -> int:
    from .plot import plot_compare
    from .study import compare, sweep

    from .limits import check_chip_fits

    chips = []
    for name in args.chips:
        _refuse_empty(find_chip(name))
        chip = load_chip(find_chip(name), _overrides(args.set))
        chips.append((chip.name, chip))
    if len({label for label, _ in chips}) < len(chips):   # copies of one chip, edited: name them by their files
        chips = [(Path(name).stem if Path(name).suffix == ".toml" else name, chip)
                 for name, (_, chip) in zip(args.chips, chips)]
    if args.sweep:
        if len(chips) != 1:
            raise UserError("--sweep needs exactly one chip")
        key, sep, values = args.sweep.partition("=")
        if not sep or not values:
            raise UserError(f"--sweep must be KEY=V1,V2,..., got {args.sweep!r}")
        parsed = [parse_override(f"{key}={v}")[1] for v in split_values(values)]
        if len(parsed) < 2:
            raise UserError(f"--sweep {args.sweep}: one value; a sweep compares at least two "
                            f"(KEY=V1,V2,...)")
        chips = sweep(chips[0][1], key.strip(), parsed)
    if len(chips) < 2:
        raise UserError("compare needs two chips, or one chip and --sweep KEY=V1,V2,...")
    # The plot's path is checked before the runs, so a bad -o loses no study.
    for _, chip in chips:
        check_chip_fits(chip)
    stem = f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out = _image_target(args.output, Path("traces") / f"{stem}.png", stem, "-o",
                        inputs=[find_chip(n) for n in args.chips])
    total, t0 = len(chips) * len(args.seeds), time.perf_counter()
    done = []

    def progress(label, seed):
        done.append(label)
        if not args.quiet:
            print(f"mgd-emu: [{len(done)}/{total}] {label}, seed {seed}, {args.cycles:,} cycles "
                  f"({time.perf_counter() - t0:.1f} s so far)", file=sys.stderr)

    result = compare(chips, args.seeds, args.cycles, args.eval_every, progress=progress)
    with _writing(out, "-o"):
        png = plot_compare(result, out)
    if args.json:
        data = result.to_json()
        data["plot"] = str(png)
        json.dump(data, sys.stdout, indent=2, default=_json_default)
        print()
    else:
        print(result.table())
        print(f"\nplot: {png}")
    return 0


# -------------------------------------------------------------------- studies

def split_values(text: str) -> list[str]:
    """V1,V2,... split at the commas outside brackets, braces and quotes, so
    that list values stay whole: "[49,4,4],[49,8,4]" -> ["[49,4,4]", "[49,8,4]"]."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    if depth != 0 or quote or any(not p.strip() for p in parts):
        raise UserError(f"--sweep: cannot split {text!r} into values V1,V2,... (an empty value or an unclosed "
                        "bracket or quote)")
    return [p.strip() for p in parts]


def _study_modules():
    try:
        from . import studies
        from .studies import plot as study_plot
    except ImportError as exc:
        raise UserError(f"studies need dask[distributed], xarray and h5netcdf ({exc}); "
                        "install them with: pip install 'mgd-emu[study]'") from None
    return studies, study_plot


def _resume_command(args) -> str:
    """The study's command line as given (its --set overrides and where it
    runs included), with --resume: what continues this study."""
    import shlex

    argv = list(getattr(args, "argv", None) or ["study", str(args.file)])
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["mgd-emu", *argv])


def cmd_study(args) -> int:
    studies, study_plot = _study_modules()
    from .studies.runner import JOURNAL
    from .studies.spec import parse_study_override

    study = studies.load_study(args.file, dict(parse_study_override(i) for i in args.set or []))
    out = Path(args.output) if args.output else Path("traces") / "studies" / study.name
    if args.collect:
        if not (out / JOURNAL).exists():
            raise UserError(f"--collect: {out / JOURNAL} does not exist (give the study's folder with -o)")
        ds = studies.collect(out)
        a = ds.attrs
        if a["study_name"] != study.name:
            raise UserError(f"--collect: {out / JOURNAL} holds the study {a['study_name']!r}, not {study.name!r} "
                            f"({args.file})")
        if args.set:   # the keys the --set change, against the study as the journal recorded it
            from .studies.results import read_journal

            recorded = read_journal(out / JOURNAL)[0][-1]["study"]
            given, plain = study.to_dict(), studies.load_study(args.file).to_dict()
            changed = sorted(k for k in given if given[k] != plain[k] and recorded.get(k) != given[k])
            if changed:
                raise UserError(f"--collect writes the study {out / JOURNAL} holds as it ran; with your --set its "
                                f"{', '.join(changed)} would differ: leave --set out, or run the study with "
                                f"--resume and these --set (a change of targets is worked out from the recorded "
                                f"evaluations)")
        with _writing(out, "-o"):
            paths = studies.write_results(ds, out)
            if not args.no_plot and a["runs_ok"]:
                paths.append(study_plot.plot_results(ds, out / "results.png"))
        state = (f"{a['runs_ok']} of {a['runs']} runs ok, {a['runs_failed']} failed, {a['runs_missing']} not run"
                 + ("" if a["complete"] else " (incomplete)"))
        if args.json:
            json.dump({"study": a["study_name"], "output": str(out), "runs": a["runs"], "runs_ok": a["runs_ok"],
                       "runs_failed": a["runs_failed"], "runs_missing": a["runs_missing"],
                       "complete": bool(a["complete"]), "results": [str(p) for p in paths]}, sys.stdout, indent=2)
            print()
        else:
            if not args.quiet:
                print(f"mgd-emu: collected {out / JOURNAL}: {state}", file=sys.stderr)
            for path in paths:
                print(path)
        return 0
    if args.workers is not None and (args.scheduler or args.scheduler_file):
        raise UserError("--workers starts a local cluster; --scheduler/--scheduler-file use an existing one: "
                        "give one of them")
    if args.scheduler and args.scheduler_file:
        raise UserError("--scheduler and --scheduler-file both name the scheduler: give one of them")
    if args.scheduler_file and not Path(args.scheduler_file).is_file():
        raise UserError(f"--scheduler-file {args.scheduler_file}: no such file")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers: must be 0 (run in this process) or more, got {args.workers}")
    _check_output(out, "-o", folder=True)
    if args.resume and not (out / JOURNAL).exists():
        raise UserError(f"--resume: {out / JOURNAL} does not exist; nothing to resume (leave out --resume "
                        "to start the study)")
    quiet = args.quiet or args.json
    log = None if quiet else (lambda text: print(f"mgd-emu: {text}", file=sys.stderr))
    where = ("this process" if args.workers == 0 else args.scheduler or args.scheduler_file
             or f"a local cluster of {args.workers or studies.runner.cores()} worker processes")
    announce = (f"study {study.name}: {len(study.points())} point(s) x {len(study.seeds)} seed(s) = {study.n_runs} "
                f"runs of up to {study.cycles:,} cycles, on {where}; results in {out}")
    import logging

    if args.workers != 0:
        import importlib

        importlib.import_module("distributed")   # its logging set-up first, then the level below
    # the dask client logs a traceback when its scheduler goes away, and the nannies of a local cluster
    # stopped by Ctrl-C log the workers they kill: the study says what happened in one line
    quieted = [logging.getLogger(name) for name in ("distributed.client", "distributed.nanny",
                                                    "distributed.worker", "distributed.core")]
    levels = [logger.level for logger in quieted]
    for logger in quieted:
        logger.setLevel(logging.CRITICAL)
    try:
        outcome = studies.run_study(study, out, scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                                    workers=args.workers or None, serial=args.workers == 0,
                                    resume=args.resume, progress=not quiet, log=log, announce=announce)
    except (OutputError, studies.runner.SchedulerLost) as exc:
        # the journal or the results could not be written (a full disk, say), or the
        # scheduler went away: the runs recorded are kept
        kept = ""
        if (out / JOURNAL).exists():
            when = "once there is room, " if isinstance(exc, OutputError) else ""
            kept = (f"; every run finished before it is in {out / JOURNAL}: {when}"
                    f"`{_resume_command(args)}` runs the rest and writes the results")
        raise UserError(f"{exc}{kept}") from None
    except KeyboardInterrupt as exc:   # SIGINT, SIGTERM, SIGHUP (errors.Interrupted)
        print(f"\nmgd-emu: interrupted by {signal_name(exc)}; every finished run is in {out / JOURNAL}: "
              f"`{_resume_command(args)}` runs the rest", file=sys.stderr)
        return exit_status(exc)
    finally:
        for logger, level in zip(quieted, levels):
            logger.setLevel(level)
    paths = list(outcome.paths)
    if not args.no_plot and outcome.dataset.attrs["runs_ok"]:
        png = out / "results.png"
        with _writing(png, "-o"):
            paths.append(study_plot.plot_results(outcome.dataset, png))
    s = study_plot.summarize(outcome.dataset)
    failures = [{"values": r["values"], "seed": r["seed"], "error": r["error"]} for r in outcome.failures]
    if args.json:
        json.dump({"study": study.name, "source": study.source, "output": str(out), "runs": study.n_runs,
                   "ran": outcome.ran, "skipped": outcome.skipped, "failed": len(failures),
                   "startup_s": outcome.startup_s, "compile_s": outcome.compile_s, "wall_s": outcome.wall_s,
                   "results": [str(p) for p in paths], "failures": failures,
                   "points": _study_points(study, s, outcome.dataset)}, sys.stdout, indent=2, default=_json_default)
        print()
    else:
        _print_study(study, outcome, s, paths, failures)
    return 1 if failures else 0


def _study_points(study, s, ds) -> list[dict]:
    """Each grid point's summary: at the highest target (`target`, as the
    table shows it), and at every target of the study (`targets`)."""
    import numpy as np

    from .studies.plot import summarize

    fin = lambda v: float(v) if np.isfinite(v) else None
    each = {float(t): summarize(ds, float(t)) for t in ds["target"].values}
    return [{"values": p.values, "runs_ok": int(s["n_ok"][p.index]), "target": s["target"],
             "reached": int(s["reached"][p.index]), "median_cycles_to_target": fin(s["median"][p.index]),
             "median_final_accuracy": fin(s["acc_median"][p.index]),
             "targets": [{"target": t, "reached": int(e["reached"][p.index]),
                          "median_cycles_to_target": fin(e["median"][p.index])} for t, e in each.items()]}
            for p in study.points()]


def _short_label(study, point) -> str:
    """A grid point for the summary table, as the plots label it: NAME=VALUE
    per dimension (a zip group's values joined by " / "), or NAME[i] (its
    i-th value, as in the CSV) where they would run past LONG_LABEL
    characters (a zip group of format tables, say)."""
    from .studies.plot import point_label, value_labels

    return ", ".join(point_label(dim.name, value_labels(dim.name, dim.keys, dim.values)[i])
                     for dim, i in zip(study.dimensions, point.index)) or "base chip"


def _print_study(study, outcome, s, paths, failures, max_rows=40) -> None:
    import numpy as np

    ds = outcome.dataset
    a = ds.attrs
    print(f"study           {study.name} ({study.source}): {a['runs']} runs, {a['runs_ok']} ok, "
          f"{a['runs_failed']} failed" + (f", {a['runs_missing']} not run" if a["runs_missing"] else "")
          + (f"; {outcome.skipped} were in the journal already" if outcome.skipped else ""))
    print(f"wall time       {_eta(outcome.wall_s)} (cluster start {outcome.startup_s:.1f} s, "
          f"compile {outcome.compile_s:.1f} s)")
    t = s["target"]
    points = study.points()
    labels = [_short_label(study, p) for p in points]
    w = min(60, max(12, *(len(x) for x in labels)))
    print(f"\n{'grid point':<{w}}  {'runs ok':>7}  {'final accuracy (median, range)':>30}  "
          f"{'cycles to ' + format(t, 'g') + ' (median, reached)':>32}")
    for p, label in zip(points[:max_rows], labels):
        i = p.index
        if s["n_ok"][i] == 0:
            acc, reach = "-", "-"
        else:
            acc = f"{s['acc_median'][i]:.3f} ({s['acc_lo'][i]:.2f}-{s['acc_hi'][i]:.2f})"
            m = s["median"][i]
            reach = f"{(f'{m:,.0f}' if np.isfinite(m) else 'not reached')} ({s['reached'][i]}/{s['n_ok'][i]})"
        print(f"{label:<{w}}  {int(s['n_ok'][i]):>3}/{len(study.seeds):<3}  {acc:>30}  {reach:>32}")
    if len(points) > max_rows:
        print(f"... {len(points) - max_rows} more points: see the CSV")
    for dim in study.dimensions:
        if len(dim.keys) > 1:   # a zip group: which keys its values are
            print(f"{dim.name:<15} [zip.{dim.name}]: {' / '.join(dim.keys)}")
    from .studies.plot import value_labels

    if any(value_labels(d.name, d.keys, d.values)[0].startswith(f"{d.name}[") for d in study.dimensions):
        print("NAME[i]: the i-th values of that grid key or [zip.NAME] group (the CSV has them in full)")
    if "saturation_warning" in ds:
        warned = int((ds["saturation_warning"].values != "").sum())
        if warned:
            print(f"warning         {warned} run(s) saturate or wrap a register in 5 % or more of its writes "
                  f"(saturation_warning in the CSV says which and why; docs/scaling.md)")
    print()
    for path in paths:
        print(f"results         {path}")
    if failures:
        print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
        for f in failures[:20]:
            label = ", ".join(f"{k}={v}" for k, v in f["values"].items()) or "base chip"
            print(f"  {label}, seed {f['seed']}: {f['error']}", file=sys.stderr)
        if len(failures) > 20:
            print(f"  ... {len(failures) - 20} more: see the status and error columns of the CSV", file=sys.stderr)


def cmd_plot_study(args) -> int:
    studies, study_plot = _study_modules()
    src = Path(args.trace)
    ds = studies.open_results(src)
    stem = "results" if src.is_dir() or src.name == "journal.jsonl" else src.stem
    default = (src if src.is_dir() else src.parent) / f"{stem}.png"
    # into a folder of its own choosing, a study's picture is named after the study
    out = _image_target(args.output, default, ds.attrs.get("study_name", stem) if stem == "results" else stem, "-o")
    target = args.target
    targets = [float(x) for x in ds["target"].values]
    if target is not None and target not in targets:
        raise UserError(f"--target {target:g}: the study recorded targets {', '.join(f'{x:g}' for x in targets)}")
    if not ds.attrs["runs_ok"]:
        raise UserError(f"{src}: no run of the study has succeeded yet; nothing to plot")
    with _writing(out, "-o"):
        png = study_plot.plot_results(ds, out, target)
    print(png)
    return 0


# ------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mgd-emu", description="Cycle-accurate emulator of chips that train "
                                "themselves with multiplexed gradient descent (MGD).")
    p.add_argument("--version", action="version", version=f"mgd-emu {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chip_help = "a chip file, or the name of a shipped chip (see `mgd-emu chips`)"
    set_help = "override a key of the chip description, e.g. formats.weight.frac_bits=5 (repeatable)"

    s = sub.add_parser("chips", help="list the shipped chip descriptions",
                       description="List the chip descriptions shipped in hw_models/.")
    s.set_defaults(func=cmd_chips)

    s = sub.add_parser("cache", help="where compiled kernels are cached, and their size",
                       description="Show the compiled-kernel cache: this version's folder and those "
                       "of other source versions (each edit of the package's kernels starts a new "
                       "folder); --prune deletes the other versions' folders.")
    s.add_argument("--prune", action="store_true", help="delete the kernel folders of other source versions")
    s.set_defaults(func=cmd_cache)

    s = sub.add_parser("show", help="print a chip's fully resolved description (TOML)",
                       description="Print a chip's fully resolved description, or its registers.")
    s.add_argument("chip", help=chip_help)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    s.add_argument("--registers", action="store_true", help="list the registers (probe names), shapes and formats")
    s.set_defaults(func=cmd_show)

    def run_options(s, cycles, eval_every, demo=False):
        s.add_argument("--cycles", type=_positive, default=cycles, metavar="N",
                       help=f"cycles to run at most (default {cycles:,})")
        s.add_argument("--seed", type=_seed, default=None, metavar="S", help="chip seed (default 0)")
        s.add_argument("--eval-every", type=_positive, default=eval_every, metavar="N",
                       help=f"evaluate test accuracy every N cycles (default {eval_every:,})")
        s.add_argument("--until-accuracy", type=_accuracy, default=None, metavar="A",
                       help="stop when the test accuracy (0 to 1) first reaches A and report that cycle "
                       "(as exact as --eval-every)" + (" (default 1.0)" if demo else ""))
        s.add_argument("--trace", metavar="PATH", help="write an HDF5 trace to PATH (default: "
                       + ("always, " if demo else "when anything is probed (--probe or the chip's [trace] "
                          "section), ") + "traces/<chip>-s<seed>-<time>-<pid>.h5)")
        s.add_argument("--probe", action="append", metavar="SPEC",
                       help='record a register: "NAME[INDEX] every=K window=A:B", e.g. "layer0.weight[0, :] every=10" '
                       "(repeatable; see traces/README.md)" + (
                           "; default: cost, weights, biases and their integrators" if demo else ""))
        s.add_argument("--no-plot", action="store_true", help="do not draw a plot next to the trace")
        s.add_argument("--twin", action="store_true",
                       help="also run the float-ideal twin (float formats, zero latency) and report where they diverge")
        s.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
        s.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    s = sub.add_parser("run", help="train a chip and report accuracy, cycles and speed",
                       description="Train a chip on its task, evaluating as it goes.")
    s.add_argument("chip", nargs="?", help=chip_help + " (none with --resume)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    run_options(s, 1_000_000, DEFAULT_EVAL_EVERY)
    s.add_argument("--checkpoint", metavar="FILE", help="save the run's whole state to FILE (NPZ; loading it "
                   "executes nothing) every --checkpoint-every cycles and where the run ends")
    s.add_argument("--checkpoint-every", type=_positive, metavar="N", help="cycles between checkpoints, a "
                   "multiple of --eval-every (default: every evaluation)")
    s.add_argument("--resume", metavar="FILE", help="continue the run saved in FILE bit-exactly, to --cycles "
                   "in total (its chip, seed and probes; --checkpoint FILE keeps saving it)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("demo", help="train the default chip, with a trace and a plot (what `make run` does)",
                       description=f"Train hw_models/{DEFAULT_CHIP} until it classifies XOR perfectly, "
                       "writing a trace and a plot under traces/.")
    run_options(s, 2_000_000, DEFAULT_EVAL_EVERY, demo=True)
    s.set_defaults(func=cmd_demo, until_accuracy=1.0)

    s = sub.add_parser("inspect", help="summarise a trace", description="Summarise a trace file.")
    s.add_argument("trace", help="an HDF5 trace written by mgd-emu")
    s.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("plot", help="plot cost, accuracy, weights and gradients from a trace",
                       description="Draw cost and accuracy over cycles, weight trajectories and (when the "
                       "integrators were probed) the gradient estimate against the exact gradient.")
    s.add_argument("trace", help="an HDF5 trace written by mgd-emu, or study results "
                   "(a results.nc, or a study folder: its results or its journal)")
    s.add_argument("-o", "--output", metavar="PNG", help="output image: a file name ending in .png, .pdf, .svg, "
                   "... or a folder (then FOLDER/<trace name>.png); default: the trace's name with .png")
    s.add_argument("--target", type=_accuracy, default=None, metavar="A",
                   help="study results only: the accuracy target to draw (default: the study's highest)")
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("export", help="export a trace as VCD waveforms or RTL golden vectors",
                       description="Export a trace: `vcd` writes a VCD file and a GTKWave save file; "
                       "`golden` writes $readmemh stimulus/response vectors of one block and a manifest.")
    s.add_argument("kind", choices=("vcd", "golden", "rtl"), help="what to export (rtl: a synapse's golden "
                   "vectors with corner cases and its Verilog header, for rtl/mgd_synapse.v)")
    s.add_argument("trace", help="an HDF5 trace written by mgd-emu")
    s.add_argument("-o", "--output", metavar="PATH", help="vcd: output file (default: the trace's name with "
                   ".vcd; the .gtkw goes beside it); golden: output folder (default: the trace's name without .h5); "
                   "rtl: output folder (default: the trace's name + _rtl)")
    s.add_argument("--signals", nargs="+", metavar="NAME", help="vcd only: the signals to export (default: all)")
    s.add_argument("--window", type=_window, metavar="A:B", help="cycles A (inclusive) to B (exclusive); "
                   "A: to the end, :B from the start (default: every cycle the signals cover)")
    s.add_argument("--block", default=None, metavar="BLOCK",
                   help="golden and rtl: synapse (the first fully probed parameter), synapse:layer1.weight[0,1], "
                   "or layer0 (default synapse)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("compare", help="run design points side by side on the same seeds",
                       description="Run two or more chips (or one chip with --sweep) on the same seeds and "
                       "print a table and a plot of accuracy over cycles.")
    s.add_argument("chips", nargs="+", metavar="CHIP", help=chip_help)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help + ", applied to every chip")
    s.add_argument("--sweep", metavar="KEY=V1,V2,...", help="one chip, one key, several values")
    s.add_argument("--seeds", type=_seed, nargs="+", default=[0, 1, 2], metavar="S", help="seeds (default 0 1 2)")
    s.add_argument("--cycles", type=_positive, default=200_000, metavar="N",
                   help="cycles per run (default 200,000)")
    s.add_argument("--eval-every", type=_positive, default=5_000, metavar="N",
                   help="evaluate every N cycles (default 5,000)")
    s.add_argument("-o", "--output", metavar="PNG", help="plot file, ending in .png, .pdf, .svg, ..., or a folder "
                   "(default traces/compare-<time>.png); checked before the runs start")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    s.set_defaults(func=cmd_compare)

    from .rtl import FAULTS
    s = sub.add_parser("rtl-replay", help="replay `export rtl` vectors through the reference RTL "
                       "(Icarus Verilog + cocotb)", description="Replay the synapse vectors of `mgd-emu export "
                       "rtl` through rtl/mgd_synapse.v under Icarus Verilog, cycle by cycle; report the first "
                       "differing row, cycle and register.")
    s.add_argument("vectors", help="the synapse/ folder written by `mgd-emu export rtl`")
    s.add_argument("--fault", default="none", choices=list(FAULTS),
                   help="compile a known design error into the RTL, to see the vectors catch it")
    s.add_argument("--waves", metavar="FST", help="dump the synapse's signals into this FST file (GTKWave)")
    s.set_defaults(func=cmd_rtl_replay)

    s = sub.add_parser("study", help="run a design-space study: a grid of chip keys x seeds, on dask",
                       description="Run every (grid point, seed) of a study file (see studies/README.md) on a "
                       "dask.distributed cluster, journalling each finished run, then write DIR/results.nc "
                       "(xarray/netCDF), DIR/results.csv and DIR/results.png. Exit status 1 when a run failed.")
    s.add_argument("file", help="a study description (TOML)")
    s.add_argument("-o", "--output", metavar="DIR", help="folder for the journal and results "
                   "(default traces/studies/<study name>)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a study key: study.cycles=50000, grid.timing.tau_theta=[1,4], "
                   "zip.GROUP.KEY=[...], set.optimizer.learning_rate=0.1 (repeatable)")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of the local cluster (default: one per core); 0 runs in this process")
    s.add_argument("--scheduler", metavar="ADDRESS", help="use a running dask scheduler, e.g. tcp://10.0.0.1:8786")
    s.add_argument("--scheduler-file", metavar="FILE", help="use the dask scheduler described in FILE "
                   "(dask scheduler --scheduler-file FILE)")
    s.add_argument("--resume", action="store_true", help="continue the study in DIR: run only the runs its "
                   "journal lacks (and those that failed)")
    s.add_argument("--collect", action="store_true", help="only write DIR's results from its journal, as far as "
                   "it goes (a study still running or interrupted)")
    s.add_argument("--no-plot", action="store_true", help="do not draw DIR/results.png")
    s.add_argument("--quiet", action="store_true", help="no progress bar or messages on stderr")
    s.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    s.set_defaults(func=cmd_study)
    return p


def main(argv=None) -> int:
    """Run one command; returns the exit status (module docstring)."""
    from .errors import end_startup

    install_signal_handlers()
    try:
        end_startup()
        status = _main(argv)
    except KeyboardInterrupt as exc:  # SIGINT, SIGTERM, SIGHUP: Interrupted
        note = getattr(exc, "mgd_note", None)
        report(f"interrupted by {signal_name(exc)}" + (f"; {note}" if note else ""))
        status = exit_status(exc)
        if _is_entry_point():
            # a second signal while the process exits is ignored, as during the clean-up: Python's exit
            # restores the default disposition, which would end the process with the second one's status
            import signal

            from .errors import HANDLED_SIGNALS

            for s in HANDLED_SIGNALS:
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(s, signal.SIG_IGN)
    trace = sys.modules.get("mgd_emu.trace")
    if trace is not None and trace.UNCLOSED and _is_entry_point():
        # a trace that could not be written: skip HDF5's exit handlers (trace.UNCLOSED)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
    return status


def _is_entry_point() -> bool:
    """Whether this process is the `mgd-emu` command (not a library caller of main)."""
    main = sys.modules.get("__main__")
    return __name__ == "__main__" or os.path.basename(sys.argv[0]) == "mgd-emu" or \
        getattr(main, "__spec__", None) is not None and main.__spec__.name == "mgd_emu.cli"


def _main(argv) -> int:
    from .limits import ResourceError
    from .probes import ProbeError
    from .spec import ChipError
    from .trace import TraceError

    parser = build_parser()
    _ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # as typed, for the hints that repeat it
    if getattr(args, "seed", 0) is None and not getattr(args, "resume", None):
        args.seed = 0   # --resume takes the checkpoint's seed (None: not given)
    try:
        return args.func(args)
    except (ChipError, UserError, TraceError, ProbeError, OutputError, ResourceError) as err:
        note = getattr(err, "mgd_note", None)
        report(f"error: {_one_line(err)}" + (f"; {note}" if note else ""))
        return 2
    except BrokenPipeError:  # e.g. `mgd-emu show --registers | head`
        from .errors import exit_on_broken_pipe

        return exit_on_broken_pipe()
    except (OSError, MemoryError) as exc:  # the machine, not the user: still one line
        where = getattr(exc, "filename", None)
        note = getattr(exc, "mgd_note", None)
        report(f"error: {where + ': ' if where else ''}{describe(exc)}" + (f"; {note}" if note else ""))
        return 2


if __name__ == "__main__":
    sys.exit(main())
