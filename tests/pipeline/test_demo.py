"""The built-in demo: digits data, the CNN, training once and caching (real tf_keras training)."""

from __future__ import annotations

import numpy as np
import pytest

from edgesparse.data import check_compatible
from edgesparse.pipeline.demos import cache
from edgesparse.pipeline.demos import digits as demo


def test_digits_dataset_shapes_and_range():
    ds = demo.load_digits_dataset()
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_val.shape == (360, 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0 and ds.x_train.max() > 0.9
    assert ds.num_classes == 10 and ds.labels == [str(d) for d in range(10)]
    check_compatible(ds, (8, 8, 1), 10, source=ds.source)


def test_digits_split_is_stratified_and_deterministic():
    a, b, other = demo.load_digits_dataset(0), demo.load_digits_dataset(0), demo.load_digits_dataset(1)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_val, other.y_val)
    counts = np.bincount(a.y_val, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # ~20% of each class's ~180 images


def test_digits_model_is_dominated_by_one_dense_layer():
    model = demo.build_digits_model()
    names = [layer.name for layer in model.layers]
    assert names == ["conv1", "conv2", "pool", "flatten", "fc1", "classifier"]
    assert model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 10)
    fc1 = model.get_layer("fc1")
    assert fc1.kernel.shape == (512, 128)
    assert fc1.count_params() / model.count_params() > 0.9
    assert model.optimizer is None  # uncompiled


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESPARSE_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    assert demo.cache_path().name == f"digits-cnn-v{demo.CACHE_VERSION}-seed0.keras"
    monkeypatch.delenv("EDGESPARSE_CACHE")
    assert cache.cache_dir().parts[-2:] == (".cache", "edgesparse")


@pytest.mark.slow
def test_demo_model_trains_once_to_high_accuracy_then_loads_the_cache(tmp_path):
    events: list[tuple[str, dict]] = []
    model, ds = demo.demo_model(cache=tmp_path, progress=lambda e, f: events.append((e, f)))
    kinds = [e for e, _ in events]
    assert kinds[0] == "demo_train_begin" and kinds.count("demo_epoch_end") == demo.EPOCHS
    assert events[0][1]["epochs"] == demo.EPOCHS and events[0][1]["steps_per_epoch"] == 45
    epoch_ends = [f for e, f in events if e == "demo_epoch_end"]
    assert [f["epoch"] for f in epoch_ends] == list(range(demo.EPOCHS))
    assert kinds[-1] == "demo_train_end" and events[-1][1]["seconds"] < 60
    accuracy = float(np.mean(model.predict(ds.x_val, verbose=0).argmax(1) == ds.y_val))
    assert accuracy >= 0.97
    cached = demo.cache_path(tmp_path)
    assert cached.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left

    stamp = cached.stat().st_mtime_ns
    again: list[tuple[str, dict]] = []
    model2, _ = demo.demo_model(cache=tmp_path, progress=lambda e, f: again.append((e, f)))
    assert [e for e, _ in again] == ["demo_cache_hit"]  # no training the second time
    assert cached.stat().st_mtime_ns == stamp
    for w1, w2 in zip(model.get_weights(), model2.get_weights()):
        np.testing.assert_array_equal(w1, w2)


@pytest.mark.slow
def test_corrupt_cache_is_replaced_by_retraining(tmp_path):
    cached = demo.cache_path(tmp_path)
    cached.write_bytes(b"not a keras archive")
    events: list[str] = []
    demo.demo_model(cache=tmp_path, progress=lambda e, f: events.append(e))
    assert "demo_train_begin" in events and "demo_cache_hit" not in events
    assert cached.stat().st_size > 100_000
    assert cache.load_cached(cached, demo.build_digits_model()) is not None  # the rewritten cache loads


@pytest.mark.slow
def test_unwritable_cache_does_not_fail_the_build(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    ends: list[dict] = []
    model, _ = demo.demo_model(cache=blocker, progress=lambda e, f: ends.append(f) if e == "demo_train_end" else None)
    assert model is not None and ends[0]["path"] is None and "Error" in ends[0]["cache_error"]
