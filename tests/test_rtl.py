"""The circuit designers' flow: the reference RTL (rtl/) replays the golden and
corner-case vectors of several chips bit for bit under Icarus Verilog, and a
known design error compiled into it makes the replay fail."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgd_emu import load_chip
from mgd_emu.blocks.prng import lfsr32_step, xorshift64star_next
from mgd_emu.cli import main as cli_main
from mgd_emu.engine import Emulator
from mgd_emu.fixedpoint import Format, requantize_code
from mgd_emu.rtl import Reg, RtlError, export_rtl, lfsr32, requant, xorshift64star
from mgd_emu.rtl_sim import replay_rtl, simulator_missing
from mgd_emu.trace import TraceWriter, open_trace

ROOT = Path(__file__).resolve().parents[1]
XOR8 = load_chip(ROOT / "hw_models/xor_8bit.toml")
MISSING = simulator_missing()
needs_simulator = pytest.mark.skipif(MISSING is not None, reason=f"RTL replay skipped: {MISSING}")

S29 = {"kind": "fixed", "signed": True, "int_bits": 2, "frac_bits": 9}
# (chip, parameter, probes' layer): the five design points of the RTL flow.
CHIPS = {
    # weight perturbation, plain update, stochastic weights, integrator nearest-even
    "xor_8bit": (XOR8, "layer0.weight[0,1]"),
    # 4-bit stochastic weights, 10 integration steps per update
    "xor_4bit": (load_chip(ROOT / "hw_models/xor_4bit.toml"), "layer0.weight[1,0]"),
    # node perturbation: e = C~ p_j kappa a_k, presynaptic delay line 2 stages deep
    "xor_node": (load_chip(ROOT / "hw_models/xor_node.toml").replace(
        {"timing.layer_pipelining": True, "timing.cost_latency": 1}), "layer1.weight[0,1]"),
    # momentum (velocity s2.9 truncate), an update every 4 steps, delay line 5 deep
    "momentum": (load_chip(ROOT / "hw_models/xor_pipelined.toml").replace(
        {"optimizer.kind": "momentum", "timing.tau_theta": 4,
         "formats.velocity": dict(S29, rounding="truncate")}), "layer0.bias[1]"),
    # wrap-around integrator and weights, nearest-even weights (eta = 1/16: ties reachable)
    "wrap": (XOR8.replace({"optimizer.learning_rate": 0.0625,"formats.integrator": {"kind": "fixed", "signed": True, "int_bits": 4, "frac_bits": 11,
                                                  "overflow": "wrap"},
                           "formats.weight": {"kind": "fixed", "signed": True, "int_bits": 2, "frac_bits": 5,
                                              "overflow": "wrap"}}), "layer0.weight[1,1]"),
}
CYCLES = 1200


def record(path, chip, parameter, cycles=CYCLES, seed=5):
    layer, kind = parameter.split(".")[0], parameter.split(".")[1].split("[")[0]
    node = chip.perturbation.mode == "node"
    probes = [f"{layer}.{kind}", f"{layer}.{kind}_integrator", "broadcast",
              f"{layer}.node_perturbation" if node else f"{layer}.{kind}_perturbation"]
    if chip.optimizer.kind == "momentum":
        probes.append(f"{layer}.{kind}_velocity")
    if node:
        probes.append("input" if layer == "layer0" else f"layer{int(layer[5:]) - 1}.activation")
    emu = Emulator(chip, seed, probes=probes)
    with TraceWriter(path, emu, cycles) as writer:
        emu.run(cycles, sink=writer)
    return open_trace(path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{chip name: the export's folder}, written once per test run."""
    d = tmp_path_factory.mktemp("rtl")
    out = {}
    for name, (chip, parameter) in CHIPS.items():
        t = record(d / f"{name}.h5", chip, parameter)
        export_rtl(t, d / name, block=f"synapse:{parameter}")
        out[name] = d / name
    return out


def manifest(folder):
    return json.loads((folder / "synapse" / "manifest.json").read_text())


# ------------------------------------------------------------ the integers

