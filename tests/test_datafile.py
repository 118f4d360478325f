"""The `file` task: the user's own data from NPZ, HDF5 and CSV (mgd_emu.datafile).

Every test writes its own small file; nothing is downloaded.
"""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mgd_emu import Emulator, load_chip
from mgd_emu.spec import ChipError
from mgd_emu.tasks import make_task

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, size=(30, 2, 3)).astype(np.uint8)   # 30 "images" of 2x3 8-bit pixels
LABELS = np.arange(30) % 3                                        # 3 classes, every one present
TEST_PIXELS, TEST_LABELS = PIXELS[:6] // 2, LABELS[:6]


def chip_file(tmp_path, task: dict, layers=(6, 4, 3), extra=""):
    lines = [f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else f"{k} = {v!r}" for k, v in task.items()]
    text = f"[network]\nlayers = {list(layers)}\n\n[task]\nname = \"file\"\n" + "\n".join(lines) + "\n" + extra
    path = tmp_path / "chip.toml"
    path.write_text(text)
    return path


def npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def refused(tmp_path, task, layers=(6, 4, 3), extra="") -> str:
    """The one-line message of the chip loader's refusal."""
    with pytest.raises(ChipError) as err:
        load_chip(chip_file(tmp_path, task, layers, extra))
    message = str(err.value)
    assert "\n" not in message and "chip.toml" in message
    return message


# ---------------------------------------------------------------- formats

def test_npz_with_a_given_test_set_flattens_scales_and_one_hot_encodes(tmp_path):
    path = npz(tmp_path, x=PIXELS, y=LABELS, x_test=TEST_PIXELS, y_test=TEST_LABELS)
    task = make_task("file", path=path, scale=1 / 255)
    assert (task.n_in, task.n_out) == (6, 3)
    np.testing.assert_array_equal(task.train.inputs, PIXELS.reshape(30, 6) * (1 / 255))   # row-major flattening
    np.testing.assert_array_equal(task.test.inputs, TEST_PIXELS.reshape(6, 6) * (1 / 255))
    np.testing.assert_array_equal(task.train.targets, np.eye(3)[LABELS])
    np.testing.assert_array_equal(task.test.labels, TEST_LABELS)
    assert task.train.inputs.dtype == np.float64 and task.train.inputs.flags.c_contiguous


