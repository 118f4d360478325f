"""The `mgd-emu` command line.

Results go to stdout, progress and diagnostics to stderr. A user mistake
prints one line `mgd-emu: error: ...` and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .spec import ChipError, load_chip, parse_override

HW_MODELS = Path(__file__).resolve().parent.parent / "hw_models"
DEFAULT_CHIP = "xor_8bit.toml"


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line."""


def find_chip(name: str) -> Path:
    """A chip file by path, or by name among the shipped ones."""
    path = Path(name)
    if path.exists() or path.suffix == ".toml" and path.parent != Path("."):
        return path
    shipped = HW_MODELS / (name if name.endswith(".toml") else name + ".toml")
    return shipped if shipped.exists() else path


def _load(args) -> "Chip":
    overrides = dict(parse_override(item) for item in (getattr(args, "set", None) or []))
    return load_chip(find_chip(args.chip), overrides)


def cmd_chips(args) -> int:
    for path in sorted(HW_MODELS.glob("*.toml")):
        chip = load_chip(path)
        print(f"{path.stem:<20} {chip.chip.description}")
    return 0


def cmd_show(args) -> int:
    sys.stdout.write(_load(args).to_toml())
    return 0


def train(chip, seed: int, cycles: int, eval_every: int, until_accuracy: float | None,
          quiet: bool) -> dict:
    """Run a chip, evaluating every `eval_every` cycles; returns a summary."""
    from .engine import Emulator

    t0 = time.perf_counter()
    emu = Emulator(chip, seed)
    emu.run(1)  # compile (or load the cached kernels) before timing
    compile_s = time.perf_counter() - t0
    history, reached = [], None
    t_run = time.perf_counter()
    while emu.cycle < cycles:
        emu.run(min(eval_every, cycles - emu.cycle))
        cost, acc = emu.evaluate()
        history.append((emu.cycle, cost, acc))
        if not quiet:
            rate = emu.cycle / max(time.perf_counter() - t_run, 1e-9)
            print(f"\r  cycle {emu.cycle:>12,}/{cycles:,}  {rate:>12,.0f} cycles/s  "
                  f"cost {cost:.4f}  accuracy {acc:.3f}", end="", file=sys.stderr, flush=True)
        if until_accuracy is not None and acc >= until_accuracy and reached is None:
            reached = emu.cycle
            break
    wall = time.perf_counter() - t_run
    if not quiet:
        print(file=sys.stderr)
    cost, acc = history[-1][1:] if history else emu.evaluate()
    return {
        "chip": chip.name, "seed": seed, "cycles": emu.cycle, "steps": emu.step,
        "baseline_cycles": emu.baseline_cycles, "chip_time_s": emu.chip_time,
        "final_cost": cost, "final_accuracy": acc, "reached_cycle": reached,
        "wall_s": wall, "compile_s": compile_s,
        "cycles_per_s": emu.cycle / wall if wall > 0 else None,
        "overflow_events": {k: v for k, v in emu.events.items() if v != (0, 0)},
        "history": history,
    }


def cmd_run(args) -> int:
    chip = _load(args)
    if args.cycles <= 0:
        raise UserError("--cycles must be a positive integer")
    summary = train(chip, args.seed, args.cycles, args.eval_every, args.until_accuracy, args.quiet)
    if args.json:
        json.dump({k: v for k, v in summary.items()}, sys.stdout, indent=2)
        print()
        return 0
    hz = chip.timing.clock_hz
    print(f"chip            {chip.name} (seed {args.seed})")
    print(f"final accuracy  {summary['final_accuracy']:.3f}   cost {summary['final_cost']:.5f}")
    if args.until_accuracy is not None:
        r = summary["reached_cycle"]
        print(f"accuracy {args.until_accuracy} " + (f"first seen at cycle {r:,} ({r / hz:.3g} s of chip time)"
                                                   if r else "not reached"))
    print(f"cycles          {summary['cycles']:,} ({summary['chip_time_s']:.3g} s of chip time at {hz:.3g} Hz)")
    print(f"wall time       {summary['wall_s']:.2f} s, {summary['cycles_per_s']:,.0f} cycles/s "
          f"(+{summary['compile_s']:.2f} s start-up)")
    if summary["overflow_events"]:
        print("overflow events " + ", ".join(f"{k}: {s} saturated, {w} wrapped"
                                             for k, (s, w) in summary["overflow_events"].items()))
    return 0


def cmd_demo(args) -> int:
    args.chip = DEFAULT_CHIP
    args.set = []
    print(f"mgd-emu {__version__}: training the default chip hw_models/{DEFAULT_CHIP} "
          f"(8-bit XOR) until it classifies XOR perfectly.", file=sys.stderr)
    return cmd_run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mgd-emu", description="Cycle-accurate emulator of chips that train "
                                "themselves with multiplexed gradient descent (MGD).")
    p.add_argument("--version", action="version", version=f"mgd-emu {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("chips", help="list the shipped chip descriptions")
    s.set_defaults(func=cmd_chips)

    s = sub.add_parser("show", help="print a chip's fully resolved description (TOML)")
    s.add_argument("chip", help="a chip file, or the name of a shipped chip")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. formats.weight.frac_bits=5")
    s.set_defaults(func=cmd_show)

    def run_options(s, cycles):
        s.add_argument("--cycles", type=int, default=cycles, help=f"cycles to run at most (default {cycles:,})")
        s.add_argument("--seed", type=int, default=0, help="chip seed (default 0)")
        s.add_argument("--eval-every", type=int, default=10_000, metavar="N",
                       help="evaluate accuracy every N cycles (default 10,000)")
        s.add_argument("--until-accuracy", type=float, default=None, metavar="A",
                       help="stop when the accuracy first reaches A and report the cycle")
        s.add_argument("--quiet", action="store_true", help="no progress on stderr")
        s.add_argument("--json", action="store_true", help="print the summary as JSON")

    s = sub.add_parser("run", help="train a chip and report accuracy, cycles and speed")
    s.add_argument("chip", help="a chip file, or the name of a shipped chip")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. formats.weight.frac_bits=5")
    run_options(s, 1_000_000)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("demo", help="train the default chip (what `make run` does)")
    run_options(s, 2_000_000)
    s.set_defaults(func=cmd_demo, until_accuracy=1.0)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "eval_every", 1) <= 0:
            raise UserError("--eval-every must be a positive integer")
        return args.func(args)
    except (ChipError, UserError) as err:
        print(f"mgd-emu: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmgd-emu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