formats = st.builds(lambda s, i, f, r, o: Format("fixed", s, i, f, r, o), st.booleans(),
                    st.integers(0, 8), st.integers(0, 12), st.sampled_from(["truncate", "nearest-even", "stochastic"]),
                    st.sampled_from(["saturate", "wrap"]))


@settings(max_examples=400, deadline=None)
@given(fmt=formats, x=st.integers(-(1 << 40), 1 << 40), frac_in=st.integers(0, 30), rnd=st.integers(0, (1 << 64) - 1))
def test_the_integer_requantiser_is_the_emulators(fmt, x, frac_in, rnd):
    code, _ = requant(x, frac_in, Reg.of(fmt), rnd)
    assert code == int(requantize_code(np.int64(x), np.int64(frac_in), fmt.row, np.uint64(rnd))[0])


@given(state=st.integers(1, (1 << 64) - 1), lstate=st.integers(1, (1 << 32) - 1))
def test_the_generators_are_the_emulators(state, lstate):
    s, out = xorshift64star_next(np.uint64(state))
    assert xorshift64star(state) == (int(s), int(out))
    s, bit = lfsr32_step(np.uint64(lstate))
    assert lfsr32(lstate) == (int(s), int(bit))


def test_requant_faults_change_only_ties_and_the_upper_limit():
    g = Reg(16, 11, 1, 1, 0)
    assert [requant(x, 21, g)[0] for x in (4608, 5632, -3584)] == [4, 6, -4]          # ties to even
    assert [requant(x, 21, g, fault=1)[0] for x in (4608, 5632, -3584)] == [5, 6, -3]  # ties up
    assert requant(32767 << 10, 21, g)[0] == 32767 and requant(32767 << 10, 21, g, fault=2)[0] == 32766


# ------------------------------------------------------------ the export

def test_the_export_writes_header_stream_and_manifest(exports):
    folder = exports["xor_8bit"] / "synapse"
    m = manifest(exports["xor_8bit"])
    header = (folder / "mgd_chip.vh").read_text()
    assert "`define MGD_W_TH      8" in header and "`define MGD_KAPPA     12'he39" in header
    assert m["parameters"]["R_TH"] == 2 and m["parameters"]["R_G"] == 1 and m["parameters"]["DEPTH"] == 0
    for col in m["stimulus"] + m["response"]:
        lines = (folder / col["file"]).read_text().split()
        assert len(lines) == m["rows"] and all(len(x) == col["hex_digits"] for x in lines)
    segs = m["segments"]
    assert segs[0]["kind"] == "run" and segs[0]["stop"] - segs[0]["first_row"] == CYCLES - 1
    assert all(s["kind"] == "corner" for s in segs[1:]) and segs[-1]["stop"] == m["rows"]
    assert (exports["xor_8bit"] / "golden" / "manifest.json").exists()



def test_an_export_over_an_earlier_one_replaces_its_folders_whole_and_an_interrupted_one_leaves_it(exports, tmp_path,
                                                                                                 monkeypatch):
    import mgd_emu.rtl as rtl

    t_node = open_trace(exports["xor_node"].parent / "xor_node.h5")
    t_x8 = open_trace(exports["xor_8bit"].parent / "xor_8bit.h5")
    out = tmp_path / "v"
    out.mkdir()
    (out / "notes.txt").write_text("mine")                     # not the export's: left alone
    export_rtl(t_node, out, block="synapse:layer1.weight[0,1]")
    assert (out / "synapse" / "presynaptic.hex").exists()       # a node-mode column
    export_rtl(t_x8, out, block="synapse:layer0.weight[0,1]")
    assert not (out / "synapse" / "presynaptic.hex").exists()   # no stale file of the node export
    assert manifest(out)["parameter"] == "layer0.weight[0,1]" and manifest(out)["golden"] == "../golden"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rtl, "write_activation_luts", interrupted)   # the last step of an export
    with pytest.raises(KeyboardInterrupt):
        export_rtl(t_node, out, block="synapse:layer1.weight[0,1]")
    assert manifest(out)["parameter"] == "layer0.weight[0,1]"        # the earlier export, whole
    assert not (out / "synapse" / "presynaptic.hex").exists()
    assert sorted(p.name for p in out.iterdir()) == ["activation", "golden", "lfsr", "notes.txt", "synapse"]

