"""State digests of a chip after a run: the bits the engine must keep.

`VARIANTS` is every shipped chip and a chip per structural choice of the
engine (multiplexing, baseline, integrator, optimizer, timing, pipelining,
mode, noise, the parallel path). `digest(emu)` hashes every register by its
public name, the event counters, the controller's counters and every
generator's state, so a change to how the engine carries its state cannot
hide a changed bit. tests/golden/state_hashes.json holds the digests the
engine of commit 5f6dead computed (`python tests/state_digest.py --record`,
run at that commit with its own packed-array names; `internal_state` lays
today's records out the same way).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden") / "state_hashes.json"
CYCLES = 20_001
MORE = 2_999

X8 = "hw_models/xor_8bit.toml"
X4 = "hw_models/xor_4bit.toml"
XN = "hw_models/xor_node.toml"
XI = "hw_models/xor_ideal.toml"
D8 = "hw_models/digits_8bit.toml"

WIDE = {"network.layers": [64, 160, 10], "perturbation.amplitude_is": "element",
        "perturbation.amplitude": 0.015625}

# name: (chip file, overrides, Emulator(parallel=...))
VARIANTS = {
    "xor_8bit": (X8, {}, None),
    "xor_4bit": (X4, {}, None),
    "xor_ideal": (XI, {}, None),
    "xor_node": (XN, {}, None),
    "xor_pipelined": ("hw_models/xor_pipelined.toml", {}, None),
    "nist7x7_8bit": ("hw_models/nist7x7_8bit.toml", {}, None),
    "digits_8bit": (D8, {}, None),
    "time": (X8, {"perturbation.multiplexing": "time"}, None),
    "frequency": (X8, {"perturbation.multiplexing": "frequency"}, None),
    "walsh": (X8, {"perturbation.multiplexing": "walsh"}, None),
    "node_time": (XN, {"perturbation.multiplexing": "time"}, None),
    "node_frequency": (XN, {"perturbation.multiplexing": "frequency"}, None),
    "node_walsh": (XN, {"perturbation.multiplexing": "walsh"}, None),
    "remeasure": (X8, {"cost.baseline": "remeasure"}, None),
    "remeasure_tau": (X8, {"cost.baseline": "remeasure", "timing.tau_x": 3, "timing.tau_theta": 2,
                           "timing.tau_p": 2}, None),
    "highpass_analog": (XI, {"cost.baseline": "highpass", "integrator.kind": "analog",
                             "timing.tau_theta": 4}, None),
    "analog_8bit": (X8, {"integrator.kind": "analog", "timing.tau_theta": 3}, None),
    "momentum": (X8, {"optimizer.kind": "momentum", "optimizer.learning_rate": 0.01}, None),
    "momentum_node": (XN, {"optimizer.kind": "momentum", "optimizer.learning_rate": 0.01}, None),
    "taus": (X8, {"timing.tau_x": 4, "timing.tau_p": 2, "timing.tau_theta": 8}, None),
    "node_taus": (XN, {"timing.tau_x": 3, "timing.tau_p": 3, "timing.tau_theta": 6}, None),
    "pipelined_node": ("hw_models/xor_pipelined.toml", {"perturbation.mode": "node"}, None),
    "latency": (X8, {"timing.cost_latency": 2, "timing.broadcast_latency": 1}, None),
    "node_latency": (XN, {"timing.cost_latency": 1, "timing.broadcast_latency": 2}, None),
    "noise": (X8, {"noise.cost_sigma": 0.01, "noise.weight_sigma": 0.001,
                   "noise.activation_sigma": 0.01, "noise.gain_sigma": 0.1,
                   "noise.offset_sigma": 0.1}, None),
    "node_noise": (XN, {"noise.weight_sigma": 0.001, "noise.activation_sigma": 0.01}, None),
    "node_unperturbed": (XN, {"perturbation.presynaptic": "unperturbed"}, None),
    "wrap": (X8, {"formats.weight.overflow": "wrap", "formats.integrator.overflow": "wrap"}, None),
    "node_wrap": (XN, {"formats.weight.overflow": "wrap"}, None),
    "cross_entropy": ("hw_models/nist7x7_8bit.toml", {"cost.function": "cross_entropy"}, None),
    "digits_weight": (D8, {"perturbation.mode": "weight", "perturbation.amplitude_is": "element",
                           "perturbation.amplitude": 0.0234375}, None),
    "digits_wide_parallel": (D8, WIDE, True),
    "digits_wide_serial": (D8, WIDE, False),
}


def build(name):
    from mgd_emu import Emulator, load_chip

    path, overrides, parallel = VARIANTS[name]
    chip = load_chip(ROOT / path, overrides)
    return Emulator(chip, seed=7, parallel=parallel)


def _h(a) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def digest(emu) -> dict[str, str]:
    """Hash of every register by name, the event counts, the counters and
    every generator's state (named as internal_state names them)."""
    out = {f"reg:{k}": _h(np.asarray(v, dtype=np.float64)) for k, v in emu.registers.items()}
    out["events"] = hashlib.sha256(repr(sorted(emu.events.items())).encode()).hexdigest()[:16]
    out["counters"] = _h(np.array([emu.cycle, emu.step, emu.updates, emu.baseline_cycles]))
    for k, v in internal_state(emu).items():
        out[f"state:{k}"] = _h(v)
    return out


