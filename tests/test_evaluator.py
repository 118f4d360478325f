"""The fast evaluator (mgd_emu/evaluate.py) against the per-sample oracle
(cycle.forward_dataset, the chip's own neuron kernels): the same outputs bit
for bit and the same effect on the state copy it is given (input register,
activations, rounding generators, event counters), for float and fixed
chips, both perturbation modes, every activation function, stochastic
rounding of inputs and activations, wrapping formats, and test-set sizes on
either side of the evaluator's block sizes."""
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np
import pytest

import mgd_emu
from mgd_emu.blocks.register import Monitor
from mgd_emu.cycle import forward_dataset
from mgd_emu.engine import Emulator
from mgd_emu.evaluate import (BLOCKS, F32_EXACT, GEMM_MIN_WEIGHTS, LANES, _blas_layer, _exact_slice,
                              _gemm_codes, _integer_layers, _sliced_weights, blas_threads_of_numba,
                              forward_blocked, may_use_blas)

HW = Path(__file__).resolve().parent.parent / "hw_models"
FORMAT_CLASSES = ("input", "weight", "bias", "perturbation", "activation", "cost", "cost_change",
                  "integrator", "learning_rate", "correlator_gain", "velocity")
FLOAT = {f"formats.{c}": {"kind": "float"} for c in FORMAT_CLASSES}
STOCHASTIC = {
    "formats.input": {"kind": "fixed", "signed": True, "int_bits": 0, "frac_bits": 3, "rounding": "stochastic"},
    "formats.activation": {"kind": "fixed", "signed": False, "int_bits": 0, "frac_bits": 8,
                           "rounding": "stochastic"},
}
# tanh into an unsigned 4-bit activation that wraps: negative activations wrap, positive ones round
WRAPPING = {"network.activation": "tanh", "network.output_activation": "hard_sigmoid",
            "formats.activation": {"kind": "fixed", "signed": False, "int_bits": 0, "frac_bits": 4,
                                   "overflow": "wrap"}}
NOISY = {"noise.gain_sigma": 0.2, "noise.offset_sigma": 0.2, "noise.activation_sigma": 0.05}
WIDER = {"network.layers": [64, 37, 10]}   # fan-in and fan-out not multiples of 4
# float inputs into fixed weights: the first layer sums floats, the second integer codes
FLOAT_INPUT = {"formats.input": {"kind": "float"}}
# 16-bit codes whose sums could pass 2^31: the evaluator must sum floats (in the oracle's order)
WIDE_CODES = {f"formats.{c}": {"kind": "fixed", "signed": True, "int_bits": 0, "frac_bits": 15}
              for c in ("input", "weight", "bias")}

# a 600-input layer of 8-bit codes: wide enough for BLAS, in two float32 slices
GEMM = {"network.layers": [600, 32, 10], "task.name": "random", "task.inputs": 600, "task.outputs": 10,
        "perturbation.amplitude": 2.0 ** -7, "perturbation.amplitude_is": "element"}

CHIPS = {
    "xor_8bit": ("xor_8bit", {}),                               # weight mode, fixed
    "xor_ideal": ("xor_ideal", {}),                             # weight mode, float
    "xor_node": ("xor_node", {}),
    "xor_pipelined": ("xor_pipelined", {}),
    "xor_4bit": ("xor_4bit", {}),
    "digits_8bit": ("digits_8bit", {}),                         # node mode, fixed
    "digits_wider_float": ("digits_8bit", {**WIDER, **FLOAT}),  # node mode, float
    "digits_stochastic": ("digits_8bit", {**WIDER, **STOCHASTIC}),
    "digits_float_input": ("digits_8bit", {**WIDER, **FLOAT_INPUT}),
    "digits_16bit_codes": ("digits_8bit", WIDE_CODES),
    "nist7x7_wrapping": ("nist7x7_8bit", WRAPPING),
    "nist7x7_relu_linear_float": ("nist7x7_8bit", {**FLOAT, "network.activation": "relu",
                                                   "network.output_activation": "linear"}),
    "nist7x7_noisy_xent": ("nist7x7_8bit", {**NOISY, "cost.function": "cross_entropy"}),
    "nist7x7_no_bias": ("nist7x7_8bit", {"network.bias": False}),
    "digits_gemm": ("digits_8bit", GEMM),                     # layer 0 by BLAS
}


def load(name):
    base, overrides = CHIPS[name]
    return mgd_emu.load_chip(HW / f"{base}.toml", overrides)