@pytest.mark.parametrize("name", CHIPS)
def test_corner_vectors_cover_ties_limits_and_stochastic_positions(exports, name):
    m = manifest(exports[name])
    cov, p = m["corner_coverage"], m["parameters"]
    regs = [("integrator", "G"), ("theta", "TH")] + ([("velocity", "V")] if p["MOMENTUM"] else [])
    for reg, key in regs:
        assert cov.get(f"{reg}.over_max", 0) > 0 and cov.get(f"{reg}.under_min", 0) > 0, (reg, cov)
        if p[f"R_{key}"] == 1:    # nearest-even: ties to both even and odd
            assert cov.get(f"{reg}.tie_even", 0) > 0 and cov.get(f"{reg}.tie_odd", 0) > 0, (reg, cov)
        if p[f"R_{key}"] == 2:    # stochastic: many samples, rounded both ways
            assert cov.get(f"{reg}.rounded_up", 0) >= 20 and cov.get(f"{reg}.rounded_down", 0) >= 20, (reg, cov)
    # the run part of the stream does not reach them all: that is the point
    assert {s["case"] for s in m["segments"]} >= {"run", "integrator_tie", "integrator_max", "integrator_min",
                                                  "theta_max", "theta_min", "zero"}


def test_a_tie_no_stimulus_reaches_is_listed_as_unreachable(exports, tmp_path):
    # xor_8bit with nearest-even weights: eta = 205/4096 is odd, so eta * G (G: 16 bits) never
    # ends halfway between two weight codes 18 bits further down
    chip = XOR8.replace({"formats.weight": {"kind": "fixed", "signed": True, "int_bits": 2, "frac_bits": 5}})
    t = record(tmp_path / "t.h5", chip, "layer0.weight[0,0]", cycles=200)
    export_rtl(t, tmp_path / "o", block="synapse:layer0.weight[0,0]")
    m = json.loads((tmp_path / "o/synapse/manifest.json").read_text())
    assert [u["case"] for u in m["unreachable"]] == ["theta_tie"]
    s = np.arange(-(1 << 15), 1 << 15)
    assert not np.any((-(205 * s)) % (1 << 18) == 1 << 17)
    assert manifest(exports["xor_8bit"])["unreachable"] == []


def test_a_chip_the_rtl_does_not_model_is_refused_in_one_line(tmp_path):
    chip = XOR8.replace({"integrator.kind": "analog"})
    t = record(tmp_path / "t.h5", chip, "layer0.weight[0,0]", cycles=100)
    with pytest.raises(RtlError, match="digital integrator"):
        export_rtl(t, tmp_path / "o", block="synapse:layer0.weight[0,0]")
    with pytest.raises(RtlError, match="the reference RTL is the synapse"):
        export_rtl(t, tmp_path / "o", block="layer0")


# ------------------------------------------------------------ the RTL

@needs_simulator
@pytest.mark.parametrize("name", CHIPS)
def test_the_rtl_replays_every_chip_bit_exact(exports, name, tmp_path):
    report = replay_rtl(exports[name] / "synapse")
    assert report["mismatch"] is None and report["replayed"] == report["rows"] == manifest(exports[name])["rows"]


@needs_simulator
@pytest.mark.parametrize("name", ["xor_8bit", "momentum"])
def test_round_half_up_passes_the_run_vectors_and_fails_a_tie(exports, name):
    m = manifest(exports[name])
    mm = replay_rtl(exports[name] / "synapse", fault="round-half-up")["mismatch"]
    assert mm is not None and mm["case"].endswith("_tie") and mm["row"] >= m["corner_rows"][0]


@needs_simulator
def test_a_saturation_limit_off_by_one_fails_at_the_limit(exports):
    mm = replay_rtl(exports["xor_4bit"] / "synapse", fault="saturate-off-by-one")["mismatch"]
    assert mm is not None and mm["case"].endswith("_max")


