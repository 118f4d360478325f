"""Replay exported synapse vectors through the reference RTL under Icarus
Verilog, with the cocotb testbench of rtl/tb/ (`python -m mgd_emu.rtl_sim`).

Needs the project's rtl/ folder (a source checkout), Icarus Verilog
(`iverilog`, Debian package iverilog) and cocotb (`pip install -e '.[rtl]'`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .fixedpoint import OVERFLOWS, ROUNDINGS
from .rtl import FAULTS, RtlError

RTL_DIR = Path(__file__).resolve().parents[1] / "rtl"
SOURCES = ("mgd_requant.v", "mgd_xorshift64s.v", "mgd_synapse.v", "tb/tb_synapse.v")


def simulator_missing() -> str | None:
    """Why the RTL cannot be simulated here (one line), or None."""
    if shutil.which("iverilog") is None or shutil.which("vvp") is None:
        return "Icarus Verilog is not installed (Debian/Ubuntu: apt-get install iverilog)"
    try:
        import cocotb  # noqa: F401
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        return "cocotb is not installed (pip install -e '.[rtl]')"
    if not all((RTL_DIR / s).exists() for s in SOURCES):
        return f"{RTL_DIR}: the reference RTL is not there (run from a source checkout)"
    return None


def replay_rtl(vectors, fault: str = "none", waves=None, build_dir=None) -> dict:
    """Replay the synapse stream in folder `vectors` (mgd-emu export rtl ... /synapse)
    through rtl/mgd_synapse.v; returns the testbench's report (rows, replayed,
    seconds, mismatch: None or row, cycle, segment, case, register, expected, got).

    fault: a key of rtl.FAULTS, a design error compiled into the RTL;
    waves: an FST file (GTKWave's compressed format) to dump every signal of the synapse into."""
    vectors = Path(vectors).resolve()
    if not (vectors / "manifest.json").exists() or not (vectors / "mgd_chip.vh").exists():
        raise RtlError(f"{vectors}: not an exported synapse folder (no manifest.json and mgd_chip.vh; "
                       f"write one with mgd-emu export rtl TRACE -o DIR, then give DIR/synapse)")
    check_vectors(vectors)
    if waves is not None and Path(waves).suffix != ".fst":
        raise RtlError(f"--waves {waves}: Icarus writes the waveforms as FST; give a file name ending in .fst")
    if waves is not None:
        from .safe_io import OutputError, check_writable

        try:
            for path in (Path(waves), Path(waves).with_suffix(".gtkw")):   # the waves and their save file
                check_writable(path, [vectors / "manifest.json"], "--waves")
        except OutputError as exc:
            raise RtlError(str(exc)) from None
    if fault not in FAULTS:
        raise RtlError(f"--fault {fault!r}: one of {', '.join(FAULTS)}")
    why = simulator_missing()
    if why:
        raise RtlError(why)
    from cocotb_tools.runner import get_runner

    if waves is not None:
        try:
            Path(waves).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RtlError(f"--waves {waves}: its folder cannot be made ({exc.strerror or exc})") from None

    tmp = None
    if build_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mgd-rtl-")
        build_dir = tmp.name
    build_dir = Path(build_dir)
    defines = {"MGD_FAULT": FAULTS[fault]}
    if waves:
        defines["MGD_DUMP"] = f'"{Path(waves).resolve()}"'
    report = build_dir / "report.json"
    try:
        runner = get_runner("icarus")
        t0 = time.perf_counter()
        runner.build(sources=[RTL_DIR / s for s in SOURCES], includes=[vectors], hdl_toplevel="tb_synapse",
                     build_dir=build_dir, defines=defines, always=True, timescale=("1ns", "1ps"),
                     log_file=build_dir / "build.log")
        built = time.perf_counter() - t0
        try:
            # waves: vvp's -fst (cocotb's runner otherwise passes -none, which suppresses $dumpfile)
            runner.test(test_module="test_synapse", hdl_toplevel="tb_synapse", test_dir=RTL_DIR / "tb",
                        build_dir=build_dir, extra_env={"MGD_VECTORS": str(vectors), "MGD_REPORT": str(report)},
                        results_xml=str(build_dir / "results.xml"), log_file=build_dir / "sim.log",
                        waves=bool(waves))
        except SystemExit:   # cocotb's runner exits on a failed test under pytest; the report says why
            pass
        if not report.exists():
            lines = [x.strip() for x in (build_dir / "sim.log").read_text(errors="replace").splitlines()
                     if x.strip()]
            said = next((x for x in reversed(lines) if "Error" in x or "error" in x), lines[-1] if lines else "")
            raise RtlError(f"the testbench wrote no report (the simulator said: {said[:300]})")
        out = json.loads(report.read_text())
        out["build_seconds"] = built
        if waves:
            out["waves"] = [str(p) for p in write_gtkw(vectors, Path(waves))]
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


def check_vectors(folder: Path) -> dict:
    """The manifest of an exported synapse folder, once every column it names
    is there with one hex word per row that fits its width; RtlError naming
    the file otherwise (a damaged folder must not read as an RTL bug)."""
    where = folder / "manifest.json"
    try:
        m = json.loads(where.read_text())
        rows = int(m["rows"])
        columns = list(m["stimulus"]) + list(m["response"])
        if not m["segments"]:
            raise ValueError("no segments")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RtlError(f"{where}: not a manifest mgd-emu export rtl wrote ({type(exc).__name__}: {exc}); "
                       f"export the vectors again") from None
    for c in columns:
        path = folder / str(c.get("file", ""))
        try:
            words = path.read_text().split()
        except OSError as exc:
            raise RtlError(f"{path}: cannot be read ({exc.strerror or exc}); the manifest names it: export "
                           f"the vectors again") from None
        if len(words) != rows:
            raise RtlError(f"{path}: {len(words):,} rows, the manifest says {rows:,}: the folder is damaged "
                           f"or from another export; export the vectors again")
        limit = 1 << int(c["width"])
        for n, w in enumerate(words):
            try:
                ok = 0 <= int(w, 16) < limit
            except ValueError:
                ok = False
            if not ok:
                raise RtlError(f"{path}: row {n}: {w[:20]!r} is not a {c['width']}-bit hex word; export the "
                               f"vectors again")
    return m


def write_gtkw(vectors: Path, waves: Path) -> list[Path]:
    """A GTKWave save file beside `waves` (same name, .gtkw): the clock, then the
    synapse's stimulus and registers, grouped, as signed or unsigned codes."""
    from vcd.gtkw import GTKWSave

    m = json.loads((Path(vectors) / "manifest.json").read_text())
    gtkw = waves.with_suffix(".gtkw")
    with open(gtkw, "w") as fp:
        g = GTKWSave(fp)
        g.comment(f"mgd-emu rtl-replay: chip {m['chip']}, synapse {m['parameter']}")
        g.dumpfile(str(waves.resolve()))
        g.savefile(str(gtkw.resolve()))
        g.trace("tb_synapse.clk")
        for group, cols in (("stimulus", m["stimulus"]), ("registers", m["response"])):
            with g.group(group, closed=False):
                for c in cols:
                    name = f"tb_synapse.{c['name']}" + (f"[{c['width'] - 1}:0]" if c["width"] > 1 else "")
                    g.trace(name, datafmt="signed" if c["signed"] else "dec")
    return [waves, gtkw]


def replay_lfsr(seed: int, amplitude: int, width: int, codes, build_dir=None) -> dict:
    """Load rtl/mgd_lfsr32.v with LFSR state `seed`, step it once per cycle and
    compare its perturbation register with `codes` (signed codes of `width`
    bits, +-amplitude). Returns the report: steps, matched, mismatch."""
    return _run_bench("mgd_lfsr32", "test_lfsr", "MGD_LFSR", {"W_P": int(width), "AMPLITUDE": int(amplitude)},
                      dict(seed=int(seed), codes=[int(c) for c in codes]), "the LFSR", build_dir)


def replay_activation(luts, layer: int, z, a, build_dir=None) -> dict:
    """Apply pre-activation codes `z` to rtl/mgd_act_lut.v loaded with layer
    `layer`'s table from folder `luts` (rtl.write_activation_luts) and compare
    its output with the activation codes `a`. Returns the report: checked, mismatch."""
    luts = Path(luts).resolve()
    defs = {}
    for line in (luts / "act.vh").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "`define" and parts[1].startswith(f"MGD_L{layer}_"):
            defs[parts[1][len(f"MGD_L{layer}_"):]] = parts[2]
    if not defs:
        raise RtlError(f"{luts}/act.vh: no table of layer {layer}")
    entry = json.loads((luts / "activation.json").read_text())["layers"][layer]
    params = {"W_Z": int(defs["W_Z"]), "W_A": int(defs["W_A"]), "DEPTH": int(defs["DEPTH"]),
              "Z_LO": int(defs["Z_LO"]), "LUT_FILE": '"' + str(luts / defs["LUT"].strip('"')) + '"'}
    return _run_bench("mgd_act_lut", "test_act_lut", "MGD_ACT", params,
                      dict(z=[int(v) for v in z], a=[int(v) for v in a], signed=entry["signed"]),
                      "the activation", build_dir)


def _run_bench(toplevel: str, test_module: str, spec_env: str, parameters: dict, spec: dict, what: str,
               build_dir=None) -> dict:
    """Build rtl/<toplevel>.v under Icarus, run the cocotb bench rtl/tb/<test_module>.py
    on the JSON `spec` (its path in $<spec_env>), and return the report it writes."""
    why = simulator_missing()
    if why:
        raise RtlError(why)
    from cocotb_tools.runner import get_runner

    with tempfile.TemporaryDirectory(prefix=f"mgd-{toplevel}-") as tmp:
        build = Path(build_dir or tmp)
        spec_file, report = build / "spec.json", build / "report.json"
        spec_file.write_text(json.dumps(spec))
        runner = get_runner("icarus")
        runner.build(sources=[RTL_DIR / f"{toplevel}.v"], hdl_toplevel=toplevel, build_dir=build,
                     parameters=parameters, always=True, timescale=("1ns", "1ps"),
                     log_file=build / "build.log")
        try:
            runner.test(test_module=test_module, hdl_toplevel=toplevel, test_dir=RTL_DIR / "tb",
                        build_dir=build, extra_env={spec_env: str(spec_file), "MGD_REPORT": str(report)},
                        results_xml=str(build / "results.xml"), log_file=build / "sim.log")
        except SystemExit:  # cocotb's runner exits when a test fails; the report says which
            pass
        if not report.exists():
            raise RtlError(f"{what} testbench wrote no report; see {build / 'sim.log'}")
        return json.loads(report.read_text())


def fault_does_nothing(vectors, fault: str) -> str | None:
    """Why compiled-in `fault` cannot change this synapse's registers (its
    formats lack what the fault breaks), or None when it can."""
    p = json.loads((Path(vectors) / "manifest.json").read_text())["parameters"]
    regs = ["TH", "G"] + (["V"] if p.get("MOMENTUM") else [])
    rounding = {ROUNDINGS[p[f"R_{r}"]] for r in regs}   # the header's modes are indices into these
    overflow = {OVERFLOWS[p[f"O_{r}"]] for r in regs}
    if fault == "round-half-up" and "nearest-even" not in rounding:
        return "no register of this synapse rounds to nearest-even"
    if fault == "saturate-off-by-one" and "saturate" not in overflow:
        return "every register of this synapse wraps around"
    if fault == "stochastic-uses-state" and "stochastic" not in rounding:
        return "no register of this synapse rounds stochastically"
    return None


def describe(report: dict) -> str:
    """One line: the replay's verdict."""
    mm = report["mismatch"]
    speed = report["replayed"] / report["seconds"] if report["seconds"] else 0.0
    if mm is None:
        return (f"PASS: {report['rows']} rows replayed bit-exact in {report['seconds']:.2f} s "
                f"({speed:,.0f} cycles/s)")
    where = f"row {mm['row']}" + (f" (trace cycle {mm['cycle']})" if mm["cycle"] is not None else "")
    return (f"FAIL at {where}, segment {mm['segment']} ({mm['case']}): {mm['register']} is {mm['got']}, "
            f"expected {mm['expected']} ({report['replayed']} rows matched before it)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mgd_emu.rtl_sim",
                                description="Replay exported synapse vectors through the reference RTL "
                                            "(Icarus Verilog + cocotb).")
    p.add_argument("vectors", help="the synapse/ folder written by mgd-emu export rtl")
    p.add_argument("--fault", default="none", choices=list(FAULTS),
                   help="compile a known design error into the RTL (to see the vectors catch it)")
    p.add_argument("--waves", metavar="FST", help="dump the synapse's signals into this FST file (GTKWave)")
    args = p.parse_args(argv)
    try:
        report = replay_rtl(args.vectors, fault=args.fault, waves=args.waves)
    except RtlError as exc:
        print(f"mgd_emu.rtl_sim: error: {exc}", file=sys.stderr)
        return 2
    print(describe(report))
    return 0 if report["mismatch"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
