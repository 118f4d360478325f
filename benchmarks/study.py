"""Study throughput: 16 runs of about 1 s each, serially in one process and on
a LocalCluster of 2 worker processes (`make bench-study`), in rounds: each
round times the serial and the distributed study back to back (the order
swapped each round), and the median round's speed-up is reported.

Reports the cluster's start-up (processes up, kernels loaded from the
on-disk cache by the warm-up task) apart from the runs, the speed-up with
and without it, and checks that both give the same results bit for bit. It
also times the same run in plain processes, alone and `workers` at once
(in rounds too): the speed-up the machine itself allows.

    python benchmarks/study.py [--runs 16] [--seconds 1.0] [--workers 2] [--rounds 3] [--chip xor_8bit]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from mgd_emu import __version__  # noqa: E402
from mgd_emu.studies import loads_study, run_study  # noqa: E402

# One run in a plain process of its own: what the machine gives a process.
PLAIN = """
import sys, time
from mgd_emu import load_chip
from mgd_emu.engine import Emulator
from mgd_emu.studies.spec import _find_chip
e = Emulator(load_chip(_find_chip(sys.argv[1], None)), 0)
e.warm_up()
t = time.perf_counter()
e.run(int(sys.argv[2]))
print(time.perf_counter() - t)
"""


def plain_processes(chip: str, cycles: int, n: int) -> list[float]:
    """Seconds of one run in each of n plain processes started together."""
    import subprocess

    procs = [subprocess.Popen([sys.executable, "-c", PLAIN, chip, str(cycles)], stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    return [float(p.communicate()[0]) for p in procs]


SAME = ["accuracy", "cost", "cycles_to_target", "saturations", "wraps", "status", "final_accuracy", "cycles_run"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=1.0, help="wall time of one run, serially")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of (serial, distributed) timed back to back; the median round is reported")
    ap.add_argument("--chip", default="xor_8bit")
    ap.add_argument("-o", "--output", default=str(Path(__file__).parent / "results" / "study.json"))
    args = ap.parse_args()
    if args.rounds < 1 or args.rounds % 2 == 0:
        ap.error("--rounds: an odd number, at least 1 (the median round is reported)")

    from mgd_emu.engine import Emulator
    from mgd_emu.studies.spec import _find_chip
    from mgd_emu import load_chip

    # calibrate: cycles that take `seconds` in this process
    emu = Emulator(load_chip(_find_chip(args.chip, None)), 0)
    emu.warm_up()
    t = time.perf_counter()
    emu.run(200_000)
    rate = 200_000 / (time.perf_counter() - t)
    cycles = int(rate * args.seconds) // 10 * 10
    text = (f'[study]\nchip = "{args.chip}"\nseeds = {list(range(args.runs))}\ncycles = {cycles}\n'
            f"eval_every = {cycles // 10}\ntargets = [1.0]\n")
    study = loads_study(text, "benchmark")
    print(f"{args.runs} runs of {cycles:,} cycles of {args.chip} (~{args.seconds:g} s each at {rate:,.0f} cycles/s)",
          file=sys.stderr)

    from dask.distributed import Client

    from mgd_emu.studies import local_cluster

    t = time.perf_counter()
    cluster = local_cluster(args.workers)
    client = Client(cluster)
    startup_s = time.perf_counter() - t
    # Rounds of (serial, distributed) back to back, the order swapped each
    # round: this VM's speed drifts by 30 % within a minute, and a pair
    # timed together sees the same machine.
    rounds = []
    for r in range(args.rounds):
        timed = {}
        for how in (("serial", "cluster") if r % 2 == 0 else ("cluster", "serial")):
            t = time.perf_counter()
            outcome = run_study(study, serial=True) if how == "serial" else run_study(study, client=client)
            timed[how] = (time.perf_counter() - t, outcome)
        (serial_s, serial), (dist_s, dist) = timed["serial"], timed["cluster"]
        rounds.append({"serial_s": serial_s, "distributed_s": dist_s, "warm_up_s": dist.compile_s,
                       "speedup": serial_s / dist_s, "serial": serial, "dist": dist})
        print(f"round {r + 1}: serial {serial_s:.2f} s, {args.workers} workers {dist_s:.2f} s "
              f"(warm-up {dist.compile_s:.2f} s): {serial_s / dist_s:.2f}x", file=sys.stderr)
    client.close()
    cluster.close()
    median = sorted(rounds, key=lambda r: r["speedup"])[len(rounds) // 2]
    serial_s, dist_s, serial, dist = median["serial_s"], median["distributed_s"], median["serial"], median["dist"]
    # A study pays the workers' warm-up once, in its first distributed round;
    # later rounds find the kernels loaded. "Counting the start" adds the
    # first round's warm-up in place of the median round's own.
    first_warm_up = rounds[0]["warm_up_s"]
    with_start_s = startup_s + first_warm_up + dist_s - median["warm_up_s"]
    # The machine without dask: the same run in 1 plain process, then in
    # `workers` at once, then in 1 again, in rounds; the median round's ratio.
    plain = []
    for _ in range(args.rounds):
        before = plain_processes(args.chip, cycles, 1)[0]
        together = plain_processes(args.chip, cycles, args.workers)
        after = plain_processes(args.chip, cycles, 1)[0]
        plain.append({"alone_s": (before + after) / 2, "together_s": together,
                      "speedup": args.workers * (before + after) / 2 / max(together)})
    machine_round = sorted(plain, key=lambda r: r["speedup"])[len(plain) // 2]
    alone, together, machine = machine_round["alone_s"], machine_round["together_s"], machine_round["speedup"]
    identical = all(r["serial"].dataset[v].equals(r["dist"].dataset[v]) and
                    r["serial"].dataset[v].equals(rounds[0]["serial"].dataset[v])
                    for r in rounds for v in SAME)
    # Where the distributed time went: each worker's busy time (its runs,
    # emulator build included) against the elapsed time. On a machine shared
    # with other work the runs themselves slow down; the overhead does not.
    ds = dist.dataset
    busy: dict[str, float] = {}
    for w, wall, start in zip(ds.worker.values.ravel(), ds.wall_s.values.ravel(), ds.startup_s.values.ravel()):
        busy[w] = busy.get(w, 0.0) + float(wall) + float(start)
    serial_runs_s = float(serial.dataset.wall_s.sum() + serial.dataset.startup_s.sum())
    result = {
        "mgd_emu_version": __version__, "machine": platform.machine(), "cpus": os.cpu_count(),
        "chip": args.chip, "runs": args.runs, "cycles_per_run": cycles, "workers": args.workers,
        "serial_s": serial_s, "cluster_startup_s": startup_s, "warm_up_s": first_warm_up,
        "distributed_s": dist_s, "speedup_runs": serial_s / dist_s,
        "rounds": [{k: v for k, v in r.items() if k not in ("serial", "dist")} for r in rounds],
        "speedup_with_startup": serial_s / with_start_s, "bit_identical": identical,
        "serial_run_s": serial_runs_s, "worker_busy_s": busy,
        "slowdown_of_a_run_on_the_cluster": sum(busy.values()) / serial_runs_s,
        "overhead_s": dist_s - dist.compile_s - max(busy.values()),
        "plain_process_alone_s": alone, "plain_processes_together_s": together,
        "machine_parallel_speedup": machine, "machine_rounds": plain,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print(f"median round: {args.workers} workers: cluster start {startup_s:.2f} s, then {dist_s:.2f} s "
          f"(warm-up {dist.compile_s:.2f} s of it; {first_warm_up:.2f} s in the first round): speed-up "
          f"{result['speedup_runs']:.2f}x "
          f"({result['speedup_with_startup']:.2f}x counting the start); bit-identical: {identical}", file=sys.stderr)
    print(f"workers busy {', '.join(f'{b:.2f} s' for b in busy.values())}; a run took "
          f"{result['slowdown_of_a_run_on_the_cluster']:.2f}x its serial time; scheduling overhead "
          f"{result['overhead_s']:.2f} s; load average {result['load_average']:.1f} on {os.cpu_count()} cpus",
          file=sys.stderr)
    rounds_text = ", ".join(f"{r['speedup']:.2f}x" for r in plain)
    print(f"the machine without dask (median of {args.rounds} rounds): one run alone {alone:.2f} s, {args.workers} "
          f"plain processes at once {', '.join(f'{t:.2f} s' for t in together)}: at most {machine:.2f}x from "
          f"{args.workers} processes here ({rounds_text})", file=sys.stderr)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
