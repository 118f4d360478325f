"""Exports for circuit designers: VCD waveforms that a viewer opens, and golden
vectors that replay bit for bit through the block's own kernel."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from vcd.reader import TokenKind, tokenize

from mgd_emu import load_chip
from mgd_emu import export
from mgd_emu.chipmap import clears_every_cycle
from mgd_emu.cli import main as cli_main
from mgd_emu.engine import Emulator
from mgd_emu.trace import TraceError, TraceWriter, open_trace

ROOT = Path(__file__).resolve().parents[1]
XOR8 = load_chip(ROOT / "hw_models/xor_8bit.toml")
PIPELINED = load_chip(ROOT / "hw_models/xor_pipelined.toml")
# Update every 4 steps through a momentum register, with remeasure stalls: the
# controller's edges and stall cycles all show in the synapse's vectors.
SLOW = XOR8.replace({"timing.tau_theta": 4, "cost.baseline": "remeasure", "optimizer.kind": "momentum",
                     "formats.velocity": {"kind": "fixed", "signed": True, "int_bits": 2, "frac_bits": 9}})


def record(path, chip, probes, cycles, seed=3):
    emu = Emulator(chip, seed, probes=probes)
    with TraceWriter(path, emu, cycles) as writer:
        emu.run(cycles, sink=writer)
    return open_trace(path)


# ------------------------------------------------------------------- VCD

@pytest.fixture(scope="module")
def vcd_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("vcd") / "t.h5"
    return record(path, XOR8, ["layer0.weight", "layer0.weight_integrator", "broadcast",
                               "layer0.weight_perturbation every=3", "cost", "sample_index", "target"], 600)



def test_a_code_outside_its_format_is_refused_not_cut_to_width_in_the_vcd(tmp_path):
    import h5py

    path = tmp_path / "t.h5"
    record(path, XOR8, ["cost"], 50)
    with h5py.File(path, "r+") as f:
        f["signals/cost/data"][3] = 60_000            # u0.12 holds codes 0..4095
    with pytest.raises(TraceError, match=r"cost holds code 60000 at cycle 3, outside its format u0.12 .*0\.\.4095"):
        export.write_vcd(open_trace(path), tmp_path / "t.vcd")
    assert not (tmp_path / "t.vcd").exists()

def read_vcd(path):
    """(timescale text, {var path: (type, width)}, {var path: [(time, value text)]}):
    declarations with pyvcd's tokenizer, value changes as the literal text
    (`b0101 !` -> "0101", `1!` -> "1", `r0.5 !` -> "0.5")."""
    scope, decl, ids, timescale = [], {}, {}, None
    with open(path, "rb") as f:
        for tok in tokenize(f):
            if tok.kind is TokenKind.TIMESCALE:
                timescale = f"{tok.data.magnitude.value} {tok.data.unit.value}"
            elif tok.kind is TokenKind.SCOPE:
                scope.append(tok.data.ident)
            elif tok.kind is TokenKind.UPSCOPE:
                scope.pop()
            elif tok.kind is TokenKind.VAR:
                name = ".".join(scope + [tok.data.reference])
                decl[name] = (tok.data.type_.value, tok.data.size)
                ids[tok.data.id_code] = name
    changes, now = {name: [] for name in decl}, 0
    body = Path(path).read_text().split("$enddefinitions $end", 1)[1]
    for word in body.replace("$dumpvars", " ").replace("$end", " ").split("\n"):
        word = word.strip()
        if not word:
            continue
        if word[0] == "#":
            now = int(word[1:])
        elif word[0] in "br":
            value, ident = word[1:].split()
            changes[ids[ident]].append((now, value))
        else:
            changes[ids[word[1:]]].append((now, word[0]))
    return timescale, decl, changes


def value_at(changes, time):
    """The value a waveform viewer shows at `time` (None before the first change)."""
    value = None
    for t, v in changes:
        if t > time:
            break
        value = v
    return value


def test_vcd_timescale_makes_one_cycle_a_whole_even_number_of_units():
    assert export.vcd_timescale(1e8) == ("1 ns", 10)
    assert export.vcd_timescale(1e9) == ("1 ps", 1000)
    assert export.vcd_timescale(2.5e8) == ("1 ns", 4)
    unit, per = export.vcd_timescale(3e8)  # 3.33 ns: no exact unit, rounded in fs
    assert unit == "1 fs" and per % 2 == 0 and abs(per * 1e-15 - 1 / 3e8) < 1e-15


def test_vcd_declares_the_format_widths_under_chip_layer_block_scopes(vcd_trace, tmp_path):
    vcd, gtkw = export.write_vcd(vcd_trace, tmp_path / "w.vcd")
    timescale, decl, _ = read_vcd(vcd)
    assert timescale == "1 ns"  # xor_8bit runs at 100 MHz: 10 units a cycle
    f = XOR8.formats
    assert decl["chip.clk"] == ("wire", 1)
    assert decl["chip.layer0.synapse.weight_1_0"] == ("reg", f.weight.width)
    assert decl["chip.layer0.synapse.weight_integrator_0_1"] == ("reg", f.integrator.width)
    assert decl["chip.layer0.perturbation.weight_perturbation_1_1"] == ("reg", f.perturbation.width)
    assert decl["chip.broadcast.broadcast"] == ("reg", f.cost_change.width)
    assert decl["chip.cost_unit.cost"] == ("reg", f.cost.width)
    assert decl["chip.sampler.sample_index"][0] == "integer"
    assert decl["chip.sampler.target_0"][0] == "real"


def test_vcd_values_are_the_trace_codes_in_twos_complement_at_every_sampled_cycle(vcd_trace, tmp_path):
    a, b = 100, 400
    vcd, _ = export.write_vcd(vcd_trace, tmp_path / "w.vcd", signals=["broadcast", "layer0.weight_perturbation",
                                                                      "sample_index"], start=a, stop=b)
    _, decl, changes = read_vcd(vcd)
    assert set(decl) == {"chip.clk", "chip.broadcast.broadcast", "chip.sampler.sample_index"} | {
        f"chip.layer0.perturbation.weight_perturbation_{j}_{k}" for j in range(2) for k in range(2)}
    cycles, codes = vcd_trace.codes("broadcast")
    width = XOR8.formats.cost_change.width
    negative = 0
    for c, code in zip(cycles, codes):
        if a <= c < b:
            bits = value_at(changes["chip.broadcast.broadcast"], c * 10)
            assert int(bits, 2) == code & (2 ** width - 1)
            negative += code < 0
    assert negative > 0  # some codes were negative, written as two's complement
    cycles, codes = vcd_trace.codes("layer0.weight_perturbation")
    assert list(cycles[:3]) == [0, 3, 6]
    for c, code in zip(cycles, codes):
        if a <= c < b:
            for c2 in range(c, min(c + 3, b)):  # held between samples
                bits = value_at(changes["chip.layer0.perturbation.weight_perturbation_0_1"], c2 * 10)
                assert int(bits, 2) == code[0, 1] & 0xFF
    cycles, index = vcd_trace.values("sample_index")
    for c, i in zip(cycles, index):
        if a <= c < b:
            assert int(value_at(changes["chip.sampler.sample_index"], c * 10), 2) == i
    # a value is written only when it changes; the clock rises at every cycle start
    times = [t for t, _ in changes["chip.broadcast.broadcast"]]
    assert len(times) == len(set(times)) <= b - a
    clk = changes["chip.clk"]
    assert [t for t, v in clk if v == "1"] == [c * 10 for c in range(a, b)]


def test_gtkw_names_every_exported_signal_grouped_by_block(vcd_trace, tmp_path):
    vcd, gtkw = export.write_vcd(vcd_trace, tmp_path / "w.vcd")
    assert gtkw == tmp_path / "w.gtkw"
    text = gtkw.read_text()
    _, decl, _ = read_vcd(vcd)
    for name in decl:
        assert name in text, name
    for group in ("-layer0.synapse", "-layer0.perturbation", "-broadcast", "-cost_unit", "-sampler"):
        assert group in text
    assert str(vcd.resolve()) in text


def test_no_vcd_variable_claims_a_value_before_its_first_sample(tmp_path):
    # A float chip (real variables) and a fixed one (reg), each with a probe
    # whose window starts after the export window does.
    ideal = load_chip(ROOT / "hw_models/xor_ideal.toml")
    for chip, kind in ((ideal, "r"), (XOR8, "b")):
        t = record(tmp_path / f"{kind}.h5", chip, ["cost window=100:", "layer0.weight every=50"], 300)
        vcd, _ = export.write_vcd(t, tmp_path / f"{kind}.vcd", start=0, stop=200)
        _, _, changes = read_vcd(vcd)
        cost = changes["chip.cost_unit.cost"]
        first_value = cost[1] if kind == "b" else cost[0]
        if kind == "b":  # a reg is x in $dumpvars until its first sample
            assert cost[0] == (0, "x")
        else:  # VCD has no x for a real: it has no value change at all before its first sample
            assert cost[0][0] == 1000
        assert first_value[0] == 1000  # cycle 100, 10 ns a cycle
        assert value_at(changes["chip.layer0.synapse.weight_0_0"], 0) is not None
        dumpvars = vcd.read_text().split("$dumpvars", 1)[1].split("$end", 1)[0]
        ident = [line.split()[3] for line in vcd.read_text().splitlines()
                 if line.startswith("$var") and line.split()[4] == "cost"][0]
        assert (ident in dumpvars.split()) == (kind == "b")
        if shutil.which("vcd2fst"):
            out = subprocess.run(["vcd2fst", str(vcd), str(tmp_path / f"{kind}.fst")], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which("vcd2fst") is None, reason="GTKWave's vcd2fst is not installed")
def test_gtkwave_converts_the_vcd(vcd_trace, tmp_path):
    vcd, _ = export.write_vcd(vcd_trace, tmp_path / "w.vcd", start=0, stop=300)
    out = subprocess.run(["vcd2fst", str(vcd), str(tmp_path / "w.fst")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "w.fst").stat().st_size > 0


@pytest.mark.parametrize("kwargs, words", [
    (dict(signals=["cots"]), "no signal 'cots'"),
    (dict(start=50, stop=50), "window 50:50 is empty"),
    (dict(start=5000, stop=6000), "holds no samples"),
])
def test_a_bad_vcd_request_is_one_clear_error(vcd_trace, tmp_path, kwargs, words):
    with pytest.raises(TraceError, match=words):
        export.write_vcd(vcd_trace, tmp_path / "w.vcd", **kwargs)


# --------------------------------------------------------- golden vectors

SYNAPSE_PROBES = ["layer0.weight", "layer0.weight_integrator", "layer0.weight_perturbation",
                  "layer0.weight_velocity", "broadcast"]
LAYER_PROBES = ["input", "layer0.weight", "layer0.bias", "layer0.weight_perturbation",
                "layer0.bias_perturbation", "layer0.activation"]


@pytest.fixture(scope="module")
def golden_traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    both = list(dict.fromkeys(SYNAPSE_PROBES + LAYER_PROBES))
    return {"slow": record(d / "slow.h5", SLOW, both, 1500),
            "pipelined": record(d / "pipe.h5", PIPELINED, [p for p in both if "velocity" not in p], 1500)}


def read_hex(folder, entry):
    """Codes [cycles, elements] from a $readmemh file, read independently of
    the exporter: one word per line, element e in bits [e*w, (e+1)*w)."""
    w, n = entry["width"], len(entry["elements"])
    rows = []
    for line in (folder / entry["file"]).read_text().split():
        word = int(line, 16)
        assert word < 1 << (w * n) and len(line) == (w * n + 3) // 4
        row = [(word >> (e * w)) & ((1 << w) - 1) for e in range(n)]
        rows.append([c - (1 << w) if entry["signed"] and c >> (w - 1) else c for c in row])
    return np.array(rows, dtype=np.int64)


def load_golden(folder):
    m = json.loads((folder / "manifest.json").read_text())
    stim = {e["name"]: read_hex(folder, e) for e in m["stimulus"]}
    resp = {e["name"]: read_hex(folder, e) for e in m["response"]}
    return m, stim, resp


@pytest.mark.parametrize("name, block, window", [
    ("slow", "synapse:layer0.weight[1,0]", (0, 1400)),
    ("slow", "synapse", (300, 1300)),
    ("pipelined", "synapse:layer0.weight[0,1]", (200, 1200)),
])
def test_synapse_golden_vectors_replay_bit_for_bit_through_its_kernel(golden_traces, tmp_path, name,
                                                                      block, window):
    t = golden_traces[name]
    paths = export.write_golden(t, tmp_path / "g", block=block, start=window[0], stop=window[1])
    assert paths[-1].name == "manifest.json" and all(p.exists() for p in paths)
    m, stim, resp = load_golden(tmp_path / "g")
    a, b = window
    assert m["cycles"] == {"start": a, "stop": b, "count": b - a}
    assert (m["chip"], m["seed"], m["block"], m["layer"]) == (t.chip.name, 3, "synapse", 0)
    assert all(len(v) == b - a for v in [*stim.values(), *resp.values()])
    # The response is the trace's register one cycle later, and the stimulus the generator's.
    off = m["flat_index"]
    assert np.array_equal(resp["weight"][:, 0], t.codes("layer0.weight")[1].reshape(-1, 4)[a + 1:b + 1, off])
    assert np.array_equal(stim["perturbation"][:, 0],
                          t.codes("layer0.weight_perturbation")[1].reshape(-1, 4)[a:b, off])
    if name == "slow":  # updates every 4 steps, remeasure stalls: edges are sparse, G holds between
        assert 0 < stim["update_edge"].sum() < (b - a) / 4 and 0 < stim["gate"].sum() < b - a
        assert "velocity" in resp and np.any(resp["integrator"] != 0)
    else:  # the correlator's delay line starts full
        assert m["delay_line"]["depth"] == 5 and len(m["delay_line"]["codes"]) == 5
    got = export.replay(m, stim, t.chip)
    for key in resp:
        assert np.array_equal(got[key], resp[key]), key


def test_a_replay_integrates_across_cycles_even_for_a_chip_that_clears_its_integrators_every_cycle(
        golden_traces, tmp_path):
    """xor_pipelined updates every cycle, so its engine skips G's reads and
    writes (G is 0 at every cycle's start); a stimulus without update edges
    must still integrate: the replay answers as a chip that does not clear."""
    t = golden_traces["pipelined"]
    assert t.chip.timing.tau_theta == 1 and clears_every_cycle(t.chip)
    export.write_golden(t, tmp_path / "g", block="synapse:layer0.weight[0,1]", start=200, stop=400)
    m, stim, resp = load_golden(tmp_path / "g")
    stim["update_edge"][::3, 0] = 0     # edges on two cycles of three: G holds between
    got = export.replay(m, stim, t.chip)
    assert np.any(got["integrator"] != 0)
    keeps_g = t.chip.replace({"timing.tau_theta": 2})
    assert not clears_every_cycle(keeps_g)
    want = export.replay(m, stim, keeps_g)
    for key in resp:
        assert np.array_equal(got[key], want[key]), key


def test_node_mode_synapse_vectors_carry_the_presynaptic_activity_and_replay(tmp_path):
    chip = load_chip(ROOT / "hw_models/xor_node.toml").replace({"timing.layer_pipelining": True,
                                                               "timing.cost_latency": 1})
    t = record(tmp_path / "t.h5", chip, ["layer0.activation", "layer1.node_perturbation", "layer1.weight",
                                         "layer1.weight_integrator", "broadcast"], 600)
    export.write_golden(t, tmp_path / "g", block="synapse:layer1.weight[0,1]", start=100)
    m, stim, resp = load_golden(tmp_path / "g")
    assert "presynaptic" in stim and len(m["delay_line"]["presynaptic_codes"]) == m["delay_line"]["depth"] == 2
    assert np.array_equal(stim["presynaptic"][:, 0], t.codes("layer0.activation")[1][100:599, 1])
    assert np.array_equal(export.replay(m, stim, chip)["weight"], resp["weight"])
    row = int(np.flatnonzero(stim["presynaptic"][:, 0] > 16)[0])
    stim["presynaptic"][row, 0] ^= 1 << 7
    assert not np.array_equal(export.replay(m, stim, chip)["weight"], resp["weight"])


def test_a_flipped_stimulus_bit_breaks_the_replay(golden_traces, tmp_path):
    t = golden_traces["slow"]
    export.write_golden(t, tmp_path / "g", block="synapse:layer0.weight[0,0]", start=100, stop=600)
    m, stim, resp = load_golden(tmp_path / "g")
    row = int(np.flatnonzero((stim["broadcast_valid"][:, 0] == 1) & (stim["update_edge"][:, 0] == 0))[0])
    stim["broadcast"][row, 0] ^= 1 << 9
    got = export.replay(m, stim, t.chip)
    assert not np.array_equal(got["integrator"], resp["integrator"])
    assert np.array_equal(got["integrator"][:row], resp["integrator"][:row])


def test_neuron_layer_golden_vectors_replay_bit_for_bit(golden_traces, tmp_path):
    for name, t in golden_traces.items():
        export.write_golden(t, tmp_path / name, block="layer0", start=10, stop=700)
        m, stim, resp = load_golden(tmp_path / name)
        assert [e["name"] for e in m["stimulus"]] == ["input", "weight", "bias", "weight_perturbation",
                                                      "bias_perturbation", "gate"]
        assert m["stimulus"][1]["elements"] == ["weight_0_0", "weight_0_1", "weight_1_0", "weight_1_1"]
        assert resp["activation"].shape == (690, 2)
        assert np.array_equal(export.replay(m, stim, t.chip)["activation"], resp["activation"])
        stim["input"][5, 0] ^= 1
        assert not np.array_equal(export.replay(m, stim, t.chip)["activation"], resp["activation"])


def test_golden_hex_files_load_with_readmemh_layout(golden_traces, tmp_path):
    export.write_golden(golden_traces["slow"], tmp_path, block="layer0", start=0, stop=20)
    m = json.loads((tmp_path / "manifest.json").read_text())
    w = next(e for e in m["stimulus"] if e["name"] == "weight")
    assert (w["width"], w["word_bits"], w["hex_digits"]) == (8, 32, 8)
    lines = (tmp_path / "weight.hex").read_text().splitlines()
    assert len(lines) == 20 and all(len(x) == 8 and set(x) <= set("0123456789abcdef") for x in lines)


@pytest.mark.parametrize("block, kwargs, words", [
    ("synapse:layer1.weight[0,0]", {}, r'lacks layer1.weight \(not probed\).*--probe "layer1.weight"'),
    ("layer1", {}, '--probe "layer1.activation"'),
    ("synapse:layer0.weight[2,0]", {}, "has shape"),
    ("neuron", {}, "not a block with golden vectors"),
    ("synapse", dict(start=10, stop=10), "is empty"),
    ("synapse", dict(start=0, stop=9999), "can cover cycles 0:1499"),
])
def test_a_golden_request_the_trace_cannot_serve_says_what_to_do(golden_traces, tmp_path, block, kwargs, words):
    with pytest.raises(TraceError, match=words):
        export.write_golden(golden_traces["slow"], tmp_path, block=block, **kwargs)


def test_probes_sampled_every_k_cycles_are_refused_for_golden_vectors(tmp_path):
    t = record(tmp_path / "t.h5", XOR8, ["layer0.weight every=2", "layer0.weight_integrator",
                                         "layer0.weight_perturbation", "broadcast"], 100)
    with pytest.raises(TraceError, match="every=2, needs every cycle"):
        export.write_golden(t, tmp_path / "g")


def test_the_command_line_exports_and_reports_a_mistake_in_one_line(golden_traces, tmp_path, capsys):
    trace = str(golden_traces["pipelined"].path)
    assert cli_main(["export", "vcd", trace, "-o", str(tmp_path / "x.vcd"), "--window", "0:100"]) == 0
    assert cli_main(["export", "golden", trace, "-o", str(tmp_path / "g"), "--window", "100:200"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "x.gtkw") in printed and str(tmp_path / "g" / "manifest.json") in printed
    assert cli_main(["export", "vcd", trace, "--signals", "nope"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
