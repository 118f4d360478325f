"""Each block kernel driven alone, with expectations computed by hand.

The whole-chip tests check that the blocks work together; these check each
block against its own specification (docs/CYCLE.md), PyMTL-style: build the
block's record, set its registers, step it, read them back.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as hs

from mgd_emu import loads_chip
from mgd_emu.blocks import layout as L
from mgd_emu.blocks.broadcast import Broadcast, broadcast_out, broadcast_step
from mgd_emu.blocks.controller import Controller, controller_step, controller_wires
from mgd_emu.blocks.cost import cost_change, cost_function, cost_unit_step
from mgd_emu.blocks.neuron import neuron_layer
from mgd_emu.blocks.perturbation import generate_codes
from mgd_emu.blocks.pipeline import Pipeline, layer_gate, pipeline_step
from mgd_emu.blocks.sampler import sampler_step
from mgd_emu.blocks.synapse import Wires, accumulate, correlate, delay_slots, descend, general_synapses
from mgd_emu.export import chip_state

FLOAT_CHIP = """
[network]
layers = [2, 2, 1]
init = "uniform"
init_low = -0.5
init_high = 0.5
[perturbation]
amplitude = 0.1
amplitude_is = "element"
[optimizer]
learning_rate = 0.5
[task]
name = "parity"
bits = 2
"""


def float_state(extra=""):
    return chip_state(loads_chip(FLOAT_CHIP + extra), 3)


def ints(*v):
    return np.array(v, dtype=np.int64)


# ------------------------------------------------------------- controller

def test_controller_edges_come_every_tau_and_count_steps():
    ctl = Controller(*(np.zeros(1, dtype=np.int64) for _ in range(5)))
    seen = []
    for _ in range(6):
        tag, new, x_edge, p_edge, u_edge = controller_wires(ctl, 3, 2, 6, L.INTEG_DIGITAL)
        seen.append((tag, new, x_edge, p_edge, u_edge))
        controller_step(ctl, tag, x_edge, u_edge, L.BASE_DUAL)
    assert [s[1] for s in seen] == [True, False, False, True, False, False]   # k % tau_x == 0
    assert [s[2] for s in seen] == [False, False, True, False, False, True]   # (k+1) % tau_x == 0
    assert [s[3] for s in seen] == [False, True, False, True, False, True]    # (k+1) % tau_p == 0
    assert [s[4] for s in seen] == [False] * 5 + [True]
    assert (ctl.cycle[0], ctl.step[0], ctl.updates[0]) == (6, 6, 1)


def test_controller_remeasure_inserts_a_baseline_slot_after_an_input_edge():
    ctl = Controller(*(np.zeros(1, dtype=np.int64) for _ in range(5)))
    tags = []
    for _ in range(4):
        tag, _, x_edge, _, u_edge = controller_wires(ctl, 2, 1, 100, L.INTEG_DIGITAL)
        tags.append(tag)
        controller_step(ctl, tag, x_edge, u_edge, L.BASE_REMEASURE)
    assert tags == [L.TAG_MEASURE, L.TAG_MEASURE, L.TAG_BASELINE, L.TAG_MEASURE]
    assert (ctl.cycle[0], ctl.step[0], ctl.baseline_cycles[0]) == (4, 3, 1)


# ---------------------------------------------------------------- sampler

def test_sampler_loads_the_next_sample_of_the_order_at_an_input_edge():
    st = float_state()
    smp, fmts, ev = st.smp, st.fmts, st.mon.events
    first = int(smp.sample[0])
    sampler_step(smp, False, fmts, ev, 0)
    assert int(smp.sample[0]) == first  # no edge, nothing moves
    sampler_step(smp, True, fmts, ev, 0)
    assert int(smp.pos[0]) == 1 and int(smp.sample[0]) == int(smp.order[1])
    np.testing.assert_array_equal(smp.x_next, smp.X[smp.order[1]])
    np.testing.assert_array_equal(smp.y_next, smp.Y[smp.order[1]])


def test_sampler_reshuffles_at_the_end_of_an_epoch():
    st = float_state()
    smp = st.smp
    for _ in range(smp.order.shape[0]):
        sampler_step(smp, True, st.fmts, st.mon.events, 0)
    assert int(smp.epoch[0]) == 1 and int(smp.pos[0]) == 0
    assert sorted(smp.order) == list(range(smp.order.shape[0]))


# ------------------------------------------------------------- generators

@pytest.mark.parametrize("mux", ["time", "walsh", "code"])
def test_generators_write_plus_or_minus_a_or_zero(mux):
    st = chip_state(loads_chip(FLOAT_CHIP.replace("amplitude = 0.1", f'amplitude = 0.1\nmultiplexing = "{mux}"')), 3)
    out = np.zeros_like(st.gen.pert)
    ids = {"time": L.MUX_TIME, "walsh": L.MUX_WALSH, "code": L.MUX_CODE}
    generate_codes(st.gen, ids[mux], 5, st.cfg, st.lay, st.fmts, st.mon.events, out)
    if mux == "time":  # exactly generator order[5 % P] is +A
        want = np.zeros_like(out)
        want[st.gen.time_order[5 % out.size]] = 0.1
        np.testing.assert_array_equal(out, want)
    elif mux == "walsh":  # A * H[row_i, 5 mod N]
        n = st.cfg.walsh_n
        want = [0.1 * (-1) ** bin(int(r) & (5 % n)).count("1") for r in st.gen.walsh_rows]
        np.testing.assert_array_equal(out, want)
    else:
        assert set(np.abs(out)) == {0.1}


# --------------------------------------------------------------- pipeline

def test_pipeline_carries_the_tag_one_layer_a_cycle():
    pipe = Pipeline(tag=np.zeros(3, dtype=np.int64), new_sample=np.zeros(3, dtype=np.int64),
                    target=np.zeros((3, 1)))
    assert layer_gate(2, L.TAG_MEASURE, pipe, True) == 0.0   # the stage before layer 2 holds no slot yet
    assert layer_gate(2, L.TAG_MEASURE, pipe, False) == 1.0  # without pipelining every layer sees the tag
    pipeline_step(pipe, L.TAG_MEASURE, True, np.array([0.25]))
    pipeline_step(pipe, L.TAG_BASELINE, False, np.array([0.75]))
    assert list(pipe.tag) == [L.TAG_BASELINE, L.TAG_MEASURE, L.TAG_NONE]
    assert list(pipe.new_sample) == [0, 1, 0]
    assert list(pipe.target[:, 0]) == [0.75, 0.25, 0.0]
    assert layer_gate(2, L.TAG_NONE, pipe, True) == 1.0      # layer 2 sees the slot from 2 cycles ago


# ---------------------------------------------------------- broadcast line

def test_broadcast_line_delays_the_cost_change_by_its_stages():
    bc = Broadcast(ring=np.zeros(3), ring_valid=np.zeros(3, dtype=np.int64), out=np.zeros(1),
                   out_valid=np.zeros(1))
    seen = []
    for cycle, change in enumerate([0.5, -0.25, 0.125, 1.0, 2.0]):
        out, valid = broadcast_out(bc, 3, cycle, change, True)
        seen.append(out if valid else None)
        broadcast_step(bc, 3, cycle, change, True, out, valid)
    assert seen == [None, None, None, 0.5, -0.25]
    assert bc.out[0] == -0.25 and bc.out_valid[0] == 1.0
    assert broadcast_out(bc, 0, 7, 0.3, True) == (0.3, True)  # no stages: a wire


# -------------------------------------------------------------- cost unit

def test_cost_functions_by_hand():
    y, t = np.array([0.25, 0.75]), np.array([0.0, 1.0])
    assert cost_function(L.COST_MSE, y, t) == pytest.approx((0.25**2 + 0.25**2) / 2)
    lse = math.log(math.exp(0.25) + math.exp(0.75))
    assert cost_function(L.COST_XENT, y, t) == pytest.approx(-(0.75 - lse))


@pytest.mark.parametrize("baseline", ["dual_path", "remeasure", "highpass"])
def test_cost_unit_removes_the_baseline(baseline):
    st = float_state(f'[cost]\nbaseline = "{baseline}"\n')
    cu, cfg, ev = st.cu, st.cfg, st.mon.events
    ids = {"dual_path": L.BASE_DUAL, "remeasure": L.BASE_REMEASURE, "highpass": L.BASE_HIGHPASS}
    b = ids[baseline]
    cu.cost0[0], cu.hp_out[0], cu.hp_prev[0] = 0.5, 0.125, 0.625
    change, valid = cost_change(cu, b, L.TAG_MEASURE, False, 0.75, 0.25, cfg, st.fmts, ev, 0)
    want = {"dual_path": 0.75 - 0.25, "remeasure": 0.75 - 0.5,
            "highpass": cfg.highpass * (0.125 + 0.75 - 0.625)}[baseline]
    assert valid and change == pytest.approx(want)
    assert cost_change(cu, b, L.TAG_BASELINE, False, 0.75, 0.25, cfg, st.fmts, ev, 0) == (0.0, False)
    cost_unit_step(cu, b, L.TAG_MEASURE, 0.75, 0.25, change, valid)
    assert cu.cost[0] == 0.75 and cu.change[0] == change
    assert cu.cost0[0] == {"dual_path": 0.25, "remeasure": 0.5, "highpass": 0.5}[baseline]


# ----------------------------------------------------------------- neurons

def test_neuron_layer_is_the_perturbed_weighted_sum_through_the_sigmoid():
    st = float_state()
    lay, syn, gen, neu = st.lay, st.syn, st.gen, st.neu
    x = np.array([1.0, 0.5])
    gen.pert[:] = 0.01 * np.arange(1, gen.pert.size + 1)
    neuron_layer(0, lay, L.ACT_SIGMOID, L.MODE_WEIGHT, x, syn.theta, gen.pert, 1.0, neu, 0.0, st.fmts,
                 st.mon.events)
    W, b = syn.theta[:4].reshape(2, 2), syn.theta[4:6]
    pW, pb = gen.pert[:4].reshape(2, 2), gen.pert[4:6]
    z = (W + pW) @ x + b + pb
    np.testing.assert_allclose(neu.act_w[:2], 1 / (1 + np.exp(-z)), rtol=1e-15)
    neuron_layer(0, lay, L.ACT_SIGMOID, L.MODE_WEIGHT, x, syn.theta, gen.pert, 0.0, neu, 0.0, st.fmts,
                 st.mon.events)  # gate 0: no perturbation
    np.testing.assert_allclose(neu.act_w[:2], 1 / (1 + np.exp(-(W @ x + b))), rtol=1e-15)


# ---------------------------------------------------------------- synapses

def test_weight_synapses_integrate_the_correlation_and_update_at_the_edge():
    st = float_state()
    syn, lay, cfg = st.syn, st.lay, st.cfg
    pert = np.full(syn.theta.size, 0.1)
    theta0 = syn.theta.copy()
    kinds = (L.INTEG_DIGITAL, L.OPT_PLAIN)
    weight_synapses_general, _ = general_synapses(correlate, accumulate, descend)
    slots = delay_slots(lay, 0, 0, cfg.ring)
    w = Wires(1.0, 0.2, True, False, True)
    weight_synapses_general(syn, 0, lay, slots, pert, w, kinds, cfg, st.fmts, st.mon.events)
    assert lay.delay[0] == 0  # no pipelining, no latency: the correlator sees p(n)
    e = 0.2 * 0.1 * cfg.kappa  # C~ * p * kappa
    layer0 = slice(0, 6)
    np.testing.assert_allclose(syn.G[layer0], e)
    np.testing.assert_array_equal(syn.theta, theta0)  # no edge: no update
    w = Wires(1.0, 0.2, True, True, True)  # an update edge: theta -= eta * (G + e), G clears
    weight_synapses_general(syn, 0, lay, delay_slots(lay, 0, 1, cfg.ring), pert, w, kinds, cfg, st.fmts,
                            st.mon.events)
    np.testing.assert_allclose(syn.theta[layer0], theta0[layer0] - cfg.eta * (2 * e))
    assert not syn.G[layer0].any()


# ------------------------------------------------ exact multiply-accumulate

def _fixed(int_bits, frac_bits, signed=True):
    return f'{{ kind = "fixed", signed = {str(signed).lower()}, int_bits = {int_bits}, frac_bits = {frac_bits} }}'


def _mac_chip(fan_in, w, a, p, mode="weight", input_format=None):
    """A chip whose first layer has `fan_in` inputs and the given (int_bits,
    frac_bits) weight, input (and activation) and perturbation formats."""
    return loads_chip(f"""
