"""Fault injection: nothing a user or a machine does to a run loses data or
crashes the tool (issue 17). Concurrent writers, outputs over inputs,
signals at any point, a full disk, damaged and live traces, sizes that
cannot run, checkpoint files. Damaged files are made here, not stored."""
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgd_emu import cli, load_chip
from mgd_emu.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint,
                                validate_checkpoint)
from mgd_emu.engine import Emulator
from mgd_emu.safe_io import OutputError, TraceLock, lock_path, output, writer_alive
from mgd_emu.trace import TraceError, TraceWriter, default_trace_path, open_trace

ROOT = Path(__file__).resolve().parents[1]
XOR8 = load_chip(ROOT / "hw_models/xor_8bit.toml")
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1"}


def mgd(*args, cwd=ROOT, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mgd_emu.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env or ENV)


def one_line_error(out, *words, status=2):
    """Exit `status`, one line `mgd-emu: ...` on stderr, no traceback."""
    assert out.returncode == status, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mgd-emu: "), out.stderr[-3000:]
    for w in words:
        assert w in out.stderr, (w, out.stderr)
    return lines[0]


def record(path, chip=XOR8, seed=1, cycles=3000,
           probes=("layer0.weight every=10", "cost", "sample_index", "target")):
    emu = Emulator(chip, seed, probes=list(probes))
    with TraceWriter(path, emu, cycles) as writer:
        emu.run(cycles, sink=writer)
        writer.evaluation(emu.cycle, *emu.evaluate())
    return emu


_CHILDREN = []


@pytest.fixture(autouse=True)
def _no_child_left_running():
    """A run a failed test started is killed, not left running."""
    yield
    while _CHILDREN:
        child = _CHILDREN.pop()
        if child.poll() is None:
            child.kill()
            child.wait()


def start_run(trace, *extra, cycles=10**9):
    child = _start(trace, *extra, cycles=cycles)
    _CHILDREN.append(child)
    return child


def _start(trace, *extra, cycles):
    return subprocess.Popen([sys.executable, "-m", "mgd_emu.cli", "run", "xor_8bit", "--cycles", str(cycles),
                             "--eval-every", "20000", "--probe", "cost", "--probe", "layer0.weight",
                             "--trace", str(trace), "--quiet", "--no-plot", *extra],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)


