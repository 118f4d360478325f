"""Two source trees of mgd-emu A/B: the emulator and the speed-of-light
kernel of each tree, timed in alternating processes, with a digest of the
chip's state after 2,000 cycles (the bits must not change).

    git worktree add /tmp/before <commit>
    python benchmarks/ab.py /tmp/before . --chips 784-node 784-weight --rounds 3

Each round runs one process per tree, one after the other, so that load
from elsewhere hits both alike. A process times the emulator and its tree's
own `speed_of_light.SpeedOfLight` in alternation (`run.rates`, one thread)
and prints cycles/s, emu/SoL and the digest. Compare emu cycles/s across the
trees; emu/SoL only where both trees' SoL kernels are the same.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

CHIPS = ("digits", "64-64-10", "784-node", "784-weight", "xor_8bit")


def measure(chip_name: str) -> dict:
    """In a child process whose tree is on sys.path: one chip's figures."""
    import numba
    import numpy as np

    import run as B

    numba.set_num_threads(1)
    B.configure(False)
    # Built from run.py's helpers that every tree has (chip, wide, WIDE, WEIGHT_MODE): an older tree's
    # run.py is what this child imports.
    chips = {"digits": lambda: B.chip("digits_8bit"),
             "64-64-10": lambda: B.chip("digits_8bit", {"network.layers": [64, 64, 10]}),
             "784-node": lambda: B.wide("digits_8bit", [784, 256, 10], B.WIDE),
             "784-weight": lambda: B.wide("digits_8bit", [784, 256, 10], {**B.WIDE, **B.WEIGHT_MODE}),
             "xor_8bit": lambda: B.chip("xor_8bit")}
    c = chips[chip_name]()
    emu = B.build(c, parallel=False)
    sol, _ = B.sol_of(c)
    r = B.rates({"emu": emu.run, "sol": sol.run}, 10)
    fresh = B.build(c, parallel=False)
    fresh.run(2000)
    h = hashlib.sha256()
    for name, arr in sorted(fresh.checkpoint()["state"].items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return {"emu": r["emu"], "sol": r["sol"], "digest": h.hexdigest()[:16]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs=2, type=Path, help="two mgd-emu source trees (A, B)")
    ap.add_argument("--chips", nargs="+", choices=CHIPS, default=["784-node"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.child)))
        return 0
    same = True
    for chip in a.chips:
        digests = set()
        for rnd in range(a.rounds):
            for tree in a.trees:
                tree = tree.resolve()
                env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'benchmarks'}",
                       "MGD_EMU_CACHE_DIR": str(Path(os.environ.get("TMPDIR", "/tmp")) / f"mgd-ab-{tree.name}")}
                out = subprocess.run([sys.executable, str(tree / "benchmarks" / "ab.py"), ".", ".",
                                      "--child", chip], env=env, capture_output=True, text=True, cwd=tree)
                if out.returncode != 0:
                    print(out.stderr[-2000:], file=sys.stderr)
                    return 2
                m = json.loads(out.stdout.strip().splitlines()[-1])
                digests.add(m["digest"])
                print(f"{chip:10s} round {rnd}  {str(tree):30s}  emu {m['emu']:10.4g} cycles/s "
                      f"({1e9 / m['emu']:9.0f} ns)  emu/SoL {m['emu'] / m['sol']:.3f}  digest {m['digest']}",
                      flush=True)
        if len(digests) != 1:
            print(f"{chip}: THE TREES' STATES DIFFER after 2,000 cycles")
            same = False
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
