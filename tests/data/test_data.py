"""data: .npz loading, every DataError case, representative_dataset, synthetic data. Numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from edgesparse.data import (
    Dataset,
    Splits,
    absent_classes,
    check_compatible,
    generate_for_model,
    load_data,
    load_npz,
    representative_dataset,
    save_npz,
)
from edgesparse.errors import DataError

SHAPE = (8, 8, 1)


def _arrays(n_train=20, n_val=10, shape=SHAPE, classes=4, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.random((n_train, *shape), dtype=np.float32),
        "y_train": (np.arange(n_train) % classes).astype(np.int64),
        "x_val": rng.random((n_val, *shape), dtype=np.float32),
        "y_val": (np.arange(n_val) % classes).astype(np.int64),
    }


def _write(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _dataset(**overrides) -> Dataset:
    arrays = _arrays()
    arrays.update(overrides)
    return Dataset(num_classes=4, source="test.npz", **arrays)


# ------------------------------------------------------------------ load_npz


def test_load_npz_round_trip_with_class_names(tmp_path):
    arrays = _arrays()
    path = _write(tmp_path, **arrays, labels=np.array(["yes", "no", "up", "down"]))
    ds = load_npz(path)
    assert ds.num_classes == 4 and ds.labels == ["yes", "no", "up", "down"]
    assert ds.sample_shape == SHAPE and ds.n_train == 20 and ds.n_val == 10 and ds.source == str(path)
    np.testing.assert_array_equal(ds.x_train, arrays["x_train"])
    check_compatible(ds, SHAPE, 4, source=ds.source)


def test_byte_string_class_names_are_decoded(tmp_path):
    ds = load_npz(_write(tmp_path, **_arrays(), labels=np.array([b"a", b"b", b"c", b"d"])))
    assert ds.labels == ["a", "b", "c", "d"]


def test_class_names_may_be_called_class_names(tmp_path):
    ds = load_npz(_write(tmp_path, **_arrays(), class_names=np.array(["w", "x", "y", "z"])))
    assert ds.labels == ["w", "x", "y", "z"]
    with pytest.raises(DataError, match="fewer class names") as info:
        load_npz(_write(tmp_path, "short.npz", **_arrays(), class_names=np.array(["w"])))
    assert "class_names" in str(info.value)


def test_save_npz_round_trips_splits_with_their_test_split(tmp_path):
    ds = _dataset()
    ds.labels = ["a", "b", "c", "d"]
    splits = Splits(ds, ds.x_val[:3], ds.y_val[:3])
    save_npz(tmp_path / "s.npz", splits)
    again = load_npz(tmp_path / "s.npz")
    assert again.labels == ["a", "b", "c", "d"] and again.n_train == 20
    with np.load(tmp_path / "s.npz") as npz:
        np.testing.assert_array_equal(npz["x_test"], ds.x_val[:3])
    assert splits.test is not None and Splits.without_test(ds).test is None


def test_load_data_reads_an_npz_without_a_test_split(tmp_path):
    splits = load_data(_write(tmp_path, **_arrays()), input_shape=SHAPE, num_outputs=4)
    assert splits.dataset.n_val == 10 and splits.test is None
    assert splits.x_test.shape == (0, *SHAPE)
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "missing.npz", input_shape=SHAPE, num_outputs=4)


def test_load_npz_accepts_column_labels_and_counts_classes(tmp_path):
    arrays = _arrays(classes=3)
    arrays["y_train"] = arrays["y_train"][:, None]
    ds = load_npz(_write(tmp_path, **arrays))
    assert ds.y_train.shape == (20,) and ds.num_classes == 3


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        load_npz(tmp_path / "none.npz")
    assert "--data" in info.value.fix


def test_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("x_train,y_train\n1,2\n")
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        load_npz(path)
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DataError, match="single array"):
        load_npz(single)


@pytest.mark.parametrize("content", [b"\x80\x04garbage" * 50, b"PK\x03\x04" + b"x" * 100, bytes(range(256)) * 8])
def test_garbage_npz_never_suggests_allow_pickle(tmp_path, content):
    """numpy's own message tells the reader to pass allow_pickle=True, i.e. to run an untrusted pickle."""
    path = tmp_path / "garbage.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"not an \.npz archive of plain arrays") as info:
        load_npz(path)
    assert "allow_pickle" not in str(info.value)