@needs_simulator
def test_stochastic_rounding_from_the_generators_state_instead_of_its_output_fails(exports):
    mm = replay_rtl(exports["xor_4bit"] / "synapse", fault="stochastic-uses-state")["mismatch"]
    assert mm is not None and mm["register"] == "theta"


@needs_simulator
def test_a_mismatch_names_the_row_cycle_and_register(exports, tmp_path):
    src = exports["xor_8bit"] / "synapse"
    dst = tmp_path / "synapse"
    shutil.copytree(src, dst)
    m = manifest(exports["xor_8bit"])
    run = m["segments"][0]
    row = run["first_row"] + 300
    lines = (dst / "integrator.hex").read_text().split()
    lines[row] = format(int(lines[row], 16) ^ 1, f"0{len(lines[row])}x")
    (dst / "integrator.hex").write_text("\n".join(lines) + "\n")
    mm = replay_rtl(dst)["mismatch"]
    assert (mm["row"], mm["cycle"], mm["register"], mm["case"]) == (row, run["first_cycle"] + 300, "integrator",
                                                                     "run")



@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "theta.hex").write_text("\n".join((d / "theta.hex").read_text().split()[1:]) + "\n"),
     ["theta.hex: ", "rows, the manifest says"]),
    (lambda d: (d / "theta.hex").write_text("\n".join(["0", "zz"] + (d / "theta.hex").read_text().split()[2:])),
     ["theta.hex: row 1: 'zz' is not a"]),
    (lambda d: (d / "gate.hex").unlink(), ["gate.hex: cannot be read"]),
    (lambda d: (d / "manifest.json").write_text("{"), ["manifest.json: not a manifest mgd-emu export rtl wrote"]),
])
def test_a_damaged_vector_folder_is_refused_in_one_line_before_any_simulation(exports, tmp_path, capsys, damage,
                                                                             words):
    dst = tmp_path / "synapse"
    shutil.copytree(exports["xor_8bit"] / "synapse", dst)
    damage(dst)
    assert cli_main(["rtl-replay", str(dst)]) == 2                  # no simulator needed to tell
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "export the vectors again" in err and all(w in err for w in words), err


def test_a_fault_that_cannot_change_a_synapse_is_named_so_a_pass_is_not_read_as_its_test(exports):
    from mgd_emu.rtl_sim import fault_does_nothing

    x8 = exports["xor_8bit"] / "synapse"      # integrator nearest-even, weights stochastic, both saturate
    assert [fault_does_nothing(x8, f) for f in ("round-half-up", "saturate-off-by-one", "stochastic-uses-state")] \
        == [None, None, None]
    assert fault_does_nothing(exports["wrap"] / "synapse", "saturate-off-by-one") == \
        "every register of this synapse wraps around"

