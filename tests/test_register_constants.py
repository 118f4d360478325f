"""What the loader accepts, the engine can hold: every constant the engine
rounds into a register (engine._build: K_AMPLITUDE, K_KAPPA, K_ETA, K_GAMMA,
K_BETA, K_LAMBDA, K_HIGHPASS) is nonzero and unsaturated on every chip the
chip description accepts; a chip whose constant would be lost is refused."""
import math
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgd_emu import ChipError, loads_chip
from mgd_emu.engine import Emulator


def ufmt(int_bits, frac_bits):
    return f'{{ kind = "fixed", signed = false, int_bits = {int_bits}, frac_bits = {frac_bits} }}'


CHIPS = st.fixed_dictionaries({
    "integrator": st.sampled_from(["digital", "analog"]),
    "baseline": st.sampled_from(["dual_path", "highpass"]),
    "optimizer": st.sampled_from(["plain", "momentum"]),
    "divide": st.booleans(),
    "tau_theta": st.sampled_from([1, 2, 10, 100, 1000, 5000, 10000]),
    "tau_hp": st.sampled_from([1e-4, 0.01, 1.6, 50.0, 1e4, 1e6]),
    "learning_rate": st.sampled_from([0.0, 0.003, 0.05, 0.5, 3.0]),
    "momentum": st.sampled_from([0.0, 1e-4, 0.5, 0.99]),
    "lr_bits": st.tuples(st.integers(0, 2), st.integers(4, 18)),
    "amplitude": st.sampled_from([0.01, 0.0117, 0.05, 0.3]),
    "amplitude_is": st.sampled_from(["element", "norm"]),
    "normalization": st.sampled_from(["power", "norm"]),
    "pert_frac": st.integers(6, 12),
    # the correlator gain's integer bits: around what 1/N needs (offset -1..1)
    "gain_bits": st.tuples(st.integers(-1, 1), st.integers(0, 3)),
})

P = 9  # generators of the default 2-2-1 weight-perturbation chip


def gain_format(p):
    """A correlator-gain format whose range is near the unquantised 1/N."""
    a = p["amplitude"] if p["amplitude_is"] == "element" else p["amplitude"] / math.sqrt(P)
    kappa = 1 / (a * a) if p["normalization"] == "power" else 1 / (P * a * a)
    offset, frac = p["gain_bits"]
    return ufmt(max(1, math.ceil(math.log2(kappa)) + offset), frac)

def chip_text(p):
    return f"""
[perturbation]
amplitude = {p["amplitude"]}
amplitude_is = "{p["amplitude_is"]}"
normalization = "{p["normalization"]}"
[timing]
tau_theta = {p["tau_theta"]}
[cost]
baseline = "{p["baseline"]}"
tau_hp = {p["tau_hp"]}
[integrator]
kind = "{p["integrator"]}"
[optimizer]
kind = "{p["optimizer"]}"
learning_rate = {p["learning_rate"]}
momentum = {p["momentum"]}
divide_by_tau_theta = {str(p["divide"]).lower()}
[formats]
perturbation = {{ kind = "fixed", int_bits = 0, frac_bits = {p["pert_frac"]} }}
learning_rate = {ufmt(*p["lr_bits"])}
correlator_gain = {gain_format(p)}
"""


def used_constants(chip, K):
    """(name, value the engine holds, value it should hold) of each constant the chip uses."""
    opt, tau = chip.optimizer, chip.timing.tau_theta
    out = [("amplitude", K.amplitude, None), ("kappa", K.kappa, None)]
    if opt.learning_rate:
        out.append(("eta'", K.eta, opt.learning_rate / tau if opt.divide_by_tau_theta else opt.learning_rate))
    if opt.kind == "momentum" and opt.momentum:
        out.append(("gamma", K.gamma, opt.momentum))
    if chip.integrator.kind == "analog":
        out += [("beta", K.beta, tau / (tau + 1)), ("lambda", K.lam, 1 / (tau + 1))]
    if chip.cost.baseline == "highpass":
        out.append(("highpass", K.highpass, chip.cost.tau_hp / (chip.cost.tau_hp + 1)))
    return out


CONSTANT_KEYS = ("optimizer.learning_rate", "optimizer.momentum", "timing.tau_theta", "cost.tau_hp",
                 "formats.correlator_gain")


def lost_constants(chip):
    """The constants the engine would hold as 0, saturated, or (a filter) at 1 or more."""
    K = Emulator(chip, 0).st.cfg
    lr, gain = chip.formats.learning_rate, chip.formats.correlator_gain
    lost = [name for name, held, exact in used_constants(chip, K)
            if held == 0.0 or (exact is not None and abs(held - exact) > lr.lsb / 2)
            or (name == "highpass" and held >= 1.0)]
    # kappa = 1/N from the amplitude as held, within half an LSB of its format
    A = K.amplitude
    assert chip.n_generators == P
    N = A * A if chip.perturbation.normalization == "power" else P * A * A
    if abs(K.kappa - 1.0 / N) > gain.lsb / 2 + 1e-9 / N:
        lost.append("kappa")
    return lost


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CHIPS)
def test_a_chip_is_refused_for_its_constants_exactly_when_the_engine_would_lose_one(p):
    try:
        chip = loads_chip(chip_text(p), "constants.toml")
    except ChipError as err:
        if err.key not in CONSTANT_KEYS:
            return  # refused for another reason (e.g. an amplitude its format cannot hold)
        with mock.patch("mgd_emu.spec._check_consistency"):  # build it anyway
            unchecked = loads_chip(chip_text(p), "constants.toml")
        assert lost_constants(unchecked), f"refused, but the engine holds every constant: {err}"
        return
    assert not lost_constants(chip)


def test_the_accepted_space_is_not_trivial():
    """The generator above reaches accepted chips with every constant in use."""
    p = dict(integrator="analog", baseline="highpass", optimizer="momentum", divide=True, tau_theta=100,
             tau_hp=1.6, learning_rate=0.5, momentum=0.5, lr_bits=(0, 14), amplitude=0.05,
             amplitude_is="element", normalization="power", pert_frac=7, gain_bits=(3, 0))
    chip = loads_chip(chip_text(p))
    names = [name for name, _, _ in used_constants(chip, Emulator(chip, 0).st.cfg)]
    assert names == ["amplitude", "kappa", "eta'", "gamma", "beta", "lambda", "highpass"]
    # s0.7 holds 0.05 as 6/128; the engine's 1/N = (128/6)^2 = 455.1, held as 455 in u12.0
    assert Emulator(chip, 0).st.cfg.kappa == 455.0


def test_time_multiplexing_in_an_unsigned_perturbation_format_holds_plus_a_and_zero():
    chip = loads_chip('[perturbation]\nmultiplexing = "time"\namplitude = 0.1\namplitude_is = "element"\n'
                      f'[formats]\nperturbation = {ufmt(0, 8)}')
    A = round(0.1 * 256) / 256
    emu = Emulator(chip, 0, probes=["layer0.weight_perturbation", "layer1.bias_perturbation"])
    emu.run(3 * chip.n_generators)
    seen = np.concatenate([emu.samples(name)[1].ravel()
                           for name in ("layer0.weight_perturbation", "layer1.bias_perturbation")])
    assert set(seen) == {0.0, A}
    assert emu.events["layer0.perturbation"] == (0, 0)