def test_object_array_message_never_suggests_allow_pickle(tmp_path):
    arrays = _arrays()
    arrays["y_val"] = np.array([{"label": 1}] * len(arrays["y_val"]), dtype=object)
    with pytest.raises(DataError, match=r"not a plain-array \.npz") as info:
        load_npz(_write(tmp_path, **arrays))
    assert "allow_pickle" not in str(info.value)


def test_missing_arrays_are_named(tmp_path):
    arrays = _arrays()
    del arrays["y_val"], arrays["x_val"]
    with pytest.raises(DataError, match="lacks required arrays") as info:
        load_npz(_write(tmp_path, **arrays))
    assert "missing x_val, y_val" in str(info.value)


def test_pickled_object_arrays_are_refused(tmp_path):
    arrays = _arrays()
    ragged = np.empty(20, dtype=object)
    for i in range(20):
        ragged[i] = np.zeros(i + 1)
    arrays["x_train"] = ragged
    with pytest.raises(DataError, match="'x_train' holds Python objects") as info:
        load_npz(_write(tmp_path, **arrays))
    assert info.value.where.endswith(": x_train") and "numpy.stack" in info.value.fix


def test_absent_classes_are_listed_per_split():
    """Valid data may lack a class the model outputs (issue 9 item 8): listed for a warning, not refused."""
    ds = _dataset(y_train=(np.arange(20) % 2).astype(np.int64), y_val=np.zeros(10, np.int64))
    assert absent_classes(ds, 4) == {"y_train": [2, 3], "y_val": [1, 2, 3]}
    assert absent_classes(_dataset(), 4) == {}
    check_compatible(ds, (8, 8, 1), 4)  # a class without samples is no error
    with pytest.raises(DataError, match="label the model cannot output"):
        check_compatible(_dataset(), (8, 8, 1), 3)


def test_too_few_class_names(tmp_path):
    with pytest.raises(DataError, match="fewer class names than classes") as info:
        load_npz(_write(tmp_path, **_arrays(), labels=np.array(["a", "b"])))
    assert "4 names" in str(info.value) and "Received: 2 names" in str(info.value)


# ------------------------------------------------------------------ check_compatible: every case


def test_wrong_per_sample_shape_names_array_expected_and_received():
    ds = _dataset()
    with pytest.raises(DataError) as info:
        check_compatible(ds, (32, 32, 3), 4, source="kws.npz")
    message = str(info.value)
    assert "x_train has the wrong per-sample shape" in message and "kws.npz: x_train" in message
    assert "Expected: samples of shape (32, 32, 3)" in message and "Received: samples of shape (8, 8, 1)" in message


def test_missing_channel_axis_gets_a_hint():
    arrays = _arrays()
    ds = _dataset(x_train=arrays["x_train"][..., 0], x_val=arrays["x_val"][..., 0])
    with pytest.raises(DataError, match=r"x_train = x_train\[\.\.\., None\]"):
        check_compatible(ds, SHAPE, 4)


def test_none_or_negative_dimensions_match_any_size():
    check_compatible(_dataset(), (None, 8, 1), 4)
    check_compatible(_dataset(), (-1, 8, 1), 4)


def test_x_val_shape_differs_from_x_train():
    with pytest.raises(DataError, match="x_train and x_val have different sample shapes"):
        check_compatible(_dataset(x_val=np.zeros((10, 8, 8, 2), np.float32)), SHAPE, 4)


def test_non_numeric_x():
    with pytest.raises(DataError, match="x_val is not numeric") as info:
        check_compatible(_dataset(x_val=np.full((10, 8, 8, 1), "a")), SHAPE, 4)
    assert "dtype <U1" in str(info.value)


def test_float_labels_are_refused():
    with pytest.raises(DataError, match="y_train holds non-integer labels") as info:
        check_compatible(_dataset(y_train=np.linspace(0, 3, 20)), SHAPE, 4)
    assert "fractional" in str(info.value) and "astype('int64')" in info.value.fix


def test_one_hot_labels_get_an_argmax_hint():
    with pytest.raises(DataError, match="y_train looks one-hot") as info:
        check_compatible(_dataset(y_train=np.eye(4, dtype=np.int64)[np.arange(20) % 4]), SHAPE, 4)
    assert "argmax(axis=1)" in info.value.fix


def test_label_out_of_range_for_the_model():
    y = np.arange(10) % 4
    y[3] = 7
    with pytest.raises(DataError, match="y_val holds a label the model cannot output") as info:
        check_compatible(_dataset(y_val=y), SHAPE, 4)
    assert "class ids 0..3" in str(info.value) and "label 7" in str(info.value)