@needs_simulator
def test_the_command_line_exports_and_replays(exports, tmp_path, capsys):
    trace = next(iter(exports.values())).parent / "xor_4bit.h5"
    assert cli_main(["export", "rtl", str(trace), "-o", str(tmp_path / "x"), "--window", "100:400"]) == 0
    assert cli_main(["rtl-replay", str(tmp_path / "x" / "synapse"), "--waves", str(tmp_path / "w.fst")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-3].startswith("PASS: ") and out[-2:] == [str(tmp_path / "w.fst"), str(tmp_path / "w.gtkw")]
    assert (tmp_path / "w.fst").stat().st_size > 1000
    assert "tb_synapse.integrator[15:0]" in (tmp_path / "w.gtkw").read_text()
    assert cli_main(["rtl-replay", str(tmp_path / "x" / "synapse"), "--fault", "saturate-off-by-one"]) == 1
    assert capsys.readouterr().out.startswith("FAIL at row ")
    assert cli_main(["rtl-replay", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mgd-emu: error:") and "not an exported synapse folder" in err and "\n" not in err


# ------------------------------------------------------------ generators and tables

@needs_simulator
def test_the_lfsr_rtl_gives_the_emulators_perturbation_codes(exports):
    from mgd_emu.rtl_sim import replay_lfsr

    folder = exports["xor_8bit"]
    lfsr = json.loads((folder / "lfsr" / "lfsr.json").read_text())
    g = json.loads((folder / "golden" / "manifest.json").read_text())["generator_index"]
    t = open_trace(folder.parent / "xor_8bit.h5")
    codes = t.codes("layer0.weight_perturbation")[1].reshape(CYCLES, -1)[:, g]
    assert set(codes.tolist()) == {-lfsr["amplitude"], lfsr["amplitude"]}
    report = replay_lfsr(lfsr["states"][g], lfsr["amplitude"], lfsr["width"], codes[1:])
    assert report["mismatch"] is None and report["matched"] == CYCLES - 1
    report = replay_lfsr(lfsr["states"][g] ^ 1, lfsr["amplitude"], lfsr["width"], codes[1:])
    assert report["mismatch"] is not None


def layer_z(stim, chip, layer):
    """Pre-activation codes [cycles, fan_out] of a neuron layer's golden stimulus,
    in the table's z format, by exact integer arithmetic."""
    f = chip.formats
    src = f.input if layer == 0 else f.activation
    fan_in, fan_out = chip.layer_sizes[layer], chip.layer_sizes[layer + 1]
    wf = max(f.weight.frac_bits, f.perturbation.frac_bits)
    zf = max(wf + src.frac_bits, f.bias.frac_bits, f.perturbation.frac_bits)
    gate = stim["gate"][:, :1]
    w = (stim["weight"] << (wf - f.weight.frac_bits)) + gate * (stim["weight_perturbation"]
                                                               << (wf - f.perturbation.frac_bits))
    z = np.einsum("njk,nk->nj", w.reshape(-1, fan_out, fan_in), stim["input"]) << (zf - wf - src.frac_bits)
    z += stim["bias"] << (zf - f.bias.frac_bits)
    z += gate * (stim["bias_perturbation"] << (zf - f.perturbation.frac_bits))
    return z


@needs_simulator
def test_the_activation_tables_are_the_emulators_and_the_rtl_reads_them(exports, tmp_path):
    from mgd_emu import export
    from mgd_emu.rtl import read_golden
    from mgd_emu.rtl_sim import replay_activation

    chip = XOR8
    probes = ["layer0.activation", "layer1.weight", "layer1.bias", "layer1.weight_perturbation",
              "layer1.bias_perturbation", "layer1.activation"]
    emu = Emulator(chip, 5, probes=probes)
    with TraceWriter(tmp_path / "t.h5", emu, 600) as writer:
        emu.run(600, sink=writer)
    export.write_golden(open_trace(tmp_path / "t.h5"), tmp_path / "g", block="layer1")
    _, stim, resp = read_golden(tmp_path / "g")
    luts = exports["xor_8bit"] / "activation"
    table = json.loads((luts / "activation.json").read_text())["layers"][1]
    codes = np.array([int(x, 16) for x in (luts / table["file"]).read_text().split()])
    z = layer_z(stim, chip, 1)[:, 0]
    lookup = codes[np.clip(z - table["z_lo"], 0, len(codes) - 1)]
    assert np.array_equal(lookup, resp["activation"][:, 0])          # the table is the emulator's neuron
    rng = np.random.default_rng(0)
    edges = [table["z_lo"] - 9, table["z_lo"], table["z_lo"] + 1, table["z_hi"] - 1, table["z_hi"], table["z_hi"] + 9]
    extra = rng.integers(table["z_lo"], table["z_hi"] + 1, 500).tolist() + edges
    zs = z.tolist() + extra
    want = resp["activation"][:, 0].tolist() + codes[np.clip(np.array(extra) - table["z_lo"], 0,
                                                              len(codes) - 1)].tolist()
    report = replay_activation(luts, 1, zs, want)
    assert report["mismatch"] is None and report["checked"] == len(zs)


def test_without_icarus_the_replay_says_so_in_one_line(exports, monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert simulator_missing() == "Icarus Verilog is not installed (Debian/Ubuntu: apt-get install iverilog)"
    assert cli_main(["rtl-replay", str(exports["xor_8bit"] / "synapse")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Icarus Verilog is not installed" in err