def test_hdf5_arrays_are_found_by_their_path_inside_the_file(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["train/images"], f["train/digits"] = PIXELS, LABELS
        f["test/images"], f["test/digits"] = TEST_PIXELS, TEST_LABELS
    task = make_task("file", path=str(path), inputs="train/images", labels="train/digits",
                     test_inputs="test/images", test_labels="test/digits", scale=1 / 255)
    np.testing.assert_array_equal(task.train.inputs, PIXELS.reshape(30, 6) * (1 / 255))
    np.testing.assert_array_equal(task.test.labels, TEST_LABELS)


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("label_column", [0, -1])
def test_csv_takes_the_label_from_its_column_and_skips_a_header(tmp_path, header, label_column):
    table = PIXELS.reshape(30, 6).astype(float)
    rows = np.column_stack([LABELS, table] if label_column == 0 else [table, LABELS])
    path = tmp_path / "data.csv"
    np.savetxt(path, rows, delimiter=",", fmt="%g", comments="",
               header="label,a,b,c,d,e,f" if header else "")
    task = make_task("file", path=str(path), label_column=label_column, split="none", scale=1 / 255)
    np.testing.assert_array_equal(task.train.inputs, table * (1 / 255))
    np.testing.assert_array_equal(task.train.labels, LABELS)


def test_a_test_set_in_a_second_file(tmp_path):
    train = npz(tmp_path, "train.npz", x=PIXELS, y=LABELS)
    test = npz(tmp_path, "test.npz", x=TEST_PIXELS, y=TEST_LABELS)
    task = make_task("file", path=train, test_path=test, scale=1 / 255)
    np.testing.assert_array_equal(task.test.inputs, TEST_PIXELS.reshape(6, 6) * (1 / 255))


def test_real_targets_give_one_output_per_column_and_labels_by_argmax(tmp_path):
    targets = np.eye(3)[LABELS] * 0.8 + 0.1
    task = make_task("file", path=npz(tmp_path, x=PIXELS / 255, y=targets), split="none")
    assert task.n_out == 3
    np.testing.assert_array_equal(task.train.targets, targets)
    np.testing.assert_array_equal(task.train.labels, LABELS)


# ---------------------------------------------------------------- splits

def test_a_seeded_split_is_disjoint_complete_and_fixed_by_its_seed(tmp_path):
    x = np.arange(30, dtype=float)[:, None] / 30   # each sample identifiable by its one input
    path = npz(tmp_path, x=x, y=LABELS)
    a = make_task("file", path=path, test_fraction=0.2, split_seed=1)
    train, test = set(a.train.inputs[:, 0]), set(a.test.inputs[:, 0])
    assert len(test) == 6 and len(train) == 24 and not train & test and train | test == set(x[:, 0])
    again = make_task("file", path=path, test_fraction=0.2, split_seed=1)
    np.testing.assert_array_equal(again.test.inputs, a.test.inputs)
    other = make_task("file", path=path, test_fraction=0.2, split_seed=2)
    assert set(other.test.inputs[:, 0]) != test


def test_auto_uses_the_given_test_set_and_seeded_ignores_it(tmp_path):
    path = npz(tmp_path, x=PIXELS, y=LABELS, x_test=TEST_PIXELS, y_test=TEST_LABELS)
    assert len(make_task("file", path=path, scale=1 / 255).test.labels) == 6
    seeded = make_task("file", path=path, scale=1 / 255, split="seeded", test_fraction=0.5)
    assert (len(seeded.train.labels), len(seeded.test.labels)) == (15, 15)


def test_split_none_tests_on_the_training_set(tmp_path):
    task = make_task("file", path=npz(tmp_path, x=PIXELS, y=LABELS), scale=1 / 255, split="none")
    np.testing.assert_array_equal(task.test.inputs, task.train.inputs)


def test_max_train_and_max_test_keep_the_first_samples(tmp_path):
    path = npz(tmp_path, x=PIXELS, y=LABELS, x_test=TEST_PIXELS, y_test=TEST_LABELS)
    task = make_task("file", path=path, scale=1 / 255, max_train=10, max_test=2)
    np.testing.assert_array_equal(task.train.labels, LABELS[:10])
    np.testing.assert_array_equal(task.test.labels, TEST_LABELS[:2])


# ---------------------------------------------------------------- reproducibility

def test_the_identity_carries_the_data_digest_which_changes_with_the_data(tmp_path):
    path = npz(tmp_path, x=PIXELS, y=LABELS)
    a = make_task("file", path=path, scale=1 / 255)
    assert "data=" in a.train.identity and a.train.identity.endswith(a.train.identity.split("sha256:")[1])
    changed = PIXELS.copy()
    changed[0, 0, 0] ^= 1
    np.savez(path, x=changed, y=LABELS)
    b = make_task("file", path=path, scale=1 / 255)
    assert b.train.identity.split("data=")[1] != a.train.identity.split("data=")[1]


def test_a_pinned_sha256_accepts_its_data_and_refuses_other_data(tmp_path):
    path = npz(tmp_path, x=PIXELS, y=LABELS)
    digest = make_task("file", path=path, scale=1 / 255).train.identity.split("data=")[1].split()[0]
    load_chip(chip_file(tmp_path, {"path": path, "scale": 1 / 255, "sha256": digest}))
    np.savez(path, x=PIXELS // 2, y=LABELS)
    message = refused(tmp_path, {"path": path, "scale": 1 / 255, "sha256": digest})
    assert "task.sha256" in message and digest in message


def test_a_file_task_trains_bit_for_bit_as_the_same_data_built_in(tmp_path):
    """NIST7x7 written to a file and read back: the same chip learns the same bits."""
    nist = make_task("nist7x7").train
    path = npz(tmp_path, x=nist.inputs, y=nist.labels)
    builtin = load_chip("hw_models/nist7x7_8bit.toml")
    from_file = load_chip("hw_models/nist7x7_8bit.toml", {"task.name": "file", "task.path": path,
                                                         "task.split": "none"})
    a, b = Emulator(builtin, seed=3).run(3000), Emulator(from_file, seed=3).run(3000)
    for name, value in a.codes.items():
        np.testing.assert_array_equal(b.codes[name], value, err_msg=name)


# ---------------------------------------------------------------- errors: one line, file and key

def test_a_missing_file(tmp_path):
    message = refused(tmp_path, {"path": str(tmp_path / "nope.npz")})
    assert "task.path" in message and "nope.npz: no such file" in message


def test_no_path(tmp_path):
    assert "task.path: is required" in refused(tmp_path, {})


def test_an_unknown_suffix_names_the_format_key(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"\0")
    assert "task.format" in refused(tmp_path, {"path": str(path)})


def test_a_missing_array_lists_what_the_file_holds(tmp_path):
    message = refused(tmp_path, {"path": npz(tmp_path, images=PIXELS, y=LABELS)})
    assert "task.inputs" in message and "'x'" in message and "images" in message


@pytest.mark.parametrize("labels, key, words", [
    (LABELS[:29], "task.labels", "30 inputs but 29 labels"),
    (LABELS.reshape(30, 1, 1), "task.labels", "shape [30, 1, 1]"),
])
def test_wrong_label_shapes(tmp_path, labels, key, words):
    message = refused(tmp_path, {"path": npz(tmp_path, x=PIXELS, y=labels), "scale": 1 / 255})
    assert key in message and words in message


def test_inputs_of_one_dimension(tmp_path):
    message = refused(tmp_path, {"path": npz(tmp_path, x=np.zeros(30), y=LABELS)})
    assert "task.inputs" in message and "[n, features]" in message


def test_test_inputs_with_other_features(tmp_path):
    path = npz(tmp_path, x=PIXELS, y=LABELS, x_test=np.zeros((6, 5)), y_test=TEST_LABELS)
    message = refused(tmp_path, {"path": path, "scale": 1 / 255})
    assert "task.test_inputs" in message and "5 features" in message


def test_a_nan_in_the_inputs_names_its_sample(tmp_path):
    x = PIXELS.reshape(30, 6) / 255
    x[4, 2] = np.nan
    message = refused(tmp_path, {"path": npz(tmp_path, x=x, y=LABELS)})
    assert "task.inputs" in message and "NaN" in message and "sample 4" in message


def test_a_label_beyond_classes(tmp_path):
    message = refused(tmp_path, {"path": npz(tmp_path, x=PIXELS, y=LABELS), "scale": 1 / 255, "classes": 2},
                      layers=(6, 4, 2))
    assert "task.labels" in message and "label 2" in message and "0..1" in message


@pytest.mark.parametrize("label, words", [(-1, "is negative"), (1.5, "is not an integer")])
def test_negative_and_fractional_labels(tmp_path, label, words):
    y = LABELS.astype(float)
    y[3] = label
    assert words in refused(tmp_path, {"path": npz(tmp_path, x=PIXELS, y=y), "scale": 1 / 255})


def test_inputs_outside_a_fixed_input_format_say_which_scale_fits(tmp_path):
    fixed = '\n[formats]\ninput = { kind = "fixed", signed = false, int_bits = 1, frac_bits = 7 }\n'
    message = refused(tmp_path, {"path": npz(tmp_path, x=PIXELS, y=LABELS)}, extra=fixed)
    assert "task.scale" in message and f"span [0, {PIXELS.max()}]" in message and "set task.scale = 0.00" in message
    load_chip(chip_file(tmp_path, {"path": str(tmp_path / "data.npz"), "scale": 1 / 255}, extra=fixed))


def test_a_network_that_does_not_fit_the_data(tmp_path):
    message = refused(tmp_path, {"path": npz(tmp_path, x=PIXELS, y=LABELS), "scale": 1 / 255}, layers=(5, 4, 3))
    assert "network.layers" in message and "6 inputs and 3 outputs" in message


def test_given_split_without_a_test_set(tmp_path):
    message = refused(tmp_path, {"path": npz(tmp_path, x=PIXELS, y=LABELS), "scale": 1 / 255, "split": "given"})
    assert "task.split" in message and '"seeded"' in message


def test_the_command_line_prints_one_line_and_exits_with_2(tmp_path):
    path = chip_file(tmp_path, {"path": str(tmp_path / "absent.npz")})
    r = subprocess.run([sys.executable, "-m", "mgd_emu.cli", "show", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "task.path" in r.stderr and "absent.npz" in r.stderr