def scratch(st):
    """The state copy Emulator.outputs hands the forward pass."""
    return st._replace(smp=st.smp._replace(x=np.zeros_like(st.smp.x), sr=st.smp.sr.copy()),
                       neu=st.neu._replace(act_w=np.zeros_like(st.neu.act_w), sr=st.neu.sr.copy()),
                       mon=Monitor(st.mon.events.copy()))


def assert_same_as_oracle(emu, X):
    X = np.ascontiguousarray(X, dtype=np.float64)
    old, new = scratch(emu.st), scratch(emu.st)
    out_old = np.full((X.shape[0], emu.st.cfg.n_out), -1.0)
    out_new = out_old.copy()
    forward_dataset(X, old, out_old)
    forward_blocked(X, new, out_new)
    assert out_new.tobytes() == out_old.tobytes(), "outputs differ"
    for block, field in (("smp", "x"), ("smp", "sr"), ("neu", "act_w"), ("neu", "sr"), ("mon", "events")):
        a, b = getattr(getattr(old, block), field), getattr(getattr(new, block), field)
        assert a.tobytes() == b.tobytes(), f"{block}.{field} differs"
    return old


def sizes_around_blocks(n_data):
    """Test-set sizes: the task's own, 1, and either side of a block and a chunk."""
    return sorted({n_data, 1, 2, LANES - 1, LANES, LANES + 1, BLOCKS * LANES - 1, BLOCKS * LANES + 3})


@pytest.mark.parametrize("name", sorted(CHIPS))
def test_outputs_and_state_effects_equal_the_per_sample_oracle(name):
    emu = Emulator(load(name), seed=5).run(2_000)   # weights moved away from their initial values
    X = emu.task.test.inputs
    for n in sizes_around_blocks(X.shape[0]):
        rows = np.resize(np.arange(X.shape[0]), n)
        old = assert_same_as_oracle(emu, X[rows])
        if name == "digits_stochastic":
            assert (old.neu.sr != emu.st.neu.sr).all() and (old.smp.sr != emu.st.smp.sr).all()
    if name == "nist7x7_wrapping":
        assert old.mon.events[:, 2].sum() > 0, "the wrapping chip should wrap"


@pytest.mark.parametrize("name, want", [("digits_8bit", [True, True]), ("digits_wider_float", [False, False]),
                                        ("digits_float_input", [False, True]),
                                        ("digits_16bit_codes", [False, True])])
def test_which_layers_sum_integer_codes(name, want):
    emu = Emulator(load(name), seed=0)
    ok, _, _ = _integer_layers(emu.st.syn.theta, emu.st.lay, emu.st.fmts, np.zeros_like(emu.st.syn.theta, np.int16))
    assert list(ok) == want


def test_a_weight_off_its_grid_takes_the_float_sum():
    emu = Emulator(load("digits_8bit"), seed=0)
    st = emu.st._replace(syn=emu.st.syn._replace(theta=emu.st.syn.theta.copy()))
    # Not a weight code: layer 0 must sum floats. (2**-20 keeps every sum exact, so the cycle
    # kernel's order for an exact layer and the evaluator's float order agree; a register off its
    # grid is outside the model, see Emulator.state_array.)
    st.syn.theta[5] += 2.0 ** -20
    ok, _, _ = _integer_layers(st.syn.theta, st.lay, st.fmts, np.zeros_like(st.syn.theta, np.int16))
    assert list(ok) == [False, True]
    emu.st = st
    assert_same_as_oracle(emu, emu.task.test.inputs)


def test_inputs_that_saturate_and_are_not_finite():
    emu = Emulator(load("digits_stochastic"), seed=1)
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 3.0, (LANES + 7, 64))
    X[3, 5], X[10, 0], X[11, 63] = np.nan, np.inf, -np.inf
    old = assert_same_as_oracle(emu, X)
    assert old.mon.events.sum() > 0


def test_empty_dataset_changes_nothing():
    emu = Emulator(load("digits_8bit"), seed=0)
    st = scratch(emu.st)
    before = {f: getattr(st.neu, f).copy() for f in ("act_w", "sr")}
    forward_blocked(np.zeros((0, 64)), st, np.zeros((0, 10)))
    assert all(getattr(st.neu, f).tobytes() == v.tobytes() for f, v in before.items())


@pytest.mark.parametrize("name", ["xor_8bit", "digits_stochastic", "nist7x7_noisy_xent"])
def test_emulator_outputs_and_evaluate_leave_the_chip_untouched(name):
    emu = Emulator(load(name), seed=2).run(500)
    before = emu.checkpoint()["state"]
    out = emu.outputs()
    X = np.ascontiguousarray(emu.task.test.inputs, dtype=np.float64)
    want = np.zeros_like(out)
    forward_dataset(X, scratch(emu.st), want)
    assert out.tobytes() == want.tobytes()
    emu.evaluate()
    after = emu.checkpoint()["state"]
    assert all(after[k].tobytes() == v.tobytes() for k, v in before.items())