def internal_state(emu) -> dict[str, np.ndarray]:
    """Registers and generator states that are not probe-visible, by the
    names the digests were recorded under (5f6dead's packed arrays)."""
    return _v2_in_5f6dead_layout(emu.state_arrays())


def _v2_in_5f6dead_layout(a) -> dict[str, np.ndarray]:
    """Engine v2's records, laid out as 5f6dead's packed arrays were."""
    ctr = np.array([a["ctl.cycle"][0], a["ctl.step"][0], a["gen.code"][0], a["ctl.need_baseline"][0],
                    a["smp.pos"][0], a["smp.epoch"][0], a["ctl.baseline_cycles"][0], a["smp.sample"][0],
                    a["ctl.updates"][0]], dtype=np.int64)
    cu = np.array([a["cu.cost"][0], a["cu.cost0"][0], a["cu.change"][0], a["cu.hp_out"][0],
                   a["cu.hp_prev"][0], a["bc.out"][0], a["bc.out_valid"][0]])
    return {
        "sampler.rng": a["smp.rng"], "sampler.order": a["smp.order"],
        "generator.lfsr": a["gen.lfsr"], "generator.pert_next": a["gen.pert_next"],
        "synapse.p_ring": a["syn.p_ring"], "synapse.in_ring": a["syn.in_ring"],
        "broadcast.ring": a["bc.ring"], "broadcast.valid": a["bc.ring_valid"],
        "cost.registers": cu, "neuron.act0": a["neu.act0"],
        "pipeline.tag": a["pipe.tag"], "pipeline.new_sample": a["pipe.new_sample"],
        "pipeline.target": a["pipe.target"],
        "rounding.input": a["smp.sr"], "rounding.perturbation": a["gen.sr"],
        "rounding.activation": a["neu.sr"], "rounding.activation0": a["neu.sr0"],
        "rounding.cost": a["cu.sr"], "rounding.weight": a["syn.sr_theta"],
        "rounding.integrator": a["syn.sr_g"], "rounding.velocity": a["syn.sr_v"],
        "noise.activation": a["neu.noise"], "noise.activation0": a["neu.noise0"],
        "noise.cost": a["cu.noise"], "noise.weight": a["syn.noise"],
        "controller.counters": ctr,
    }


def run_digests(name) -> dict:
    emu = build(name)
    emu.run(CYCLES)
    first = digest(emu)
    emu.run(MORE)
    second = {k: v for k, v in digest(emu).items() if k.startswith("reg:")}
    return {"after": first, "continued": second, "test": _h(emu.outputs())}


if __name__ == "__main__":
    if "--record" not in sys.argv:
        sys.exit("usage: python tests/state_digest.py --record [NAME ...]")
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or list(VARIANTS)
    data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    for n in names:
        data[n] = run_digests(n)
        GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(n, "recorded", flush=True)