def test_negative_labels():
    with pytest.raises(DataError, match="y_train holds negative labels"):
        check_compatible(_dataset(y_train=np.arange(20) - 1), SHAPE, 4)


def test_validation_may_be_absent_when_not_required():
    no_val = _dataset(x_val=np.zeros((0, *SHAPE), np.float32), y_val=np.zeros(0, np.int64))
    check_compatible(no_val, SHAPE, 4, require_validation=False)
    with pytest.raises(DataError, match="x_val is empty"):
        check_compatible(no_val, SHAPE, 4)
    with pytest.raises(DataError, match="x_train has the wrong per-sample shape"):
        check_compatible(no_val, (8, 8, 3), 4, require_validation=False)


def test_label_range_check_can_be_skipped():
    check_compatible(_dataset(y_val=np.full(10, 99)), SHAPE, None)


def test_mismatched_lengths():
    with pytest.raises(DataError, match="x_train and y_train have different lengths") as info:
        check_compatible(_dataset(y_train=np.zeros(19, np.int64)), SHAPE, 4)
    assert "19 labels for 20 samples" in str(info.value)


@pytest.mark.parametrize("key", ["x_train", "y_val"])
def test_empty_arrays(key):
    shape = (0, *SHAPE) if key.startswith("x") else (0,)
    with pytest.raises(DataError, match=f"{key} is empty"):
        check_compatible(_dataset(**{key: np.zeros(shape, np.float32 if key[0] == "x" else np.int64)}), SHAPE, 4)


def test_nan_and_inf_are_reported_with_the_first_sample():
    x = _arrays()["x_val"]
    x[6, 1, 2, 0] = np.nan
    x[8, 0, 0, 0] = np.inf
    with pytest.raises(DataError, match="x_val holds NaN or infinite values") as info:
        check_compatible(_dataset(x_val=x), SHAPE, 4)
    assert "2 non-finite values (first in sample 6)" in str(info.value)


def test_integer_images_are_accepted():
    check_compatible(_dataset(x_train=np.zeros((20, *SHAPE), np.uint8)), SHAPE, 4)


# ------------------------------------------------------------------ representative_dataset


def test_representative_dataset_yields_float32_batches_of_one():
    x = np.arange(50 * 8 * 8, dtype=np.float64).reshape(50, 8, 8, 1)
    gen = representative_dataset(x, max_samples=20, seed=1)
    first = list(gen())
    assert len(first) == 20
    for item in first:
        assert isinstance(item, list) and len(item) == 1
        assert item[0].shape == (1, 8, 8, 1) and item[0].dtype == np.float32
    again = list(gen())  # the converter may call it more than once: same samples
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    starts = {float(item[0].flat[0]) for item in first}
    assert len(starts) == 20  # distinct samples


def test_representative_dataset_caps_at_the_data_size():
    assert len(list(representative_dataset(np.ones((5, 3)), max_samples=200)())) == 5
    with pytest.raises(DataError, match="No samples"):
        representative_dataset(np.zeros((0, 3)))


# ------------------------------------------------------------------ synthetic data


@pytest.mark.parametrize("shape,classes", [((32, 32, 3), 10), ((49, 10, 1), 12), ((640,), 4)])
def test_generate_for_model_is_learnable_by_a_linear_classifier(shape, classes):
    from sklearn.linear_model import LogisticRegression

    ds = generate_for_model(shape, classes, n_train=240, n_val=120, seed=0)
    check_compatible(ds, shape, classes)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).min() == 240 // classes  # balanced
    clf = LogisticRegression(max_iter=200).fit(ds.x_train.reshape(240, -1), ds.y_train)
    assert clf.score(ds.x_val.reshape(120, -1), ds.y_val) > 0.9


def test_generate_for_model_is_deterministic_and_honours_value_range():
    a = generate_for_model((16, 16, 3), 3, 30, 9, seed=5, value_range=(0, 255))
    b = generate_for_model((16, 16, 3), 3, 30, 9, seed=5, value_range=(0, 255))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    lo, hi = min(a.x_train.min(), a.x_val.min()), max(a.x_train.max(), a.x_val.max())
    assert lo == pytest.approx(0, abs=1e-3) and hi == pytest.approx(255, abs=1e-3)
    assert not np.array_equal(a.x_train, generate_for_model((16, 16, 3), 3, 30, 9, seed=6).x_train)


def test_generate_for_model_rejects_variable_sizes():
    with pytest.raises(DataError, match="variable-size input"):
        generate_for_model((None, 40), 3, 30, 9)
