"""The datasets chips learn (mgd_emu.tasks), one property per test."""
import itertools

import numpy as np
import pytest

from mgd_emu.tasks import GLYPHS, TASKS, Dataset, Task, make_task

ALL_DEFAULT_TASKS = ["parity", "nist7x7", "digits", "random"]


def _datasets(task):
    return [task.train] if task.test is task.train else [task.train, task.test]


# ------------------------------------------------------------ common form

@pytest.mark.parametrize("name", ALL_DEFAULT_TASKS)
def test_arrays_are_c_contiguous_float64_with_int64_labels(name):
    for ds in _datasets(make_task(name)):
        assert ds.inputs.dtype == np.float64 and ds.inputs.flags.c_contiguous
        assert ds.targets.dtype == np.float64 and ds.targets.flags.c_contiguous
        assert ds.labels.dtype == np.int64 and ds.labels.ndim == 1


@pytest.mark.parametrize("name", ALL_DEFAULT_TASKS)
def test_shapes_agree_with_n_in_n_out(name):
    task = make_task(name)
    for ds in _datasets(task):
        n = len(ds.labels)
        assert ds.inputs.shape == (n, task.n_in)
        assert ds.targets.shape == (n, task.n_out)


@pytest.mark.parametrize("name", ALL_DEFAULT_TASKS)
def test_inputs_lie_in_unit_interval(name):
    for ds in _datasets(make_task(name)):
        assert ds.inputs.min() >= 0.0 and ds.inputs.max() <= 1.0


@pytest.mark.parametrize("name", ALL_DEFAULT_TASKS)
def test_labels_are_the_class_of_the_target(name):
    task = make_task(name)
    for ds in _datasets(task):
        if task.n_out == 1:
            np.testing.assert_array_equal(ds.labels, (ds.targets[:, 0] > 0.5).astype(np.int64))
        else:
            np.testing.assert_array_equal(ds.targets.sum(axis=1), 1.0)   # one-hot
            np.testing.assert_array_equal(ds.labels, ds.targets.argmax(axis=1))


@pytest.mark.parametrize("name", ALL_DEFAULT_TASKS)
def test_identity_carries_a_16_hex_sha256_of_the_data(name):
    import hashlib

    for ds in _datasets(make_task(name)):
        digest = hashlib.sha256(ds.inputs.tobytes() + ds.targets.tobytes()).hexdigest()[:16]
        assert ds.identity.endswith(f"sha256:{digest}")
        assert "\n" not in ds.identity


@pytest.mark.parametrize("name", ALL_DEFAULT_TASKS)
def test_same_params_give_identical_data(name):
    a, b = make_task(name), make_task(name)
    for da, db in zip(_datasets(a), _datasets(b)):
        assert da.identity == db.identity
        np.testing.assert_array_equal(da.inputs, db.inputs)
        np.testing.assert_array_equal(da.targets, db.targets)


# ------------------------------------------------------------------ parity

@pytest.mark.parametrize("bits", [2, 3, 5, 10])
def test_parity_lists_every_pattern_in_binary_order_msb_first(bits):
    ds = make_task("parity", bits=bits).train
    expected = [[int(ch) for ch in format(i, f"0{bits}b")] for i in range(2**bits)]
    np.testing.assert_array_equal(ds.inputs, expected)


@pytest.mark.parametrize("bits", [2, 3, 4, 7, 10])
def test_parity_target_is_the_xor_of_the_bits(bits):
    ds = make_task("parity", bits=bits).train
    for row, target in zip(ds.inputs.astype(int), ds.targets[:, 0]):
        xor = 0
        for bit in row:
            xor ^= int(bit)
        assert target == xor


