"""Probes and traces: what is recorded, when, in what format, and what an
interrupted run leaves behind."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mgd_emu import ChipError, load_chip, loads_chip
from mgd_emu.engine import Emulator
from mgd_emu.probes import ProbeError, parse_probe
from mgd_emu.testing import assert_probes_record_the_registers
from mgd_emu.trace import END_STOPPED, TraceError, TraceWriter, open_trace, target_reached

ROOT = Path(__file__).resolve().parents[1]
XOR8 = load_chip(ROOT / "hw_models/xor_8bit.toml")


# -- probes --------------------------------------------------------------------

def test_a_probe_names_a_register_an_index_subset_a_period_and_a_window():
    p = parse_probe("layer0.weight[0:1, :] every=3 window=10:40", XOR8)
    assert (p.name, p.shape, p.every, p.start, p.stop) == ("layer0.weight", (1, 2), 3, 10, 40)
    assert list(p.flat) == [0, 1]
    assert list(parse_probe("layer0.weight[:, 1]", XOR8).flat) == [1, 3]
    assert list(parse_probe("layer1.bias[-1]", XOR8).flat) == [0]
    assert parse_probe("cost", XOR8).shape == ()


@pytest.mark.parametrize("text, words", [
    ("layer0.wieght", "did you mean 'layer0.weight'"),
    ("layer0.weight[5, :]", "out of range"),
    ("layer0.weight[0, 0, 0]", "dimension"),
    ("layer0.weight[a:b]", "not an index or a slice"),
    ("cost every=0", "every=K with K >= 1"),
    ("cost window=9:3", "is empty"),
    ("cost speed=3", "not an option"),
])
def test_a_bad_probe_is_refused_with_what_is_allowed(text, words):
    with pytest.raises(ProbeError, match=words):
        parse_probe(text, XOR8)


def test_probes_in_the_chip_description_are_checked_on_load():
    with pytest.raises(ChipError, match="trace.probes.*did you mean 'cost'"):
        loads_chip('[trace]\nprobes = ["cots"]', "c.toml")
    chip = loads_chip('[trace]\nprobes = ["cost", "layer0.weight every=5"]\nevery = 2', "c.toml")
    emu = Emulator(chip, 0).run(20)
    assert list(emu.samples("cost")[0]) == list(range(0, 20, 2))
    assert list(emu.samples("layer0.weight")[0]) == list(range(0, 20, 5))


def test_a_sample_is_the_register_during_its_cycle():
    emu = Emulator(XOR8, 1, probes=["layer0.weight", "cost", "sample_index"])
    seen = []
    for _ in range(30):
        seen.append((emu.registers["layer0.weight"].copy(), emu.registers["cost"],
                     emu.registers["sample_index"]))
        emu.run(1)
    cycles, w = emu.samples("layer0.weight")
    assert list(cycles) == list(range(30))
    for c in range(30):
        assert np.array_equal(w[c], seen[c][0])
        assert emu.samples("cost")[1][c] == seen[c][1]
        assert emu.samples("sample_index")[1][c] == seen[c][2]


def test_probing_does_not_change_the_run():
    # every register as without probes; also each probe's schedule and sampled values
    assert_probes_record_the_registers(XOR8, 2, ["layer0.weight", "layer1.weight_integrator", "cost"], 5000)


def test_buffers_are_flushed_between_chunks_without_losing_a_sample():
    emu = Emulator(XOR8, 0, probes=["layer0.weight"])
    emu.pr = emu.pr._replace(buf=np.zeros((7, emu.pr.buf.shape[1])),  # a tiny buffer: many flushes
                             cyc=np.zeros((7, 1), dtype=np.int64))
    emu.run(100)
    assert list(emu.samples("layer0.weight")[0]) == list(range(100))


# -- trace files ------------------------------------------------------------------

def record(path, chip=XOR8, seed=1, cycles=3000, probes=("layer0.weight every=10", "cost", "sample_index", "target")):
    emu = Emulator(chip, seed, probes=list(probes))
    with TraceWriter(path, emu, cycles) as writer:
        emu.run(cycles, sink=writer)
        writer.evaluation(emu.cycle, *emu.evaluate())
    return emu


def test_a_trace_holds_codes_cycles_formats_and_the_resolved_chip(tmp_path):
    emu = record(tmp_path / "t.h5")
    t = open_trace(tmp_path / "t.h5")
    assert t.complete and t.cycles_completed == 3000 and t.seed == 1
    assert t.chip == XOR8
    cycles, codes = t.codes("layer0.weight")
    assert list(cycles) == list(range(0, 3000, 10))
    fmt = XOR8.formats.weight
    s = t.signal("layer0.weight")
    assert s.data.dtype == np.int8 and fmt.width <= 8
    assert np.array_equal(t.values("layer0.weight")[1], codes * 2.0 ** -fmt.frac_bits)
    with h5py.File(tmp_path / "t.h5", "r") as f:
        g = f["signals/layer0.weight"]
        assert g.attrs["conversion"] == g.attrs["resolution"] == fmt.lsb
        assert g.attrs["continuity"] == "step" and g.attrs["frac_bits"] == fmt.frac_bits
        assert g["data"].compression == "gzip" and g["data"].chunks is not None
        assert f.attrs["format"] == "mgd-emu-trace" and f.attrs["format_version"] == 1
    # Superblock version 3: the HDF5 1.10 file format (SWMR-capable), readable by any HDF5 >= 1.10.
    assert (tmp_path / "t.h5").read_bytes()[8] == 3
    assert t.signal("target").format.kind == "float"
    ev_cycles, cost, acc = t.evaluation
    assert list(ev_cycles) == [3000] and (cost[0], acc[0]) == emu.evaluate()
    assert t.events == emu.events


def test_a_trace_rebuilds_the_chip_and_reproduces_the_run_bit_for_bit(tmp_path):
    record(tmp_path / "t.h5")
    t = open_trace(tmp_path / "t.h5")
    again = t.emulator().run(t.attrs["start_cycle"] + t.cycles_completed)
    for name in t.signals:
        assert np.array_equal(again.samples(name)[0], t.signal(name).cycles)
        assert np.array_equal(again.samples(name)[1], t.values(name)[1]), name


def test_memory_stays_bounded_however_long_the_run(tmp_path):
    script = """
