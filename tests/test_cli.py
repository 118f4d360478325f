"""The mgd-emu command, driven as a user drives it: in a subprocess."""
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mgd_emu.trace import open_trace

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["chips", "show", "run", "demo", "inspect", "plot", "export", "compare"]


def mgd(*args, cwd=ROOT, ok=True):
    out = subprocess.run([sys.executable, "-m", "mgd_emu.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def wait_until_traced(trace, within: float = 120) -> None:
    """Until the run writing `trace` has flushed its first cycles (or `within` seconds)."""
    deadline = time.time() + within
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            if open_trace(trace).cycles_completed > 0:
                return
        except Exception:   # not there yet, or being created
            pass


def fails(*args, words=(), cwd=ROOT):
    """A user mistake: exit status 2, exactly one line `mgd-emu: error: ...`
    on stderr naming it, nothing on stdout, no traceback."""
    out = mgd(*args, cwd=cwd, ok=False)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mgd-emu: error: "), out.stderr
    for w in words:
        assert w in out.stderr, (w, out.stderr)
    assert out.stdout == ""
    return out.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_documents_its_options(command):
    out = mgd(command, "--help")
    assert "usage: mgd-emu " + command in out.stdout
    for option in {"run": ["--cycles", "--seed", "--set", "--trace", "--probe", "--eval-every",
                           "--until-accuracy", "--quiet", "--json", "--twin"],
                   "inspect": ["--json"], "plot": ["--output"],
                   "export": ["vcd", "golden", "--window", "--signals", "--block"],
                   "compare": ["--sweep", "--seeds", "--cycles", "--quiet", "--output"]}.get(command, []):
        assert option in out.stdout, option


def test_the_demo_help_says_it_always_writes_a_trace():
    text = " ".join(mgd("demo", "--help").stdout.split())
    assert "--trace PATH write an HDF5 trace to PATH (default: always," in text


def test_chips_lists_the_shipped_descriptions_with_one_line_each():
    out = mgd("chips").stdout.splitlines()
    names = {line.split()[0] for line in out}
    assert names == {p.stem for p in (ROOT / "hw_models").glob("*.toml")}
    assert all(len(line.split()) > 2 for line in out)


def test_show_prints_the_resolved_description_and_the_registers():
    out = mgd("show", "xor_8bit", "--set", "formats.weight.frac_bits=3").stdout
    assert "frac_bits = 3" in out and "[timing]" in out and "tau_theta" in out
    regs = mgd("show", "xor_8bit", "--registers").stdout
    assert "layer0.weight " in regs and "s2.5" in regs and "cost_change" in regs


def test_run_trains_stops_at_the_target_and_reports_as_json(tmp_path):
    out = mgd("run", "xor_8bit", "--seed", "1", "--until-accuracy", "1.0", "--eval-every", "10000",
              "--json", "--quiet")
    s = json.loads(out.stdout)
    assert s["final_accuracy"] == 1.0 and s["reached_cycle"] == s["cycles"] <= 1_000_000
    assert s["reached_chip_time_s"] == pytest.approx(s["reached_cycle"] / 1e8)
    assert s["cycles_per_s"] > 0 and out.stderr == ""



def test_a_run_whose_updates_all_round_away_says_so():
    frozen = json.loads(mgd("run", "xor_8bit", "--set", "formats.integrator.frac_bits=0", "--cycles", "5000",
                            "--eval-every", "5000", "--json", "--quiet").stdout)
    assert frozen["frozen_warning"].startswith("no weight or bias changed in 5,000 updates: every update rounded "
                                               "away (formats.weight s2.5 stochastic saturate, formats.integrator "
                                               "s4.0 nearest-even saturate")
    plain = json.loads(mgd("run", "xor_8bit", "--cycles", "5000", "--eval-every", "5000", "--json", "--quiet").stdout)
    assert plain["frozen_warning"] is None

def test_run_with_probes_writes_a_trace_that_inspect_summarises(tmp_path):
    trace = tmp_path / "run.h5"
    out = mgd("run", "xor_8bit", "--cycles", "20000", "--eval-every", "5000", "--trace", trace, "--no-plot",
              "--probe", "layer0.weight[0, :] every=10", "--probe", "cost", "--quiet")
    assert f"trace           {trace}" in out.stdout and "final accuracy" in out.stdout
    t = open_trace(trace)
    assert t.complete and t.signals == ["cost", "layer0.weight"] and len(t.evaluation[0]) == 4
    info = json.loads(mgd("inspect", trace, "--json").stdout)
    assert info["complete"] and info["cycles_completed"] == 20000
    assert info["signals"]["layer0.weight"]["samples"] == 2000
    assert info["signals"]["layer0.weight"]["format"].startswith("s2.5")
    assert info["final_accuracy"] == t.evaluation[2][-1]
    text = mgd("inspect", trace).stdout
    assert "complete" in text and "layer0.weight" in text and "seed 0" in text


def test_ctrl_c_stops_a_run_and_leaves_an_incomplete_trace(tmp_path):
    trace = tmp_path / "stopped.h5"
    child = subprocess.Popen([sys.executable, "-m", "mgd_emu.cli", "run", "xor_8bit", "--cycles", "10000000000",
                              "--eval-every", "20000", "--trace", str(trace), "--probe", "cost", "--quiet"],
                             cwd=ROOT, stderr=subprocess.PIPE, text=True)
    wait_until_traced(trace)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    t = open_trace(trace)
    assert not t.complete and t.attrs["end_reason"] == "interrupted (SIGINT)" and t.cycles_completed > 0
    out = mgd("export", "vcd", trace, "-o", tmp_path / "stopped.vcd")     # exports say what they cover
    assert f"{trace} is INCOMPLETE (interrupted (SIGINT)): the VCD covers its {t.cycles_completed:,} cycles" in out.stderr




def test_a_second_signal_while_a_stopped_run_exits_changes_neither_its_message_nor_its_status(tmp_path):
    trace = tmp_path / "t.h5"
    child = subprocess.Popen([sys.executable, "-m", "mgd_emu.cli", "run", "xor_8bit", "--cycles", "10000000000",
                              "--trace", str(trace), "--probe", "cost", "--no-plot", "--quiet"],
                             cwd=ROOT, stderr=subprocess.PIPE, text=True)
    wait_until_traced(trace)
    child.send_signal(signal.SIGTERM)
    time.sleep(0.1)                      # as a batch system that escalates: the run is exiting by now
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143 and "interrupted by SIGTERM" in err, (child.returncode, err)

def test_ctrl_c_saves_the_checkpoint_where_the_run_stopped_and_says_how_to_continue(tmp_path):
    from mgd_emu.checkpoint import load_checkpoint

    ck = tmp_path / "ck.npz"
    child = subprocess.Popen([sys.executable, "-m", "mgd_emu.cli", "run", "xor_8bit", "--cycles", "10000000000",
                              "--eval-every", "20000", "--checkpoint", str(ck), "--checkpoint-every", "100000000",
                              "--probe", "cost", "--trace", str(tmp_path / "t.h5"), "--no-plot", "--quiet"],
                             cwd=ROOT, stderr=subprocess.PIPE, text=True)
    wait_until_traced(tmp_path / "t.h5")                 # running: well before the first periodic save (1e8 cycles)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    saved = load_checkpoint(ck).cycle
    assert 0 < saved < 100_000_000 and saved % 20_000 == 0, saved     # where it stopped: no periodic save yet
    assert (f"the checkpoint {ck} holds cycle {saved:,} (`mgd-emu run --resume {ck} --cycles 10000000000 "
            f"--eval-every 20000 --checkpoint {ck}`") in err


def test_a_checkpoint_path_that_is_the_trace_or_its_plot_or_a_resumed_checkpoint_is_refused(tmp_path):
    t = tmp_path / "t.h5"
    fails("run", "xor_8bit", "--cycles", "1000", "--probe", "cost", "--trace", t, "--checkpoint", t,
          words=["is also the --trace path"])
    fails("run", "xor_8bit", "--cycles", "1000", "--probe", "cost", "--trace", t, "--checkpoint", tmp_path / "t.png",
          words=["is also the trace's plot"])
    ck = tmp_path / "ck.npz"
    mgd("run", "xor_8bit", "--cycles", "2000", "--eval-every", "1000", "--probe", "cost", "--checkpoint", ck,
        "--trace", tmp_path / "first.h5", "--no-plot", "--quiet")
    fails("run", "--resume", ck, "--cycles", "4000", "--trace", ck, words=["is an input of this command"])
    fails("run", "--resume", ck, "--cycles", "4000", "--trace", tmp_path / "first.h5",   # the first part's trace
          words=["first.h5: exists", "a resumed run writes a new trace from cycle 2,000"])
    assert load_ok(ck)


def load_ok(path) -> bool:
    from mgd_emu.checkpoint import load_checkpoint

    return load_checkpoint(path).cycle == 2000


def test_a_resumed_run_records_the_probes_its_checkpoint_carries(tmp_path):
    from mgd_emu.checkpoint import load_checkpoint

    ck = tmp_path / "ck.npz"
    mgd("run", "xor_8bit", "--cycles", "2500", "--eval-every", "500", "--probe", "cost every=100",
        "--checkpoint", ck, "--trace", tmp_path / "first.h5", "--no-plot", "--quiet")
    out = mgd("run", "--resume", ck, "--cycles", "9500", "--eval-every", "1000", "--checkpoint", ck,
              "--checkpoint-every", "2000", "--no-plot", "--json", cwd=tmp_path)
    trace = Path(tmp_path, json.loads(out.stdout)["trace"])
    cycles, _ = open_trace(trace).values("cost")
    assert cycles[0] == 2500 and cycles[-1] == 9400                   # the carried probe, from the resumed cycle
    assert load_checkpoint(ck).cycle == 9500


def test_a_trace_of_a_data_file_chip_reads_from_anywhere_without_its_data(tmp_path):
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "xor.csv").write_text("x0,x1,label\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    mgd("run", "xor_8bit", "--set", "task.name=file", "--set", "task.path=dd/xor.csv", "--set", "task.split=none",
        "--set", "network.layers=[2,2,2]", "--cycles", "2000", "--eval-every", "1000", "--probe", "cost",
        "--trace", "fd.h5", "--no-plot", "--quiet", cwd=tmp_path)   # the trace records the relative path
    (tmp_path / "dd" / "xor.csv").write_text("x0,x1,label\n0,0,1\n0,1,1\n1,0,1\n1,1,0\n")   # other data
    fails("export", "golden", "fd.h5", "-o", "g", cwd=tmp_path, words=[
        "fd.h5: exporting golden vectors needs the data file the run learned from, and dd/xor.csv holds other data"])
    (tmp_path / "dd" / "xor.csv").unlink()
    assert "complete: 2,000 of 2,000 cycles" in mgd("inspect", tmp_path / "fd.h5").stdout
    mgd("export", "vcd", tmp_path / "fd.h5", "-o", tmp_path / "fd.vcd")
    mgd("plot", tmp_path / "fd.h5", "-o", tmp_path / "fd.png")              # without its gradient panel
    fails("export", "golden", tmp_path / "fd.h5", "-o", tmp_path / "g", words=["needs the data file", "no such file"])
    assert not (tmp_path / "g").exists()

def test_user_mistakes_get_one_clear_line(tmp_path):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[network\nlayers = [2, 2, 1]\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[timing]\ntau_thta = 4\n")
    fails("run", tmp_path / "missing.toml", words=["missing.toml", "no such file"])
    fails("run", "xor_8bt", words=["xor_8bt: no such file, and no shipped chip", "did you mean 'xor_8bit'?",
                                   "digits_8bit, nist7x7_8bit"])
    fails("run", bad_toml, words=["bad.toml", "TOML syntax error", "line 1"])
    fails("run", unknown, words=["timing.tau_thta", "did you mean 'tau_theta'"])
    fails("run", "xor_8bit", "--set", "formats.weight.frac_bits=40", words=["formats.weight.frac_bits", "0..32", "got 40"])
    fails("run", "xor_8bit", "--set", "timing.tau_x=0", words=["timing.tau_x", "an integer"])
    fails("run", "xor_8bit", "--probe", "layer0.wieght", words=["--probe", "did you mean 'layer0.weight'"])
    (tmp_path / "afile").write_text("")
    fails("run", "xor_8bit", "--cycles", "10", "--trace", tmp_path / "afile" / "t.h5", words=["afile", "not a directory"])
    (tmp_path / "empty.toml").write_text("# nothing yet\n\n")     # would run as the all-defaults float chip
    fails("run", tmp_path / "empty.toml", words=["empty.toml: is empty (no section, no key)"])
    fails("run", "xor_8bit", "--set", "chip.name=123", words=['must be text (a quoted string: "...")'])
    fails("run", "xor_8bit", "--cycles", "0", words=["argument --cycles: must be a positive integer"])
    fails("inspect", tmp_path / "missing.h5", words=["missing.h5", "no such file"])
    fails("inspect", bad_toml, words=["bad.toml", "not an HDF5 file"])
    fails("compare", "xor_8bit", words=["compare needs two chips"])


def test_the_demo_trains_the_default_chip_and_writes_a_trace_and_a_plot(tmp_path):
    out = mgd("demo", "--quiet", "--seed", "1", cwd=tmp_path)
    text = out.stdout
    assert "final accuracy  1.000" in text and "first reached at cycle" in text
    assert "emulated cycles/s" in text and "of chip time" in text
    files = {line.split()[0]: Path(line.split(None, 1)[1]) for line in text.splitlines()
             if line.startswith(("trace ", "plot "))}
    trace, plot = (p if p.is_absolute() else tmp_path / p for p in (files["trace"], files["plot"]))
    assert trace.parent.name == "traces" and open_trace(trace).complete
    assert plot == trace.with_suffix(".png") and plot.stat().st_size > 10_000


def test_the_demo_is_silent_on_stderr_with_quiet_and_json(tmp_path):
    out = mgd("demo", "--quiet", "--json", "--seed", "1", "--cycles", "20000", "--no-plot", cwd=tmp_path)
    assert out.stderr == ""
    assert json.loads(out.stdout)["trace"].startswith("traces/")


# ------------------------------------------------------- the main paths

TRACE_PROBES = ["cost every=10", "layer0.weight", "layer1.weight", "layer0.bias", "layer1.bias",
                "layer0.weight_integrator", "layer0.weight_perturbation", "broadcast",
                "input", "layer0.bias_perturbation", "layer0.activation"]  # the last three: golden layer0


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """A short run traced through the command line: what plot and export read."""
    path = tmp_path_factory.mktemp("cli") / "run.h5"
    probes = [a for p in TRACE_PROBES for a in ("--probe", p)]
    mgd("run", "xor_8bit", "--seed", "1", "--cycles", "3000", "--eval-every", "1000", "--trace", path,
        "--no-plot", "--quiet", *probes)
    return path


def printed_paths(out):
    return [Path(line) for line in out.stdout.splitlines()]


def is_image(path, magic=b"\x89PNG\r\n\x1a\n"):
    return path.read_bytes()[:len(magic)] == magic


def test_plot_writes_beside_the_trace_into_a_folder_or_a_named_file(trace, tmp_path):
    assert printed_paths(mgd("plot", trace)) == [trace.with_suffix(".png")]
    assert is_image(trace.with_suffix(".png"))
    # An existing folder gets <trace name>.png inside it, and that is the path printed.
    assert printed_paths(mgd("plot", trace, "-o", tmp_path)) == [tmp_path / "run.png"]
    assert is_image(tmp_path / "run.png")
    svg = tmp_path / "sub" / "r.svg"
    assert printed_paths(mgd("plot", trace, "-o", svg)) == [svg]
    assert b"<svg" in svg.read_bytes()[:1000]


def test_export_vcd_and_golden_through_the_command(trace, tmp_path):
    out = mgd("export", "vcd", trace, "-o", tmp_path / "w.vcd", "--window", "0:500", "--signals", "broadcast", "cost")
    vcd, gtkw = printed_paths(out)
    assert (vcd, gtkw) == (tmp_path / "w.vcd", tmp_path / "w.gtkw")
    text = vcd.read_text()
    assert "$timescale 1 ns $end" in text and " broadcast $end" in text and " weight_0_0 " not in text
    assert "#4990" in text and "#5000" in text.split("$enddefinitions")[1]  # cycle 499 starts at 4990 ns
    out = mgd("export", "golden", trace, "-o", tmp_path / "g", "--window", "100:")
    paths = printed_paths(out)
    assert paths[-1] == tmp_path / "g" / "manifest.json" and all(p.exists() for p in paths)
    m = json.loads(paths[-1].read_text())
    assert m["block"] == "synapse" and m["cycles"]["start"] == 100 and m["cycles"]["stop"] == 2999
    mgd("export", "golden", trace, "-o", tmp_path / "l", "--block", "layer0", "--window", ":50")
    assert json.loads((tmp_path / "l" / "manifest.json").read_text())["cycles"] == {"start": 0, "stop": 50,
                                                                                   "count": 50}


def test_compare_prints_a_table_draws_a_plot_and_reports_progress(tmp_path):
    png = tmp_path / "c.png"
    out = mgd("compare", "xor_8bit", "xor_4bit", "--cycles", "2000", "--eval-every", "1000", "--seeds", "0", "1",
              "-o", png)
    assert "xor_8bit" in out.stdout and "xor_4bit" in out.stdout and "cycles to 100% per seed" in out.stdout
    assert f"plot: {png}" in out.stdout and is_image(png)
    progress = out.stderr.splitlines()
    assert len(progress) == 4 and progress[0].startswith("mgd-emu: [1/4] xor_8bit, seed 0")


def test_compare_sweeps_one_key_and_writes_json(tmp_path):
    out = mgd("compare", "xor_8bit", "--sweep", "formats.weight.frac_bits=3,5", "--cycles", "2000",
              "--eval-every", "1000", "--seeds", "0", "--json", "--quiet", "-o", tmp_path)
    data = json.loads(out.stdout)
    assert [p["label"] for p in data["design_points"]] == ["weight.frac_bits=3", "weight.frac_bits=5"]
    assert [r["cycles"] for r in data["design_points"][0]["runs"]] == [[1000, 2000]]
    plot = Path(data["plot"])
    assert plot.parent == tmp_path and plot.name.startswith("compare-") and is_image(plot)
    assert out.stderr == ""
    fails("compare", "xor_8bit", "--sweep", "timing.broadcast_latency=3", words=["one value; a sweep compares"])


def test_compare_names_edited_copies_of_one_chip_by_their_files(tmp_path):
    text = (ROOT / "hw_models/xor_8bit.toml").read_text()
    (tmp_path / "mine.toml").write_text(text)
    (tmp_path / "w6.toml").write_text(text.replace("int_bits = 2, frac_bits = 5", "int_bits = 2, frac_bits = 3"))
    out = mgd("compare", tmp_path / "mine.toml", tmp_path / "w6.toml", "--cycles", "1000", "--eval-every", "1000",
              "--seeds", "0", "--json", "--quiet", "-o", tmp_path)
    assert [p["label"] for p in json.loads(out.stdout)["design_points"]] == ["mine", "w6"]


def test_run_twin_reports_where_the_chip_leaves_its_float_twin():
    out = mgd("run", "xor_pipelined", "--twin", "--cycles", "3000", "--eval-every", "1000", "--seed", "2", "--quiet")
    table = out.stdout.split("float-ideal twin of", 1)[1]
    assert "diverges in cycles" in table and "still within tolerance at the check at cycle A-1" in table
    rows = {line.split()[0]: line for line in table.splitlines()[3:] if line.strip()}
    assert rows["output"].split()[2] == "1"  # pipelining delays the output from the first cycle on
    assert re.fullmatch(r"(never|[\d,]+|[\d,]+-[\d,]+)", rows["layer0.weight"].split()[2])
    data = json.loads(mgd("run", "xor_pipelined", "--twin", "--cycles", "3000", "--eval-every", "1000",
                          "--seed", "2", "--quiet", "--json").stdout)
    regs = {r["register"]: r for r in data["twin"]["registers"]}
    assert (regs["output"]["last_same"], regs["output"]["first_cycle"]) == (0, 1)


def test_a_chip_with_trace_probes_writes_a_trace_and_says_where(tmp_path):
    chip = tmp_path / "probed.toml"
    chip.write_text('[trace]\nprobes = ["cost every=10", "layer0.weight every=100"]\n')
    out = mgd("run", chip, "--cycles", "2000", "--eval-every", "1000", "--no-plot", cwd=tmp_path)
    where = Path(next(line for line in out.stdout.splitlines() if line.startswith("trace")).split()[1])
    assert where.parent == Path("traces") and f"into {where}" in out.stderr
    t = open_trace(tmp_path / where)
    assert t.complete and t.signals == ["cost", "layer0.weight"]


def documented_end_reasons():
    """The end_reason values of traces/README.md's table, as regular expressions."""
    text = (ROOT / "traces" / "README.md").read_text()
    table = text.split("`end_reason` is one of", 1)[1].split("\n\n", 2)[1]
    values = [line.split("|")[1].strip().strip("`") for line in table.splitlines()[2:]]
    return [re.escape(v).replace("TYPE", r"\w+").replace("MESSAGE", ".*").replace("WHY", ".*")
            .replace("A", r"\d+\.\d+") for v in values]


def test_a_run_stopped_at_its_target_says_so_in_the_trace_and_in_inspect(tmp_path):
    trace = tmp_path / "t.h5"
    out = mgd("run", "xor_8bit", "--until-accuracy", "0.5", "--eval-every", "1000", "--cycles", "50000",
              "--probe", "cost", "--trace", trace, "--no-plot", "--quiet")
    assert "first reached at cycle 1,000" in out.stdout and "to within 1,000 cycles" in out.stdout
    t = open_trace(trace)
    assert t.complete and t.attrs["end_reason"] == "target accuracy 0.5 reached"
    reasons = documented_end_reasons()
    assert len(reasons) == 9
    assert any(re.fullmatch(r, t.attrs["end_reason"]) for r in reasons)
    assert any(re.fullmatch(r, "completed") for r in reasons)
    assert "run             complete (target accuracy 0.5 reached): 1,000 of 50,000 cycles" in mgd("inspect", trace).stdout


# ------------------------------------------------------- the error paths

@pytest.mark.parametrize("args, words", [
    (["run", "xor_8bit", "--cycles", "abc"], ["argument --cycles: must be a positive integer, got 'abc'"]),
    (["run", "xor_8bit", "--seed", "-1"], ["argument --seed: must be an integer 0..9223372036854775807"]),
    (["run", "xor_8bit", "--seed", str(2**63)], ["argument --seed: must be an integer 0..9223372036854775807"]),
    (["run", "xor_8bit", "--until-accuracy", "1.5"], ["argument --until-accuracy", "in [0, 1]", "'1.5'"]),
    (["run", "xor_8bit", "--until-accuracy", "-0.1"], ["argument --until-accuracy", "in [0, 1]"]),
    (["run", "xor_8bit", "--until-accuracy", "nan"], ["argument --until-accuracy", "in [0, 1]"]),
    (["compare", "xor_8bit", "--seeds", "x"], ["argument --seeds"]),
    (["export", "vcd", "t.h5", "--window", "5"], ["argument --window", "A:B, A: or :B", "'5'"]),
    (["run"], ["required: chip"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
])
def test_a_bad_command_line_value_is_one_line_not_a_usage_block(args, words):
    assert "--help" in fails(*args, words=words)


def test_a_run_refuses_bad_probes_and_trace_paths(tmp_path):
    fails("run", "xor_8bit", "--cycles", "10", "--probe", "layer0.weight[5, 0]",
          words=["--probe", "index 5 is out of range"])
    fails("run", "xor_8bit", "--cycles", "10", "--trace", "", words=["--trace", "empty"])
    fails("run", "xor_8bit", "--cycles", "10", "--trace", tmp_path, words=["is a directory"])
    if Path("/proc").is_dir():
        fails("run", "xor_8bit", "--cycles", "10", "--trace", "/proc/x.h5", words=["/proc/x.h5", "cannot be written"])


def test_inspect_says_a_directory_is_a_directory(tmp_path):
    fails("inspect", tmp_path, words=[str(tmp_path), "is a directory"])


def test_export_refuses_options_of_the_other_kind(trace):
    fails("export", "vcd", trace, "--block", "layer0", words=["--block", "golden"])
    fails("export", "golden", trace, "--signals", "cost", words=["--signals", "VCD"])
    fails("export", "vcd", "--signals", "cost", trace, words=["give the trace before --signals"])


UNWRITABLE = ["/proc/nope.png"] if Path("/proc").is_dir() else []


@pytest.mark.parametrize("command", ["plot", "vcd", "golden", "compare"])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(trace, tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("")
    name = {"plot": "p.png", "vcd": "x.vcd", "golden": "gg", "compare": "c.png"}[command]
    run = {"plot": ["plot", trace], "vcd": ["export", "vcd", trace], "golden": ["export", "golden", trace,
                                                                                "--window", "0:10"],
           "compare": ["compare", "xor_8bit", "xor_4bit", "--cycles", "100", "--seeds", "0"]}[command]
    fails(*run, "-o", afile / name, words=[str(afile / name), "afile is not a directory"])
    for root in UNWRITABLE:
        fails(*run, "-o", Path(root).parent / name, words=["cannot be written"])
    if command == "golden":
        fails(*run, "-o", afile, words=["is a file"])
    if command in ("plot", "compare"):
        fails(*run, "-o", tmp_path / "x.foo", words=["'.foo' is not supported", ".png", ".svg"])
        fails(*run, "-o", tmp_path / "noext", words=["no image suffix", ".png"])
    # compare refuses before it runs anything: the one error line is all it printed


def test_a_probe_window_outside_the_run_is_warned_of(tmp_path):
    out = mgd("run", "xor_8bit", "--cycles", "1000", "--eval-every", "500", "--probe", "cost window=5000:6000",
              "--trace", tmp_path / "t.h5", "--no-plot")
    assert "mgd-emu: warning: the window of cost lies outside cycles 0-999 of this run: it records nothing" \
        in out.stderr
    inside = mgd("run", "xor_8bit", "--cycles", "1000", "--eval-every", "500", "--probe", "cost window=500:600",
                 "--trace", tmp_path / "u.h5", "--no-plot")
    assert "warning" not in inside.stderr
    chips_window = mgd("run", "xor_8bit", "--cycles", "1000", "--eval-every", "500", "--set", "trace.window_start=5000",
                       "--probe", "cost", "--trace", tmp_path / "v.h5", "--no-plot")   # the chip's own [trace] window
    assert "the window of cost lies outside cycles 0-999" in chips_window.stderr