def test_two_bit_parity_is_the_xor_truth_table():
    task = make_task("parity")
    assert (task.n_in, task.n_out, task.name) == (2, 1, "parity2")
    np.testing.assert_array_equal(task.train.inputs, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(task.train.targets, [[0], [1], [1], [0]])
    assert task.train.identity.startswith("parity bits=2 n=4 sha256:")


def test_parity_trains_and_tests_on_the_same_patterns():
    task = make_task("parity", bits=4)
    assert task.test is task.train


# ----------------------------------------------------------------- nist7x7

def test_nist_glyphs_are_four_distinct_3x3_binary_letters():
    assert list(GLYPHS) == ["N", "I", "S", "T"]
    arrays = [np.array(g) for g in GLYPHS.values()]
    assert all(a.shape == (3, 3) and set(np.unique(a)) <= {0, 1} for a in arrays)
    for a, b in itertools.combinations(arrays, 2):
        assert not np.array_equal(a, b)


def test_nist_has_100_distinct_images_25_per_class():
    task = make_task("nist7x7")
    ds = task.train
    assert (task.n_in, task.n_out) == (49, 4)
    assert len(ds.labels) == 100
    assert len({row.tobytes() for row in ds.inputs}) == 100
    np.testing.assert_array_equal(np.bincount(ds.labels), [25, 25, 25, 25])


def test_nist_noiseless_images_are_binary_with_the_glyphs_pixel_count():
    ds = make_task("nist7x7").train
    assert set(np.unique(ds.inputs)) <= {0.0, 1.0}
    counts = [int(np.sum(g)) for g in GLYPHS.values()]
    for img, label in zip(ds.inputs, ds.labels):
        assert img.sum() == counts[label]


def test_nist_images_are_the_glyph_at_every_position():
    ds = make_task("nist7x7").train
    for label, glyph in enumerate(GLYPHS.values()):
        placed = set()
        for r in range(5):
            for c in range(5):
                img = np.zeros((7, 7))
                img[r:r + 3, c:c + 3] = glyph
                placed.add(img.ravel().tobytes())
        assert {row.tobytes() for row in ds.inputs[ds.labels == label]} == placed


def test_nist_noise_flips_about_the_given_fraction_of_pixels():
    clean = make_task("nist7x7").train.inputs
    noisy = make_task("nist7x7", noise=0.2, seed=3).train.inputs
    assert set(np.unique(noisy)) <= {0.0, 1.0}
    assert 0.15 < np.mean(clean != noisy) < 0.25          # 4900 pixels, sd ~0.006


def test_nist_noise_is_fixed_by_the_seed():
    a = make_task("nist7x7", noise=0.1, seed=1).train
    b = make_task("nist7x7", noise=0.1, seed=1).train
    c = make_task("nist7x7", noise=0.1, seed=2).train
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)


def test_nist_trains_and_tests_on_the_same_images():
    task = make_task("nist7x7")
    assert task.test is task.train


# ------------------------------------------------------------------ digits

def test_digits_split_covers_all_1797_samples_once():
    task = make_task("digits")
    assert (task.n_in, task.n_out) == (64, 10)
    both = np.concatenate([task.train.inputs, task.test.inputs])
    assert len(both) == 1797
    from sklearn.datasets import load_digits

    d = load_digits()
    key = lambda x, y: sorted(map(bytes, np.column_stack([x, y]).astype(np.float64)))
    assert key(both, np.concatenate([task.train.labels, task.test.labels])) == key(d.data / 16.0, d.target)


def test_digits_pixels_are_sklearn_values_over_16():
    ds = make_task("digits").train
    assert ds.inputs.max() == 1.0
    np.testing.assert_array_equal(ds.inputs * 16, np.round(ds.inputs * 16))


@pytest.mark.parametrize("fraction", [0.05, 0.2, 1 / 3, 0.5])
def test_digits_test_fraction_is_respected_within_one_sample(fraction):
    task = make_task("digits", test_fraction=fraction)
    assert abs(len(task.test.labels) - fraction * 1797) <= 1
    assert len(task.train.labels) + len(task.test.labels) == 1797