import resource, sys
from mgd_emu import load_chip
from mgd_emu.engine import Emulator
from mgd_emu.trace import TraceWriter
emu = Emulator(load_chip("hw_models/xor_8bit.toml"), 0, probes=["layer0.weight", "layer1.weight", "cost"])
n = int(sys.argv[1])
with TraceWriter(sys.argv[2], emu, n) as w:
    emu.run(n, sink=w)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    peaks = []
    for n in (40_000, 400_000):
        out = subprocess.run([sys.executable, "-c", script, str(n), str(tmp_path / f"{n}.h5")], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        peaks.append(int(out.stdout.split()[-1]))
        assert open_trace(tmp_path / f"{n}.h5").signal("layer0.weight").cycles.size == n
    # 10x the cycles (and 10x the samples, ~20 MB more raw data) within 10 MiB of peak RSS
    assert peaks[1] - peaks[0] < 10 * 1024, peaks


class WrittenInLine(TraceWriter):
    writes_behind = False   # each chunk's samples are written before the next chunk runs


def test_a_trace_written_while_the_next_cycles_run_equals_one_written_in_line(tmp_path):
    probes = ["layer0.weight", "layer1.weight", "layer0.weight_integrator", "cost", "sample_index"]
    files = []
    for writer in (TraceWriter, WrittenInLine):
        emu = Emulator(XOR8, 3, probes=probes)
        emu._chunk_cycles = 500          # many chunks, each written by the thread while the next runs
        with writer(tmp_path / f"{writer.__name__}.h5", emu, 60_000) as w:
            emu.run(30_000, sink=w).run(30_000, sink=w)
        files.append(h5py.File(tmp_path / f"{writer.__name__}.h5", "r"))
    behind, in_line = files
    names = []
    behind.visit(names.append)
    assert "signals/layer0.weight/data" in names and "events/counts" in names
    for name in names:
        if isinstance(behind[name], h5py.Dataset):
            assert np.array_equal(behind[name][()], in_line[name][()]), name
    assert behind.attrs["complete"] and behind.attrs["cycles_completed"] == 60_000


def test_a_write_that_fails_behind_the_run_stops_the_run_with_its_error(tmp_path):
    class DiskFullOnThirdFlush(TraceWriter):
        flushes = 0

        def _check_space(self):
            self.flushes += 1
            if self.flushes == 3:
                raise OSError(28, "No space left on device")
            super()._check_space()

    emu = Emulator(XOR8, 0, probes=["cost"])
    emu._chunk_cycles = 1000
    with pytest.raises(TraceError, match="writing the trace failed"):
        with DiskFullOnThirdFlush(tmp_path / "t.h5", emu, 10**7) as w:
            emu.run(10**7, sink=w)
    assert w.flushes == 3 and emu.cycle < 10**7   # the run stopped at the chunk after the failed write
    t = open_trace(tmp_path / "t.h5")
    assert not t.complete and t.attrs["end_reason"].startswith("failed: disk full")
    assert 0 < t.cycles_completed < emu.cycle
    # the emulator goes on; a new trace holds its own cycles and nothing of the failed one's
    start = emu.cycle
    with TraceWriter(tmp_path / "again.h5", emu, 20_000) as w:
        emu.run(20_000, sink=w)
    again = open_trace(tmp_path / "again.h5")
    assert again.complete and list(again.signal("cost").cycles) == list(range(start, start + 20_000))


def test_an_exception_leaves_an_incomplete_trace_with_every_flushed_cycle(tmp_path):
    emu = Emulator(XOR8, 0, probes=["cost"])
    calls = []

    def fail_on_third_chunk(e):
        calls.append(e.cycle)
        if len(calls) == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        with TraceWriter(tmp_path / "t.h5", emu, 10**9) as w:
            emu.run(10**9, sink=w, progress=fail_on_third_chunk)
    t = open_trace(tmp_path / "t.h5")
    assert not t.complete and t.attrs["end_reason"] == "failed: RuntimeError: power cut"
    assert t.cycles_completed == calls[-1] == t.signal("cost").cycles.size


def test_ctrl_c_leaves_an_incomplete_trace(tmp_path):
    emu = Emulator(XOR8, 0, probes=["cost"])

    def interrupt(e):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with TraceWriter(tmp_path / "t.h5", emu, 10**9) as w:
            emu.run(10**9, sink=w, progress=interrupt)
    t = open_trace(tmp_path / "t.h5")
    assert not t.complete and t.attrs["end_reason"] == "interrupted (SIGINT)"
    assert t.cycles_completed == emu.cycle > 0


def test_a_killed_run_leaves_a_trace_that_opens_and_says_it_is_incomplete(tmp_path):
    path = tmp_path / "killed.h5"
    script = f"""
import sys
from mgd_emu import load_chip
from mgd_emu.engine import Emulator
from mgd_emu.trace import TraceWriter
emu = Emulator(load_chip("hw_models/xor_8bit.toml"), 0, probes=["layer0.weight", "cost"])
with TraceWriter({str(path)!r}, emu, 10**12) as w:
    emu.run(10**12, sink=w, progress=lambda e: print(e.cycle, flush=True))
"""
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(5):  # five chunks flushed
            assert child.stdout.readline()
        time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    t = open_trace(path)
    assert not t.complete and t.attrs["end_reason"] == "running"
    n = t.cycles_completed
    assert n > 0
    assert np.array_equal(t.signal("cost").cycles, np.arange(n))
    assert t.signal("layer0.weight").cycles.size == n


def test_a_file_that_is_not_a_trace_is_refused(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        open_trace(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(TraceError, match="not an HDF5 file"):
        open_trace(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(TraceError, match="not an mgd-emu trace"):
        open_trace(tmp_path / "other.h5")
    record(tmp_path / "future.h5", cycles=10)
    with h5py.File(tmp_path / "future.h5", "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(TraceError, match="version 99 is not supported"):
        open_trace(tmp_path / "future.h5")


def test_a_trace_path_that_cannot_be_written_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(TraceError, match="cannot be written") as err:
        TraceWriter(tmp_path / "file" / "t.h5", Emulator(XOR8, 0), 10)
    assert "\n" not in str(err.value)


def test_refusals_to_read_are_one_line_and_name_the_cause(tmp_path):
    with pytest.raises(TraceError) as err:
        open_trace(tmp_path)
    assert str(err.value) == f"{tmp_path}: is a directory, not a trace file (traces are .h5 files)"
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(TraceError) as err:
        open_trace(tmp_path / "text.h5")
    # HDF5's own text carries newlines, time stamps and buffer addresses: only its cause is kept
    assert str(err.value) == (f"{tmp_path / 'text.h5'}: not an HDF5 file, so not an mgd-emu trace "
                              "(file signature not found)")


def test_the_end_reasons_of_runs_that_stop_before_their_cycles(tmp_path):
    emu = Emulator(XOR8, 0, probes=["cost"])
    with TraceWriter(tmp_path / "t.h5", emu, 1000) as w:
        emu.run(400, sink=w)
    t = open_trace(tmp_path / "t.h5")
    assert (t.complete, t.attrs["end_reason"], t.cycles_completed) == (False, END_STOPPED, 400)
    assert target_reached(1.0) == "target accuracy 1.0 reached"
    assert target_reached(0.75) == "target accuracy 0.75 reached"


def test_a_float_chip_stores_values_and_names_its_probes_in_the_file(tmp_path):
    chip = load_chip(ROOT / "hw_models/xor_ideal.toml")
    record(tmp_path / "f.h5", chip=chip, cycles=100, probes=["layer0.weight[1, :] every=7"])
    t = open_trace(tmp_path / "f.h5")
    s = t.signal("layer0.weight")
    assert s.data.dtype == np.float64 and s.data.shape == (15, 2) and s.index == "1, :"
    assert json.loads(t.attrs["probes"]) == ["layer0.weight[1, :] every=7"]
    with pytest.raises(TraceError, match="no codes"):
        s.codes
