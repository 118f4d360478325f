"""User-defined synapse rules: compiled into the cycle kernel, the built-in
rules expressed the same way, and one-line refusals before any cycle runs."""
import numba
import numpy as np
import pytest

from mgd_emu import Emulator, load_chip
from mgd_emu.rules import RuleError, SynapseRules

XOR8 = load_chip("hw_models/xor_8bit.toml")
XNODE = load_chip("hw_models/xor_node.toml")
IDEAL = load_chip("hw_models/xor_ideal.toml")


@numba.njit
def correlator_as_written(c, p, kappa):
    return c * p * kappa


@numba.njit
def digital_as_written(g, e, beta, lam):
    return g + e


@numba.njit
def analog_as_written(g, e, beta, lam):
    return beta * g + lam * e


@numba.njit
def updater_as_written(theta, step, eta):
    return theta - step


def same_bits(a, b):
    for name, value in a.state_arrays().items():
        np.testing.assert_array_equal(value, b.state_arrays()[name], err_msg=name)


@pytest.mark.parametrize("chip, integrator", [
    (XOR8, digital_as_written),
    (XNODE, digital_as_written),
    (XOR8.replace({"optimizer.kind": "momentum", "optimizer.learning_rate": 0.01}), digital_as_written),
    (IDEAL.replace({"integrator.kind": "analog", "timing.tau_theta": 3}), analog_as_written),
])
def test_the_built_in_rules_written_by_a_user_give_the_same_bits(chip, integrator):
    rules = SynapseRules(correlator_as_written, integrator, updater_as_written)
    built_in = Emulator(chip, 3).run(2000)
    user = Emulator(chip, 3, rules=rules).run(2000)
    assert user.variant.rules.custom and not user.variant.fast  # the general path, user functions
    same_bits(built_in, user)


@numba.njit
def sign_only(theta, step, eta):
    return theta - eta * np.sign(step)


def test_a_sign_update_moves_every_parameter_by_exactly_eta_or_not_at_all():
    chip = IDEAL.replace({"timing.tau_theta": 4, "optimizer.learning_rate": 0.125})
    emu = Emulator(chip, 1, rules=SynapseRules(updater=sign_only))
    for _ in range(5):
        before = np.concatenate([np.ravel(v) for k, v in emu.registers.items() if k.endswith(("weight", "bias"))])
        emu.run_steps(4)
        after = np.concatenate([np.ravel(v) for k, v in emu.registers.items() if k.endswith(("weight", "bias"))])
        assert set(np.round(np.abs(after - before), 12)) <= {0.0, 0.125}
        assert np.any(after != before)


@numba.njit
def truncating_integrator(g, e, beta, lam):
    return g + np.floor(e * 1024.0) / 1024.0


def test_a_user_integrator_changes_what_the_integrators_hold():
    chip = IDEAL.replace({"optimizer.learning_rate": 0.0, "timing.tau_theta": 1000})
    plain = Emulator(chip, 2).run(200)
    trunc = Emulator(chip, 2, rules=SynapseRules(integrator=truncating_integrator)).run(200)
    g = np.ravel(trunc.registers["layer0.weight_integrator"])
    np.testing.assert_array_equal(g * 1024.0, np.round(g * 1024.0))  # on the 2^-10 grid
    assert np.all(g <= np.ravel(plain.registers["layer0.weight_integrator"]) + 1e-12)  # floor: never above


@pytest.mark.parametrize("bad, message", [
    (lambda theta, step, eta: theta, "decorate it with @numba.njit"),
    (numba.njit(lambda theta, step: theta), "takes (theta, step); an updater takes exactly 3 positional floats"),
    (numba.njit(lambda theta, step, *, eta: theta), "takes (theta, step, *, eta); an updater takes exactly 3"),
    (numba.njit(lambda theta, step, eta: "up"), "returns one number"),
    (numba.njit(lambda theta, step, eta: theta.nope), "does not compile for float64 arguments"),
])
def test_a_rule_that_cannot_run_is_refused_in_one_line_before_any_cycle(bad, message):
    with pytest.raises(RuleError) as err:
        Emulator(XOR8, 0, rules=SynapseRules(updater=bad))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("rules.updater")


@pytest.mark.parametrize("rules", [sign_only, {"updater": sign_only}, "sign_only"])
def test_rules_of_another_kind_than_synapse_rules_are_refused_in_one_line(rules):
    with pytest.raises(RuleError, match=r"^rules= takes mgd_emu\.rules\.SynapseRules\(correlator=\.\.\., "):
        Emulator(XOR8, 0, rules=rules)


def test_a_checkpoint_names_the_user_rules_of_its_run_and_is_refused_with_others(tmp_path):
    from mgd_emu.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    rules = SynapseRules(updater=sign_only)
    emu = Emulator(XOR8, 1, rules=rules).run(500)
    cp = emu.checkpoint()
    assert cp["rules"] == {"updater": f"{__name__}.sign_only"}
    same_bits(Emulator.restore(cp, rules=rules).run(300), emu.run(300))
    with pytest.raises(CheckpointError, match=r"taken of a run with updater=.*sign_only; restore it with the same "
                                              r"rules .* not the built-in rules"):
        Emulator.restore(cp)
    with pytest.raises(CheckpointError, match="taken of a run with the built-in rules"):
        Emulator.restore(Emulator(XOR8, 1).checkpoint(), rules=rules)
    save_checkpoint(emu, tmp_path / "ck.npz")               # the names travel in the file too
    with pytest.raises(CheckpointError, match=r"ck\.npz: it was taken of a run with updater="):
        load_checkpoint(tmp_path / "ck.npz")
    assert load_checkpoint(tmp_path / "ck.npz", rules=rules).cycle == emu.cycle
