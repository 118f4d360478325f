"""The mgd-emu command, driven as a user drives it: in a subprocess."""
import json
import os
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


def fails(*args, words=(), cwd=ROOT):
    """A user mistake: non-zero exit, one line on stderr naming it, no traceback."""
    out = mgd(*args, cwd=cwd, ok=False)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(("mgd-emu: error:", "mgd-emu ")), out.stderr
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
                   "compare": ["--sweep", "--seeds", "--cycles"]}.get(command, []):
        assert option in out.stdout, option


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
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        if trace.exists():
            try:
                if open_trace(trace).cycles_completed > 0:
                    break
            except Exception:
                pass
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    t = open_trace(trace)
    assert not t.complete and t.attrs["end_reason"] == "interrupted (Ctrl-C)" and t.cycles_completed > 0


def test_user_mistakes_get_one_clear_line(tmp_path):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[network\nlayers = [2, 2, 1]\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[timing]\ntau_thta = 4\n")
    fails("run", tmp_path / "missing.toml", words=["missing.toml", "no such file"])
    fails("run", bad_toml, words=["bad.toml", "TOML syntax error", "line 1"])
    fails("run", unknown, words=["timing.tau_thta", "did you mean 'tau_theta'"])
    fails("run", "xor_8bit", "--set", "formats.weight.frac_bits=40", words=["formats.weight.frac_bits", "0..32", "got 40"])
    fails("run", "xor_8bit", "--set", "timing.tau_x=0", words=["timing.tau_x", "an integer"])
    fails("run", "xor_8bit", "--probe", "layer0.wieght", words=["--probe", "did you mean 'layer0.weight'"])
    (tmp_path / "afile").write_text("")
    fails("run", "xor_8bit", "--cycles", "10", "--trace", tmp_path / "afile" / "t.h5", words=["afile", "not a directory"])
    fails("run", "xor_8bit", "--cycles", "0", words=["--cycles must be a positive integer"])
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