def test_digits_split_is_deterministic_for_a_seed():
    a, b = make_task("digits", split_seed=5), make_task("digits", split_seed=5)
    np.testing.assert_array_equal(a.test.inputs, b.test.inputs)
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert a.test.identity == b.test.identity


def test_digits_split_differs_for_another_seed():
    a, b = make_task("digits", split_seed=0), make_task("digits", split_seed=1)
    assert not np.array_equal(a.test.inputs, b.test.inputs)
    assert a.test.identity != b.test.identity and a.train.identity != b.train.identity


def test_digits_train_and_test_are_disjoint_and_named():
    task = make_task("digits")
    assert task.train is not task.test
    assert "part=train" in task.train.identity and "part=test" in task.test.identity
    train_rows = {r.tobytes() + bytes([l]) for r, l in zip(task.train.inputs, task.train.labels)}
    test_rows = [r.tobytes() + bytes([l]) for r, l in zip(task.test.inputs, task.test.labels)]
    # sklearn digits has a few exact duplicate images; almost none may straddle.
    assert sum(r in train_rows for r in test_rows) <= 5


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_digits_classes_keeps_only_the_lower_labels(classes):
    from sklearn.datasets import load_digits

    task = make_task("digits", classes=classes)
    assert task.n_out == classes
    labels = np.concatenate([task.train.labels, task.test.labels])
    assert labels.max() == classes - 1 and set(labels) == set(range(classes))
    assert len(labels) == int(np.sum(load_digits().target < classes))
    assert task.train.targets.shape[1] == classes


def test_digits_cache_hands_out_arrays_that_do_not_alias():
    a = make_task("digits")
    before = make_task("digits").train.inputs[0, 0]
    a.train.inputs[0, 0] = before + 0.5              # a caller scribbles on its copy
    b = make_task("digits")
    assert b.train.inputs[0, 0] == before
    assert not np.shares_memory(a.train.inputs, b.train.inputs)
    assert b.train.inputs.flags.writeable


# ---------------------------------------------------------------- accuracy

def _one_output_task():
    return make_task("parity")   # targets 0, 1, 1, 0


def test_accuracy_one_output_thresholds_at_one_half():
    task = _one_output_task()
    assert task.accuracy(np.array([[0.1], [0.9], [0.6], [0.4]]), task.train) == 1.0
    assert task.accuracy(np.array([[0.9], [0.1], [0.4], [0.6]]), task.train) == 0.0
    assert task.accuracy(np.array([[0.5], [0.51], [0.5], [0.5]]), task.train) == 0.75  # 0.5 is "0"


def test_accuracy_one_output_accepts_a_flat_vector():
    task = _one_output_task()
    assert task.accuracy(np.array([0.2, 0.8, 0.2, 0.2]), task.train) == 0.75


def test_accuracy_several_outputs_uses_argmax_against_labels():
    task = make_task("nist7x7")
    ds = task.train
    perfect = ds.targets * 0.3 + 0.1                  # argmax still the label
    assert task.accuracy(perfect, ds) == 1.0
    wrong = np.roll(ds.targets, 1, axis=1)
    assert task.accuracy(wrong, ds) == 0.0
    half = ds.targets.copy()
    half[::2] = wrong[::2]
    assert task.accuracy(half, ds) == 0.5


def test_accuracy_on_hand_made_dataset():
    ds = Dataset("hand", np.zeros((3, 1)), np.eye(3), np.arange(3, dtype=np.int64), "hand")
    task = Task("hand", ds, ds, 1, 3)
    outputs = np.array([[0.9, 0.0, 0.1], [0.2, 0.1, 0.7], [0.0, 1.0, 0.0]])
    assert task.accuracy(outputs, ds) == pytest.approx(1 / 3)


# ---------------------------------------------------------------- identity