[network]
layers = [{fan_in}, 2, 1]
[perturbation]
mode = "{mode}"
amplitude = {2.0 ** -p[1]}
amplitude_is = "element"
[task]
name = "random"
inputs = {fan_in}
outputs = 1
[formats]
weight = {_fixed(*w)}
input = {input_format or _fixed(*a, signed=False)}
activation = {_fixed(*a, signed=False)}
perturbation = {_fixed(*p)}
""")


def test_a_layer_sums_exactly_only_with_fixed_formats_and_room_below_2_to_the_53():
    from mgd_emu.chipmap import exact_mac

    assert exact_mac(_mac_chip(64, (2, 5), (1, 7), (0, 7)), 0)
    assert not exact_mac(loads_chip(FLOAT_CHIP), 0)
    # |W + p| < 2**(2 + 7 + 1) LSBs, |a| <= 2**(1 + 29), 4096 inputs < 2**13: 10 + 30 + 13 = 53
    assert exact_mac(_mac_chip(4096, (2, 5), (1, 29), (0, 7)), 0)
    # ... one more input bit: 54 > 53
    assert not exact_mac(_mac_chip(4096, (2, 5), (1, 30), (0, 7)), 0)
    # the first layer reads the input format, the next the activation format
    float_input = _mac_chip(64, (2, 5), (1, 7), (0, 7), input_format='{ kind = "float" }')
    assert [exact_mac(float_input, 0), exact_mac(float_input, 1)] == [False, True]


@settings(max_examples=60, deadline=None)
@given(hs.data())
def test_an_exact_multiply_accumulate_equals_integer_arithmetic_in_any_order(data):
    """Where chipmap.exact_mac holds, mac_exact (its adds reassociated, on
    the vector units) gives the exact sum of the integer codes, so the
    sequential float sum, which it replaces, gives the same bits."""
    from mgd_emu.blocks.neuron import mac_exact
    from mgd_emu.chipmap import exact_mac

    fan_in = data.draw(hs.integers(1, 40))
    wf, af, pf = (data.draw(hs.integers(0, 24)) for _ in range(3))   # sums up to and past 2**53
    wi = data.draw(hs.integers(0, 6))
    ai, pi = (data.draw(hs.integers(1, 6)) for _ in range(2))   # room for a code of 1
    perturbed = data.draw(hs.booleans())
    chip = _mac_chip(fan_in, (wi, wf), (ai, af), (pi, pf), "weight" if perturbed else "node")
    if not exact_mac(chip, 0):
        return
    codes = lambda lo, hi: np.array(data.draw(hs.lists(hs.integers(lo, hi), min_size=fan_in, max_size=fan_in)))
    extreme = data.draw(hs.booleans())   # every code at the end of its range: the largest sums
    w_c = np.full(fan_in, -2 ** (wi + wf)) if extreme else codes(-2 ** (wi + wf), 2 ** (wi + wf) - 1)
    p_c = np.full(fan_in, -2 ** (pi + pf)) if extreme else codes(-2 ** (pi + pf), 2 ** (pi + pf) - 1)
    a_c = np.full(fan_in, 2 ** (ai + af) - 1) if extreme else codes(0, 2 ** (ai + af) - 1)
    theta, pert = w_c * 2.0 ** -wf, p_c * 2.0 ** -pf
    a = a_c * 2.0 ** -af
    frac = max(wf, pf) if perturbed else wf
    exact = sum(int(w * 2 ** (frac - wf) + (p * 2 ** (frac - pf) if perturbed else 0)) * int(x)
                for w, p, x in zip(w_c, p_c, a_c))           # in units of 2**-(frac + af)
    got = mac_exact(theta, pert, 0, a, fan_in, perturbed)
    assert got == exact * 2.0 ** -(frac + af)
    sequential = 0.0
    for k in range(fan_in):
        sequential += ((theta[k] + pert[k]) if perturbed else theta[k]) * a[k]
    assert np.float64(got).tobytes() == np.float64(sequential).tobytes()