def wait_for(cond, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return True
        except (TraceError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError("timed out")


def flushed(trace):
    return trace.exists() and open_trace(trace).cut > 0


# ------------------------------------------------------------- one writer

def test_a_second_writer_of_a_trace_is_refused_naming_the_first(tmp_path):
    path = tmp_path / "t.h5"
    emu = Emulator(XOR8, 0, probes=["cost"])
    with TraceWriter(path, emu, 10**6) as w:
        emu.run(2000, sink=w)
        with pytest.raises(TraceError, match=f"being written by another run \\(pid {os.getpid()} "):
            TraceWriter(path, Emulator(XOR8, 1, probes=["cost"]), 100)
        out = mgd("run", "xor_8bit", "--cycles", "100", "--probe", "cost", "--trace", path, "--no-plot")
        one_line_error(out, f"pid {os.getpid()}", str(path))
        assert writer_alive(path).startswith(f"pid {os.getpid()}")
    t = open_trace(path)  # the first run's trace, whole
    assert t.complete is False and t.cycles_completed == 2000 and t.signal("cost").count == 2000
    assert not lock_path(path).exists() and writer_alive(path) is None


def test_a_stale_lock_of_a_killed_run_does_not_block(tmp_path):
    path = tmp_path / "t.h5"
    lock_path(path).write_text("pid 999999 on elsewhere since 2020-01-01: mgd-emu run ...\n")
    lock = TraceLock(path)
    assert lock.stale_holder.startswith("pid 999999")
    lock.release()
    child = start_run(path)
    wait_for(lambda: flushed(path))
    child.kill()
    child.wait()
    assert lock_path(path).exists()  # left behind by SIGKILL, but stale
    assert writer_alive(path) is None
    emu = record(path, cycles=500)
    assert open_trace(path).complete and emu.cycle == 500


# ------------------------------------------------------- outputs over inputs

def test_an_output_never_replaces_an_input(tmp_path):
    trace = tmp_path / "t.h5"
    record(trace, cycles=300)
    before = trace.read_bytes()
    one_line_error(mgd("export", "vcd", trace, "-o", trace), "is an input of this command")
    (tmp_path / "link.vcd").symlink_to(trace)
    one_line_error(mgd("export", "vcd", trace, "-o", tmp_path / "link.vcd"), "is an input of this command")
    assert trace.read_bytes() == before and open_trace(trace).complete
    chip = tmp_path / "mine.toml"
    shutil.copy(ROOT / "hw_models/xor_8bit.toml", chip)
    text = chip.read_text()
    one_line_error(mgd("run", chip, "--cycles", "100", "--trace", chip), "is an input of this command")
    # the plot beside the trace would be the chip: refused before the run
    png_chip = tmp_path / "c.png"
    shutil.copy(ROOT / "hw_models/xor_8bit.toml", png_chip)
    one_line_error(mgd("run", png_chip, "--cycles", "100", "--trace", tmp_path / "c.h5"), "plot", "input")
    assert chip.read_text() == text and not (tmp_path / "c.h5").exists()


def test_a_failed_write_leaves_the_old_file_and_no_part(tmp_path):
    out = tmp_path / "x.vcd"
    out.write_text("old")

    class Boom(Exception):
        pass
    with pytest.raises(Boom):
        with output(out, mode="w") as fp:
            fp.write("new, half")
            raise Boom
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["x.vcd"]
    with pytest.raises(OutputError, match="x.vcd: is an input"):
        with output(out, inputs=[tmp_path / "." / "x.vcd"], mode="w"):
            pass


# --------------------------------------------------------------- signals

def sigcaught(pid, signum) -> bool:
    """Whether process `pid` has a handler installed for `signum` (/proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_imports_is_one_line_and_128_plus_n(signum):
    child = subprocess.Popen([sys.executable, "-m", "mgd_emu.cli", "run", "xor_8bit", "--cycles", "1000"],
                             cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    _CHILDREN.append(child)
    while child.poll() is None and not sigcaught(child.pid, signal.SIGTERM):
        time.sleep(0.001)
    child.send_signal(signum)  # numpy, h5py, numba are still being imported
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"interrupted by {signal.Signals(signum).name}" in err


@pytest.mark.parametrize("signum,delay", [(signal.SIGTERM, 0.0), (signal.SIGTERM, 0.7), (signal.SIGINT, 0.3),
                                          (signal.SIGHUP, 0.1)])
def test_a_signal_during_a_traced_run_flushes_and_marks_the_trace(tmp_path, signum, delay):
    trace = tmp_path / "t.h5"
    child = start_run(trace)
    wait_for(lambda: flushed(trace))
    time.sleep(delay + random.random() * 0.2)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert child.returncode == 128 + signum, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"interrupted by {name}" in err and "marked incomplete" in err
    t = open_trace(trace)
    assert not t.live and not t.complete and t.attrs["end_reason"] == f"interrupted ({name})"
    assert t.cycles_completed > 0 and t.cut == t.cycles_completed
    for s in map(t.signal, t.signals):  # everything up to the end, nothing beyond
        assert s.cycles.size == s.data.shape[0] and s.cycles[-1] == t.cycles_completed - 1
    assert not lock_path(trace).exists()


def test_sigkill_at_random_points_leaves_a_readable_trace_and_no_lock(tmp_path):
    rng = random.Random(17)
    for k in range(3):
        trace = tmp_path / f"t{k}.h5"
        child = start_run(trace)
        if k:
            wait_for(lambda: trace.exists())
        time.sleep(rng.random() * 1.5)
        child.kill()
        child.wait()
        leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
        for p in leftovers:  # a run killed while creating its file leaves a temporary name, never a half trace
            (tmp_path / p).unlink()
        if trace.exists():
            t = open_trace(trace)
            assert not t.complete and t.attrs["end_reason"] == "running" and "killed" in t.status
            for s in map(t.signal, t.signals):
                assert s.cycles.size == s.data.shape[0] and (s.count == 0 or s.cycles[-1] < t.cut)
        assert writer_alive(trace) is None
        record(trace, cycles=100)  # not blocked


# ---------------------------------------------------------------- live reading

def racing_the_writers_flush(plain_open):
    """h5py.File as a reader sees it while the writer's last flush is still
    reaching the disk: HDF5 refuses a plain open as a truncated file (once in
    3e5 opens of a live trace, measured); an SWMR reader does not check."""
    def open_(name, mode="r", *args, swmr=False, **kw):
        if mode == "r" and not swmr:
            raise OSError("Unable to synchronously open file (truncated file: eof = 2048, "
                          "sblock->base_addr = 0, stored_eof = 4096)")
        return plain_open(name, mode, *args, swmr=swmr, **kw)
    return open_


def test_a_live_trace_reads_as_a_consistent_prefix_and_says_it_is_live(tmp_path, monkeypatch):
    trace = tmp_path / "t.h5"
    child = start_run(trace)
    try:
        wait_for(lambda: flushed(trace))
        for _ in range(5):
            t = open_trace(trace)
            assert t.live and f"pid {child.pid}" in t.live
            for s in map(t.signal, t.signals):
                assert s.cycles.size == s.data.shape[0] == s.count
                assert s.count == 0 or s.cycles[-1] < t.cut
            time.sleep(0.2)
        with monkeypatch.context() as m:
            m.setattr(h5py, "File", racing_the_writers_flush(h5py.File))
            t = open_trace(trace)
            assert t.live and t.signal("cost").count > 0
        out = mgd("inspect", trace)
        assert out.returncode == 0 and "LIVE (being written by pid" in out.stdout, out.stderr
        out = mgd("export", "vcd", trace, "-o", tmp_path / "live.vcd")
        assert out.returncode == 0, out.stderr
        assert "$enddefinitions" in (tmp_path / "live.vcd").read_text()
        out = mgd("plot", trace, "-o", tmp_path / "live.png")
        assert out.returncode == 0 and (tmp_path / "live.png").stat().st_size > 0, out.stderr
    finally:
        child.terminate()
        child.communicate(timeout=120)
    assert child.returncode == 143


# -------------------------------------------------------------- full disk

@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a 2 MB tmpfs (mount -t tmpfs -o size=2m)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_during_a_run_stops_it_with_one_line_and_keeps_the_flushed_trace(tiny_disk):
    trace = tiny_disk / "t.h5"
    out = mgd("run", "xor_8bit", "--cycles", "50000000", "--eval-every", "100000", "--probe", "cost",
              "--probe", "layer0.weight", "--probe", "layer0.weight_integrator", "--probe", "sample_index",
              "--trace", trace, "--quiet", "--no-plot")
    line = one_line_error(out, "no space left on the device", str(trace))
    t = open_trace(trace)
    assert not t.complete and t.cycles_completed > 0 and t.cut > 0
    assert t.attrs["end_reason"] in ("running", "failed: disk full: no space left on the device"), line
    for s in map(t.signal, t.signals):
        assert s.cycles.size == s.data.shape[0] and (s.count == 0 or s.cycles[-1] < t.cut)
    assert not [p for p in tiny_disk.iterdir() if ".tmp-" in p.name or p.name.endswith(".lock")]


def test_a_study_that_fills_the_disk_stops_with_one_line_and_resumes_once_there_is_room(tiny_disk, tmp_path):
    import xarray as xr

    study = tmp_path / "s.toml"   # records of ~30 kB each (an evaluation every 50 cycles)
    study.write_text('[study]\nchip = "xor_8bit"\nseeds = [0, 1, 2, 3, 4, 5]\ncycles = 30_000\n'
                     'eval_every = 50\ntargets = [1.0]\n[grid]\n"formats.weight.frac_bits" = [4, 5]\n')
    filler = tiny_disk / "filler"
    with open(filler, "wb") as fp:  # leave ~150 kB: room for a few runs' records, not all twelve
        fp.write(b"\0" * (2 * 1024 * 1024 - 150 * 1024))
    out = tiny_disk / "study"
    r = mgd("study", study, "-o", out, "--workers", "0", "--quiet")
    # the journal's failure is the one reported, not the results' that followed it
    one_line_error(r, f"the journal {out / 'journal.jsonl'}: cannot be written (no space left on the device)",
                   "--resume")
    assert "results.nc" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["journal.jsonl"]   # no half-written results
    filler.unlink()
    r = mgd("study", study, "-o", out, "--workers", "0", "--resume", "--quiet")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    kept = int(r.stdout.split(" were in the journal already")[0].rsplit(" ", 1)[-1])
    assert 0 < kept < 12
    whole = tmp_path / "whole"
    assert mgd("study", study, "-o", whole, "--workers", "0", "--quiet").returncode == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as a, \
            xr.open_dataset(whole / "results.nc", engine="h5netcdf") as b:
        for v in ("status", "accuracy", "cost", "cycles_to_target", "final_accuracy", "saturations"):
            assert a[v].equals(b[v]), v


def test_a_study_whose_results_do_not_fit_says_so_without_crashing_and_resume_writes_them(tiny_disk, tmp_path):
    import xarray as xr

    study = tmp_path / "s.toml"   # a journal of ~23 kB, results.nc of ~45 kB
    study.write_text('[study]\nchip = "xor_8bit"\nseeds = [0, 1, 2, 3, 4, 5]\ncycles = 30_000\n'
                     'eval_every = 3_000\ntargets = [1.0]\n[grid]\n"formats.weight.frac_bits" = [4, 5]\n')
    filler = tiny_disk / "filler"
    with open(filler, "wb") as fp:  # leave ~40 kB: room for the journal, not for the results
        fp.write(b"\0" * (2 * 1024 * 1024 - 40 * 1024))
    out = tiny_disk / "study"
    r = mgd("study", study, "-o", out, "--workers", "0", "--quiet", "--no-plot")
    # one line and status 2: HDF5 writing to the full disk used to print a traceback for every
    # object it could not flush and crash on exit (status 139)
    one_line_error(r, "cannot be written (no space left on the device)", "--resume")
    assert f"-o {out / 'results.nc'}:" in r.stderr or f"-o {out / 'results.csv'}:" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["journal.jsonl"]   # neither results file, nor a part
    filler.unlink()
    r = mgd("study", study, "-o", out, "--workers", "0", "--resume", "--quiet", "--no-plot")
    assert r.returncode == 0 and "12 were in the journal already" in r.stdout, r.stdout + r.stderr[-2000:]
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        assert (ds.status.values == "ok").all()


def test_an_export_to_a_full_disk_leaves_no_partial_file(tiny_disk, tmp_path):
    trace = tmp_path / "t.h5"
    record(trace, cycles=40000, probes=("cost", "layer0.weight", "layer0.weight_integrator"))
    filler = tiny_disk / "filler"
    with open(filler, "wb") as fp:  # leave ~100 kB
        fp.write(b"\0" * (2 * 1024 * 1024 - 100 * 1024))
    out = mgd("export", "vcd", trace, "-o", tiny_disk / "t.vcd")
    one_line_error(out, "no space left on the device")
    out = mgd("export", "golden", trace, "-o", tiny_disk / "golden", "--block", "synapse:layer0.weight[0,0]")
    assert out.returncode in (0, 2) and "Traceback" not in out.stderr
    names = sorted(p.name for p in tiny_disk.rglob("*"))
    assert "t.vcd" not in names and not [n for n in names if ".tmp-" in n], names


# ----------------------------------------------------------- damaged traces

@pytest.fixture(scope="module")
def good_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.h5"
    record(path, cycles=2000, probes=("layer0.weight every=10", "layer1.weight every=10", "cost",
                                      "sample_index", "target", "layer0.weight_integrator every=10"))
    return path


def _set(name, key, value):
    def damage(f, path):
        (f[name] if name else f).attrs[key] = value
    return damage


def _delete_attr(name, key):
    def damage(f, path):
        del (f[name] if name else f).attrs[key]
    return damage


def _delete(name):
    def damage(f, path):
        del f[name]
    return damage


def _replace(name, fn):
    def damage(f, path):
        old = f[name][()]
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, data=fn(old))
        f[name].attrs.update(attrs)
    return damage


def _external(f, path):
    other = Path(path).with_name("other.h5")
    with h5py.File(other, "w") as g:
        g.create_dataset("data", data=np.zeros((5, 1)))
    del f["signals/cost/data"]
    f["signals/cost/data"] = h5py.ExternalLink(str(other), "/data")


def _soft(f, path):
    del f["signals/cost/cycles"]
    f["signals/cost/cycles"] = h5py.SoftLink("/evaluation/cycles")


DAMAGE = {
    "no signals group": _delete("signals"),
    "no events group": _delete("events"),
    "no evaluation group": _delete("evaluation"),
    "no data dataset": _delete("signals/cost/data"),
    "no cycles dataset": _delete("signals/layer0.weight/cycles"),
    "no chip attribute": _delete_attr("", "chip"),
    "no seed attribute": _delete_attr("", "seed"),
    "no clock_hz": _delete_attr("", "clock_hz"),
    "clock_hz 0": _set("", "clock_hz", 0.0),
    "clock_hz nan": _set("", "clock_hz", float("nan")),
    "clock_hz other than the chip's": _set("", "clock_hz", 1.0),
    "format version 2": _set("", "format_version", 2),
    "seed negative": _set("", "seed", -1),
    "seed a string": _set("", "seed", "zero"),
    "chip not TOML": _set("", "chip", "[[[ not toml"),
    "chip invalid": _set("", "chip", "[network]\nlayers = [2, 0, 1]\n"),
    "probes not JSON": _set("", "probes", "[cost"),
    "probes of another register": _set("", "probes", json.dumps(["nonsense"])),
    "cycles_completed negative": _set("", "cycles_completed", -5),
    "int_bits 1000": _set("signals/layer0.weight", "int_bits", 1000),
    "frac_bits -7": _set("signals/layer0.weight", "frac_bits", -7),
    "width 1": _set("signals/layer0.weight", "width", 1),
    "format kind unknown": _set("signals/cost", "format_kind", "complex"),
    "register shape wrong": _set("signals/layer0.weight", "register_shape", np.array([7, 7])),
    "elements out of range": _set("signals/layer0.weight", "elements", np.array([0, 1, 2, 99])),
    "every 0": _set("signals/cost", "every", 0),
    "no every": _delete_attr("signals/cost", "every"),
    "reversed cycles": _replace("signals/cost/cycles", lambda c: c[::-1].copy()),
    "repeated cycles": _replace("signals/cost/cycles", lambda c: np.zeros_like(c)),
    "float codes": _replace("signals/layer0.weight/data", lambda d: d.astype(np.float64) + 0.5),
    "wide codes": _replace("signals/layer0.weight/data", lambda d: d.astype(np.int64)),
    "data of another shape": _replace("signals/layer0.weight/data", lambda d: d.reshape(len(d), -1)[:, :2]),
    "event counts of another shape": _replace("events/counts", lambda c: c[:, :1]),
    "no events": _replace("events/cycles", lambda c: c[:0]),
    "evaluation cost as text": _replace("evaluation/cost", lambda c: np.array([b"x"] * len(c))),
    "signal that is a dataset": _replace("signals/cost", lambda c: np.zeros(3)) if False else
    (lambda f, p: (f.__delitem__("signals/cost"), f.create_dataset("signals/cost", data=np.zeros(3)))),
    "signal of no register": lambda f, p: f.move("signals/cost", "signals/bogus"),
    "external link": _external,
    "soft link": _soft,
}

# damage that leaves a usable trace: the tools read the consistent prefix
BENIGN = {
    "short cycles": _replace("signals/cost/cycles", lambda c: c[: len(c) // 2]),
    "short data": _replace("signals/cost/data", lambda d: d[: len(d) // 3]),
    "short evaluation cost": _replace("evaluation/cost", lambda c: c[:0]),
}


def damaged(good, tmp_path, name, damage):
    path = tmp_path / "d.h5"
    shutil.copy(good, path)
    with h5py.File(path, "r+") as f:
        damage(f, path)
    return path


def run_cli(args, capsys):
    """The command, in this process: (status, stdout, stderr)."""
    status = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


TOOLS = [("inspect", lambda p, o: ["inspect", p]), ("inspect json", lambda p, o: ["inspect", "--json", p]),
         ("plot", lambda p, o: ["plot", p, "-o", o / "p.png"]), ("vcd", lambda p, o: ["export", "vcd", p, "-o", o / "v.vcd"]),
         ("golden", lambda p, o: ["export", "golden", p, "-o", o / "g"])]


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_trace_is_refused_by_every_tool_in_one_line(good_trace, tmp_path, capsys, kind):
    path = damaged(good_trace, tmp_path, kind, DAMAGE[kind])
    with pytest.raises(TraceError) as err:
        open_trace(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    for tool, args in TOOLS:
        status, out, err_text = run_cli(args(path, tmp_path), capsys)
        assert status == 2, (tool, err_text)
        assert len(err_text.splitlines()) == 1 and err_text.startswith("mgd-emu: error: "), (tool, err_text)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "other.h5") == ["d.h5"]


@pytest.mark.parametrize("kind", sorted(BENIGN))
def test_a_trace_with_unequal_lengths_reads_as_its_consistent_prefix(good_trace, tmp_path, capsys, kind):
    path = damaged(good_trace, tmp_path, kind, BENIGN[kind])
    t = open_trace(path)
    s = t.signal("cost")
    assert s.cycles.size == s.data.shape[0] == s.count
    assert len({len(a) for a in t.evaluation}) == 1
    for tool, args in TOOLS[:4]:
        status, out, err_text = run_cli(args(path, tmp_path), capsys)
        assert status == 0, (tool, err_text)


def test_damaged_files_that_are_not_hdf5_are_one_line(tmp_path, good_trace, capsys):
    data = good_trace.read_bytes()
    cases = {"empty.h5": b"", "half.h5": data[: len(data) // 2], "noise.h5": os.urandom(5000),
             "tail.h5": data[:1000]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        for tool, args in TOOLS:
            status, out, err = run_cli(args(tmp_path / name, tmp_path), capsys)
            assert status == 2 and len(err.splitlines()) == 1 and err.startswith("mgd-emu: error: "), (name, tool, err)
    os.mkfifo(tmp_path / "fifo.h5")
    status, out, err = run_cli(["inspect", tmp_path / "fifo.h5"], capsys)
    assert status == 2 and "not a regular file" in err


ATTR_VALUES = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True), st.text(max_size=30),
                        st.booleans(), st.binary(max_size=20),
                        st.lists(st.integers(-5, 100), max_size=4).map(lambda v: np.array(v, dtype=np.int64)))


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(where=st.sampled_from(["", "signals/cost", "signals/layer0.weight", "signals/sample_index", "events"]),
       key=st.sampled_from(["format", "format_version", "seed", "clock_hz", "start_cycle", "cycles_completed",
                            "complete", "probes", "chip", "task_params", "format_kind", "signed", "int_bits",
                            "frac_bits", "width", "every", "elements", "register_shape", "storage", "registers",
                            "window_start", "index", "register"]),
       value=ATTR_VALUES)
def test_fuzzed_trace_attributes_give_a_trace_or_one_trace_error(good_trace, tmp_path, capsys, where, key, value):
    path = tmp_path / "f.h5"
    shutil.copy(good_trace, path)
    with h5py.File(path, "r+") as f:
        try:
            (f[where] if where else f).attrs[key] = value
        except (TypeError, ValueError):
            return
    try:
        t = open_trace(path)
    except TraceError as exc:
        assert "\n" not in str(exc)
        return
    for name in t.signals:  # what the checks let through reads without surprises
        s = t.signal(name)
        assert s.cycles.size == s.data.shape[0]
        assert s.format is None or not s.format.is_fixed or s.data.dtype.kind in "iu"
    status, out, err = run_cli(["inspect", path], capsys)
    assert status == 0, err


# ----------------------------------------------------------- the chip's name

def test_the_default_trace_path_stays_in_traces_whatever_the_chip_name(tmp_path):
    for name in ("../../../escaped", "a\x00b", "/etc/passwd", "..", "-rf", "x" * 500):
        chip = XOR8.replace({"chip.name": name})
        path = default_trace_path(chip, 0, directory=tmp_path / "traces")
        assert path.parent == tmp_path / "traces" and "\x00" not in str(path)
        assert not path.name.startswith(".") and len(path.name) < 150
    out = mgd("run", ROOT / "hw_models/xor_8bit.toml", "--set", 'chip.name="../../../escaped"', "--cycles", "100",
              "--probe", "cost", "--no-plot", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [p.parent for p in tmp_path.rglob("*.h5")] == [tmp_path / "traces"]


# --------------------------------------------------- sizes and odd inputs

def test_a_chip_too_large_for_the_machine_is_refused_before_any_work(tmp_path):
    t0 = time.time()
    out = mgd("run", "xor_ideal", "--set", "network.layers=[2, 100000, 100000, 1]", "--cycles", "10")
    one_line_error(out, "needs an estimated", "GB of memory", "available")
    chip = tmp_path / "wide.toml"
    chip.write_text((ROOT / "hw_models/xor_ideal.toml").read_text().replace("layers = [2, 2, 1]", "layers = [65536, 4, 2]")
                    .replace('name = "parity"\nbits = 2', 'name = "random"\ninputs = 65536\noutputs = 2\nsamples = 65536'))
    out = mgd("run", chip, "--cycles", "10", env={**ENV, "MGD_EMU_MEMORY_LIMIT": str(8 << 30)})
    one_line_error(out, "needs an estimated", "task random data")
    assert time.time() - t0 < 60


def test_a_trace_whose_chip_cannot_be_rebuilt_here_says_so(good_trace, monkeypatch):
    monkeypatch.setenv("MGD_EMU_MEMORY_LIMIT", str(100 << 20))
    with pytest.raises(TraceError, match="cannot be rebuilt here .*needs an estimated"):
        open_trace(good_trace).emulator()


def test_the_memory_estimate_is_above_what_a_build_and_run_use(tmp_path):
    from mgd_emu.limits import estimate_bytes

    chip = load_chip(ROOT / "hw_models/xor_ideal.toml").replace({"network.layers": [2, 600, 600, 1]})
    code = ("import resource, sys; from mgd_emu import load_chip; from mgd_emu.engine import Emulator;"
            f"chip = load_chip({str(ROOT / 'hw_models/xor_ideal.toml')!r}).replace({{'network.layers': [2, 600, 600, 1]}});"
            "e = Emulator(chip, 0, probes=['cost']); e.run(300); c = e.checkpoint();"
            "print(HWM())").replace("HWM()", HWM)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < estimate_bytes(chip, ["cost"]), (int(out.stdout), estimate_bytes(chip, ["cost"]))


def test_a_large_chip_builds_without_a_python_loop_per_weight():
    from mgd_emu.plan import build_plan

    chip = load_chip(ROOT / "hw_models/xor_ideal.toml").replace({"network.layers": [2, 1000, 2000, 1]})
    build_plan(chip, 1)  # compiles the build kernels (or loads them)
    t0 = time.perf_counter()
    plan = build_plan(chip, 1)
    assert time.perf_counter() - t0 < 5.0  # 2e6 parameters and generators; the Python loops took ~100 s
    assert plan.weights[1].shape == (2000, 1000)


def test_odd_chip_paths_and_values_are_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    one_line_error(mgd("show", deep), "nests arrays or tables")
    one_line_error(mgd("show", "xor_8bit", "--set", "network.layers=" + "[" * 3000 + "]" * 3000), "nests")
    one_line_error(mgd("show", "/dev/zero"), "is a device")
    os.mkfifo(tmp_path / "fifo.toml")
    one_line_error(mgd("show", tmp_path / "fifo.toml", timeout=30), "FIFO")
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (5 << 20) + "\n")
    one_line_error(mgd("show", big), "at most")
    one_line_error(mgd("show", "xor_8bit", "--set", "network.init=uniform", "--set", "network.init_low=0.5",
                       "--set", "network.init_high=-0.5"), "network.init_high")
    one_line_error(mgd("run", "xor_8bit", "--cycles", "100", "--probe", "cost every=" + "9" * 23,
                       "--trace", tmp_path / "t.h5"), "every=K")
    one_line_error(mgd("run", "xor_8bit", "--cycles", str(2**64), "--trace", tmp_path / "t.h5"), "--cycles")
    one_line_error(mgd("run", "xor_8bit", "--cycles", "100", "--set", "trace.every=1e23"), "trace.every")
    assert not (tmp_path / "t.h5").exists()


# ------------------------------------------------------------ checkpoints

@pytest.fixture(scope="module")
def ran():
    emu = Emulator(XOR8, 5, probes=["cost every=3"])
    emu.run(3000)
    return emu


def test_a_checkpoint_file_resumes_bit_for_bit_with_its_probes(ran, tmp_path):
    path = save_checkpoint(ran, tmp_path / "c.ckpt")
    back = load_checkpoint(path)
    assert [p.text for p in back.probes] == ["cost every=3"] and back.cycle == 3000
    a = Emulator.restore(ran.checkpoint())
    for e in (a, back):
        e.run(2000)
    cont = Emulator(XOR8, 5, probes=["cost every=3"])
    cont.run(5000)
    for e in (a, back):
        for k, v in cont.checkpoint()["state"].items():
            assert np.array_equal(v, e.checkpoint()["state"][k], equal_nan=True), k
    assert np.array_equal(back.samples("cost")[0], cont.samples("cost")[0][cont.samples("cost")[0] >= 3000])
    assert os.listdir(tmp_path) == ["c.ckpt"]


def _tamper(ckpt, how):
    s = ckpt["state"]
    if how == "missing":
        del s["syn.G"]
    elif how == "extra":
        s["evil"] = np.zeros(3)
    elif how == "dtype":
        s["ctl.cycle"] = s["ctl.cycle"].astype(np.int32)
    elif how == "shape":
        s["syn.theta"] = np.zeros(len(s["syn.theta"]) + 1)
    elif how == "order":
        s["smp.order"][0] = 10**9
    elif how == "sample index":
        s["smp.sample"][0] = 10**9
    elif how == "negative counter":
        s["ctl.cycle"][0] = -5
    elif how == "tag":
        s["pipe.tag"][0] = 7
    elif how == "lfsr":
        s["gen.lfsr"][0] = 0
    elif how == "generator":
        s["syn.sr_theta"][0] = 0
    elif how == "off-grid weight":
        s["syn.theta"][0] = 1e-9
    elif how == "nan weight":
        s["syn.theta"][1] = np.nan
    elif how == "off-grid dual-path activation":
        s["neu.act0"][0] = 0.1234567
    elif how == "seed":
        ckpt["seed"] = -6
    elif how == "version":
        ckpt["version"] += 1
    elif how == "chip":
        ckpt["chip"] = XOR8.replace({"network.layers": [2, 3, 1]}).to_toml()  # another chip
    elif how == "probes":
        ckpt["probes"] = ["nope"]
    elif how == "not an array":
        s["syn.theta"] = list(s["syn.theta"])
    elif how == "object array":
        s["syn.theta"] = s["syn.theta"].astype(object)
    return ckpt


TAMPER = ["missing", "extra", "dtype", "shape", "order", "sample index", "negative counter", "tag", "lfsr",
          "generator", "off-grid weight", "nan weight", "off-grid dual-path activation", "seed", "version", "chip", "probes", "not an array",
          "object array"]


@pytest.mark.parametrize("how", TAMPER)
def test_a_tampered_checkpoint_is_refused_with_one_clear_line(ran, how):
    ckpt = ran.checkpoint()
    ckpt["probes"] = []
    with pytest.raises(CheckpointError) as err:
        Emulator.restore(_tamper(ckpt, how))
    assert "\n" not in str(err.value)


def test_checkpoint_files_never_unpickle_and_refuse_damage(ran, tmp_path):
    import pickle

    path = save_checkpoint(ran, tmp_path / "c.npz")
    evil = tmp_path / "evil.npz"
    np.savez(evil, meta=np.array(json.dumps({"format": "mgd-emu-checkpoint", "version": ran.checkpoint()["version"],
                                              "chip": XOR8.to_toml(), "seed": 5})),
             **{"state.syn.theta": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="evil.npz"):
        load_checkpoint(evil)
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"format": "mgd-emu-checkpoint"}))
    with pytest.raises(CheckpointError, match="not an NPZ archive"):
        load_checkpoint(tmp_path / "p.npz")
    data = path.read_bytes()
    (tmp_path / "half.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "half.npz")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path)
    big = tmp_path / "big.npz"
    np.savez(big, meta=np.load(path)["meta"], **{"state.syn.theta": np.zeros(50_000_000, dtype=np.uint8)})
    with pytest.raises(CheckpointError, match="declare"):
        read_checkpoint(big)


MUTATIONS = st.sampled_from(["delete", "dtype", "shape", "scale", "flip", "rename", "nan", "int", "negate"])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_checkpoints_are_refused_or_run(ran, data):
    ckpt = ran.checkpoint()
    ckpt["probes"] = []
    names = sorted(ckpt["state"])
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(names))
        if name not in ckpt["state"]:
            continue
        a = ckpt["state"][name]
        op = data.draw(MUTATIONS)
        if op == "delete":
            del ckpt["state"][name]
        elif op == "dtype":
            ckpt["state"][name] = a.astype(data.draw(st.sampled_from([np.int32, np.float32, np.uint64, np.int64])))
        elif op == "shape":
            ckpt["state"][name] = np.resize(a, (a.size + data.draw(st.integers(-1, 2))) or 1)
        elif op == "rename":
            ckpt["state"][name + "_"] = ckpt["state"].pop(name)
        elif a.size:
            i = data.draw(st.integers(0, a.size - 1))
            flat = a.reshape(-1)
            if op == "scale":
                with np.errstate(over="ignore"):  # a wrapped integer is tampering too
                    flat[i] = flat[i] * 1000 + 7
            elif op == "flip" and a.dtype.kind in "iu":
                flat[i] ^= a.dtype.type(1 << data.draw(st.integers(0, 8 * a.itemsize - 2)))
            elif op == "nan" and a.dtype.kind == "f":
                flat[i] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
            elif op == "int" and a.dtype.kind in "iu":
                flat[i] = data.draw(st.integers(0, 2**31))
            elif op == "negate" and a.dtype.kind in "if":
                flat[i] = -flat[i] - 1
    try:
        emu = Emulator.restore(ckpt)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    emu.run(300)  # accepted: it runs (no crash), whatever it computes
    emu.evaluate()


def test_validate_checkpoint_refuses_what_is_not_a_checkpoint():
    from mgd_emu.engine import CHECKPOINT_VERSION as V

    for bad in (None, [], {"format": "mgd-emu-checkpoint"}, {"format": "x", "version": V},
                {"format": "mgd-emu-checkpoint", "version": True, "chip": "", "seed": 0, "state": {}},
                {"format": "mgd-emu-checkpoint", "version": V, "chip": "[[[", "seed": 0, "state": {}},
                {"format": "mgd-emu-checkpoint", "version": V, "chip": XOR8.to_toml(), "seed": -1, "state": {}},
                {"format": "mgd-emu-checkpoint", "version": V, "chip": XOR8.to_toml(), "seed": 0, "state": []}):
        with pytest.raises(CheckpointError):
            validate_checkpoint(bad)


# ------------------------------------------------------- bounded plot/inspect

class _Clock:
    """An emulator whose cycle count the test sets: a trace of any length in seconds."""

    def __init__(self, emu):
        self._emu = emu
        self.cycle = 0

    def __getattr__(self, name):
        return getattr(self._emu, name)

    def flush(self, sink=None):
        sink.commit(self)


def long_trace(path, cycles):
    emu = Emulator(XOR8, 0, probes=["cost", "layer0.weight", "layer1.weight", "layer0.weight_integrator",
                                    "layer1.weight_integrator"])
    clock = _Clock(emu)
    w = TraceWriter(path, clock, cycles)
    block = 1 << 20
    rng = np.random.default_rng(0)
    for a in range(0, cycles, block):
        c = np.arange(a, min(cycles, a + block), dtype=np.int64)
        for p in emu.probes:
            shape = (c.size,) + p.shape
            v = rng.normal(0.1, 0.01, size=shape) if p.name == "cost" else \
                np.round(rng.normal(0, 0.3, size=shape) * 32) / 32
            w.append(p, c, np.clip(v, -3.9, 3.9))
        clock.cycle = int(c[-1]) + 1
        w.commit(clock)
    for k in range(20):
        w.evaluation(cycles * (k + 1) // 20, 0.2, 0.5)
    w.close(True, "completed")


HWM = ("[int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]")


def peak_rss_of(*args):
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's (pytest's) at fork
    code = ("import sys; from mgd_emu.cli import main; s = main(sys.argv[1:]);"
            "print(HWM(), file=sys.stderr); sys.exit(s)").replace("HWM()", HWM)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                         env=ENV, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return int(out.stderr.splitlines()[-1]), time.perf_counter() - t0


def test_plot_and_inspect_of_a_long_every_cycle_trace_stay_in_bounded_memory(tmp_path):
    """inspect reads no samples (its memory does not grow with the run);
    plot reads at most 20,000 samples of a signal plus one signal's cycle
    numbers at a time (8 bytes a sample). Before: every dataset whole, and
    Python sets of every cycle (~0.5 GB per 1e6 cycles)."""
    cycles = int(os.environ.get("MGD_EMU_LONG_TRACE_CYCLES", 2_000_000))
    short, long = tmp_path / "short.h5", tmp_path / "long.h5"
    long_trace(short, cycles // 10)
    long_trace(long, cycles)
    rss = {}
    for name, path in (("short", short), ("long", long)):
        rss["inspect", name], _ = peak_rss_of("inspect", path)
        rss["plot", name], rss["plot wall", name] = peak_rss_of("plot", path, "-o", tmp_path / f"{name}.png")
    print(rss)
    assert rss["inspect", "long"] - rss["inspect", "short"] < 20e6, rss
    grown = rss["plot", "long"] - rss["plot", "short"]
    assert grown < 8 * 0.9 * cycles * 4 and rss["plot", "long"] < 700e6, rss
    assert rss["plot wall", "long"] < 60, rss