def test_identity_changes_when_the_data_changes():
    ids = {
        make_task("parity", bits=2).train.identity,
        make_task("parity", bits=3).train.identity,
        make_task("nist7x7").train.identity,
        make_task("nist7x7", noise=0.1).train.identity,
        make_task("nist7x7", noise=0.1, seed=1).train.identity,
        make_task("digits").train.identity,
        make_task("digits").test.identity,
        make_task("digits", classes=5).train.identity,
        make_task("digits", test_fraction=0.3).train.identity,
    }
    assert len(ids) == 9
    digests = {i.rsplit("sha256:", 1)[1] for i in ids}
    assert len(digests) == 9 and all(len(d) == 16 for d in digests)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("name, params, named", [
    ("parity", {"bits": 1}, "bits"),
    ("parity", {"bits": 11}, "bits"),
    ("parity", {"bits": 2.0}, "bits"),
    ("parity", {"bits": True}, "bits"),
    ("parity", {"bits": "2"}, "bits"),
    ("nist7x7", {"noise": 0.6}, "noise"),
    ("nist7x7", {"noise": -0.1}, "noise"),
    ("nist7x7", {"noise": float("nan")}, "noise"),
    ("nist7x7", {"seed": -1}, "seed"),
    ("digits", {"test_fraction": 0.01}, "test_fraction"),
    ("digits", {"test_fraction": 0.9}, "test_fraction"),
    ("digits", {"split_seed": -3}, "split_seed"),
    ("digits", {"classes": 1}, "classes"),
    ("digits", {"classes": 11}, "classes"),
    ("parity", {"noise": 0.1}, "noise"),           # a param of another task
    ("digits", {"colour": 1}, "colour"),
])
def test_bad_params_raise_value_error_naming_the_param(name, params, named):
    with pytest.raises(ValueError, match=named) as err:
        make_task(name, **params)
    assert name in str(err.value)


def test_out_of_range_message_states_what_is_allowed():
    with pytest.raises(ValueError, match=r"bits.*integer in \[2, 10\].*got 11"):
        make_task("parity", bits=11)


def test_unknown_task_lists_the_tasks():
    with pytest.raises(ValueError, match="mnist") as err:
        make_task("mnist")
    assert all(t in str(err.value) for t in TASKS)


def test_numpy_integers_and_ints_for_floats_are_accepted():
    assert make_task("parity", bits=np.int64(3)).n_in == 3
    assert make_task("nist7x7", noise=0).train.identity == make_task("nist7x7").train.identity


# -------------------------------------------------------------- TASKS table

def test_tasks_table_defaults_are_allowed_and_build():
    for name, params in TASKS.items():
        for key, (typ, default, allowed, doc) in params.items():
            assert isinstance(default, typ)
            if typ is str:   # allowed: the choices, or None for any string (a path, an array name)
                assert allowed is None or default in allowed
            else:
                assert allowed[0] <= default <= allowed[1]
            assert isinstance(doc, str) and doc and "\n" not in doc
        if name != "file":   # needs a data file: tests/test_datafile.py
            make_task(name, **{k: spec[1] for k, spec in params.items()})


# ------------------------------------------------------------------ random

def test_random_task_has_the_requested_size_and_is_fixed_by_its_seed():
    t = make_task("random", inputs=784, outputs=10, samples=50, seed=3)
    assert (t.n_in, t.n_out, t.train.inputs.shape) == (784, 10, (50, 784))
    assert set(np.unique(t.train.inputs)) <= {0.0, 1.0}
    assert np.array_equal(t.train.targets, np.eye(10)[t.train.labels])
    assert np.array_equal(make_task("random", inputs=784, outputs=10, samples=50, seed=3).train.inputs, t.train.inputs)
    assert not np.array_equal(make_task("random", inputs=784, outputs=10, samples=50, seed=4).train.inputs, t.train.inputs)
    one = make_task("random", inputs=3, outputs=1, samples=20)
    assert np.array_equal(one.train.targets[:, 0], one.train.labels) and set(one.train.labels) <= {0, 1}