# ------------------------------------------------- integer sums by BLAS

def gemm(a_codes, Wc, ks):
    Ws = _sliced_weights(Wc, ks)
    zf = np.empty((a_codes.shape[0], Wc.shape[0]))
    _gemm_codes(a_codes, Ws, np.empty((Ws.shape[0], a_codes.shape[0], ks), np.float32), zf)
    return zf


def test_blas_sums_of_codes_equal_exact_integer_arithmetic():
    rng = np.random.default_rng(3)
    for fan_in, fan_out, n, w_max, a_max in ((600, 32, 300, 127, 255), (1100, 7, 9, 2047, 4095), (5, 3, 2, 127, 255)):
        Wc = rng.integers(-w_max, w_max + 1, (fan_out, fan_in)).astype(np.int16)
        a = rng.integers(-a_max, a_max + 1, (n, fan_in)).astype(np.int16)
        Wc[0], a[0] = -w_max, a_max   # the largest sums, odd codes: not every integer there is a float32
        ks = _exact_slice(float(w_max * a_max), fan_in)
        got = gemm(a, Wc, ks)
        want = a.astype(np.int64) @ Wc.T.astype(np.int64)
        assert np.array_equal(got, want.astype(np.float64)), (fan_in, ks)


def test_a_float32_slice_is_as_long_as_it_can_be_and_no_longer():
    # 127 * 255 = 32,385: 518 such products stay below 2^24, 519 do not
    assert _exact_slice(32385.0, 10_000) == 518 and 518 * 32385 < F32_EXACT < 519 * 32385
    assert _exact_slice(32385.0, 300) == 300 and _exact_slice(0.0, 40) == 40
    assert _exact_slice(float(F32_EXACT), 40) == 0   # one product may not be a float32: no BLAS
    Wc = np.full((1, 519), -127, np.int16)
    a = np.full((1, 519), 255, np.int16)             # an odd sum above 2^24: not a float32
    want = float((a.astype(np.int64) @ Wc.T.astype(np.int64))[0, 0])
    assert gemm(a, Wc, 518)[0, 0] == want
    assert gemm(a, Wc, 519)[0, 0] != want           # one input more per slice would be wrong


def test_a_wide_integer_layer_over_a_chunk_of_samples_goes_to_blas_with_the_oracles_bits():
    emu = Emulator(load("digits_gemm"), seed=2).run(300)
    assert emu.st.lay.fan_in[0] * emu.st.lay.fan_out[0] >= GEMM_MIN_WEIGHTS
    emu.st.syn.theta[:600] = -4.0   # neuron 0's weights at the code -128: the slices get short
    assert may_use_blas(emu.st.lay, BLOCKS * LANES) and not may_use_blas(emu.st.lay, BLOCKS * LANES - 1)
    ok, _, product = _integer_layers(emu.st.syn.theta, emu.st.lay, emu.st.fmts,
                                     np.zeros_like(emu.st.syn.theta, np.int16))
    assert ok[0] and _exact_slice(product[0], 600) < 600     # two float32 slices
    X = np.resize(emu.task.test.inputs, (2 * BLOCKS * LANES + 5, 600))
    assert_same_as_oracle(emu, X)
    assert emu.outputs(emu.task.test).shape == (emu.task.test.inputs.shape[0], 10)


def test_short_slices_stay_off_blas():
    # 16-bit codes at 1023 x 1023 leave 16 inputs a slice: many small products, slower than the loop
    assert _exact_slice(1023.0 * 1023.0, 784) == 16
    assert not _blas_layer(784, 256, BLOCKS * LANES, 16)
    assert _blas_layer(784, 256, BLOCKS * LANES, 518) and _blas_layer(40, 500, BLOCKS * LANES, 40)


def test_blas_runs_on_numbas_threads_while_a_forward_pass_may_use_it(monkeypatch):
    from threadpoolctl import threadpool_info

    emu = Emulator(load("digits_gemm"), seed=0)
    before = numba.get_num_threads()
    limits = []

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    def spy(lay, n):
        @contextmanager
        def ctx():
            with blas_threads_of_numba(lay, n):
                limits.append((n, blas_threads()))
                yield
        return ctx()

    monkeypatch.setattr(mgd_emu.engine, "blas_threads_of_numba", spy)
    try:
        numba.set_num_threads(1)
        emu.outputs(emu.task.test)   # the random task's 256 samples: one chunk, BLAS
    finally:
        numba.set_num_threads(before)
    assert limits == [(256, {1})]
