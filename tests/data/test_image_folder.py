"""data.load_image_folder and data.folder_kind: layouts, preprocessing, split, every DataError. No TensorFlow."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgesparse import data
from edgesparse.errors import DataError, MissingDependency

RPI_DEMO = Path(__file__).resolve().parents[2] / "demos" / "rpi"


def _png(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8), mode).save(path)
    return path


def _folder(root: Path, classes=("cat", "dog", "Bird"), per_class=10, size=(12, 10), suffix=".png") -> Path:
    """A class's images are its own flat grey level plus noise; sizes and modes vary on purpose."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        for i in range(per_class):
            pixels = np.clip(40 + 80 * c + rng.integers(-20, 20, size), 0, 255)
            mode = "RGB" if i % 2 else "L"
            if mode == "RGB":
                pixels = np.stack([pixels, 255 - pixels, pixels // 2], axis=-1)
            path = root / name / f"img{i:02d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(pixels, np.uint8), mode).save(path)
    return root


def _vision_app():
    """demos/rpi/vision_app.py, imported as the device runs it (edgesparse_app beside it)."""
    sys.path.insert(0, str(RPI_DEMO))
    try:
        spec = importlib.util.spec_from_file_location("vision_app_under_test", RPI_DEMO / "vision_app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(RPI_DEMO))


# ------------------------------------------------------------------ layout, labels, split


def test_labels_are_the_sorted_folder_names_and_the_split_is_stratified(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / ".hidden").mkdir()
    (root / "README.txt").write_text("ignored")
    (root / "cat" / "notes.txt").write_text("ignored")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    ds = data.load_image_folder(root, input_shape=(8, 8, 1))
    assert ds.labels == ["Bird", "cat", "dog"] and ds.num_classes == 3   # Python string order
    assert ds.x_train.shape == (24, 8, 8, 1) and ds.x_val.shape == (6, 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_val).tolist() == [2, 2, 2] and np.bincount(ds.y_train).tolist() == [8, 8, 8]
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    assert str(root) in ds.source and "stratified" in ds.source
    # the data fit the model the shape was given for
    data.check_compatible(ds, (8, 8, 1), 3)


def test_split_is_repeatable_seeded_and_stable_when_files_are_added(tmp_path):
    root = _folder(tmp_path / "imgs", per_class=10)
    a = data.load_image_folder(root, input_shape=(8, 8))
    b = data.load_image_folder(root, input_shape=(8, 8))
    assert a.x_train.shape == (24, 8, 8)                                  # (H, W) input: no channel axis
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_val, b.y_val)
    other = data.load_image_folder(root, input_shape=(8, 8), seed=1)
    assert not np.array_equal(np.sort(a.x_val.reshape(6, -1), axis=0), np.sort(other.x_val.reshape(6, -1), axis=0))
    # one more image in each class: at most one image per class moves across the split
    rng = np.random.default_rng(5)
    for name in ("Bird", "cat", "dog"):
        _png(root / name / "zz_new.png", rng.integers(0, 255, (12, 10)))
    c = data.load_image_folder(root, input_shape=(8, 8), val_fraction=6 / 33)  # 11 per class -> 2 in val
    kept = {x.tobytes() for x in a.x_val} & {x.tobytes() for x in c.x_val}
    assert len(kept) >= 3


def test_val_fraction_rounds_per_class_and_keeps_one_image_for_training(tmp_path):
    root = _folder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    ds = data.load_image_folder(root, input_shape=(4, 4, 1), val_fraction=0.9)
    assert np.bincount(ds.y_train).tolist() == [1, 1] and np.bincount(ds.y_val).tolist() == [1, 1]
    _png(root / "c" / "only.png", np.zeros((4, 4)))                      # one image: training only
    ds = data.load_image_folder(root, input_shape=(4, 4, 1), val_fraction=0.5)
    assert np.bincount(ds.y_train).tolist() == [1, 1, 1] and np.bincount(ds.y_val, minlength=3).tolist() == [1, 1, 0]


def test_train_and_val_folders_are_used_as_given(tmp_path):
    root = tmp_path / "imgs"
    _folder(root / "train", classes=("a", "b", "c"), per_class=4)
    _folder(root / "val", classes=("a", "b"), per_class=2, suffix=".jpg")
    _folder(root / "test", classes=("a",), per_class=1)                   # held out: not read
    ds = data.load_image_folder(root, input_shape=(6, 6, 3), val_fraction=0.5)
    assert ds.labels == ["a", "b", "c"]
    assert np.bincount(ds.y_train).tolist() == [4, 4, 4] and np.bincount(ds.y_val, minlength=3).tolist() == [2, 2, 0]
    assert ds.x_val.shape == (4, 6, 6, 3) and "train/ and val/" in ds.source
    assert data.folder_kind(root) == "images"


def test_every_suffix_is_read_case_insensitively(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(1)
    for i, suffix in enumerate((".png", ".PNG", ".jpg", ".JPEG", ".bmp")):
        for name in ("x", "y"):
            _png(root / name / f"f{i}{suffix}", rng.integers(0, 255, (9, 9)))
    ds = data.load_image_folder(root, input_shape=(9, 9, 1))
    assert ds.n_train + ds.n_val == 10


# ------------------------------------------------------------------ preprocessing


def test_pixels_are_scaled_to_0_1_grayscale_or_rgb_and_resized(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "a" / "white.png", np.full((20, 30), 255))
    _png(root / "a" / "white2.png", np.full((20, 30), 255))
    _png(root / "b" / "red.png", np.stack([np.full((5, 5), 255), np.zeros((5, 5)), np.zeros((5, 5))], -1), "RGB")
    _png(root / "b" / "red2.png", np.stack([np.full((5, 5), 255), np.zeros((5, 5)), np.zeros((5, 5))], -1), "RGB")
    gray = data.load_image_folder(root, input_shape=(7, 3, 1))
    x = np.concatenate([gray.x_train, gray.x_val])
    y = np.concatenate([gray.y_train, gray.y_val])
    assert x.shape[1:] == (7, 3, 1)
    assert np.all(x[y == 0] == 1.0)
    assert np.allclose(x[y == 1], 76 / 255)                   # ITU-R 601 luma of pure red: Pillow's "L"
    rgb = data.load_image_folder(root, input_shape=(4, 4, 3))
    x = np.concatenate([rgb.x_train, rgb.x_val])
    y = np.concatenate([rgb.y_train, rgb.y_val])
    assert np.all(x[y == 0] == 1.0)                            # grey -> RGB replicates the channel
    assert np.all(x[y == 1][..., 0] == 1.0) and np.all(x[y == 1][..., 1:] == 0.0)


def test_features_equal_what_the_raspberry_pi_vision_app_computes(tmp_path):
    """The deployed app (config image: scale 1/255, offset 0, no invert) gives the very same float32 bits."""
    vision_app = _vision_app()
    root = _folder(tmp_path / "imgs", per_class=6, size=(37, 23))
    rng = np.random.default_rng(2)
    _png(root / "cat" / "photo.jpg", rng.integers(0, 255, (50, 64, 3)), "RGB")   # lossy, odd size
    image = {"scale": 1.0 / 255.0, "offset": 0.0, "invert": False}
    for shape in ((8, 8, 1), (16, 12, 3)):
        ds = data.load_image_folder(root, input_shape=shape)
        everything = {x.tobytes() for x in np.concatenate([ds.x_train, ds.x_val])}
        files = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg"))
        assert len(files) == len(everything) == ds.n_train + ds.n_val
        for path in files:
            device = vision_app.load_input(str(path), shape, image)
            assert device.dtype == np.float32 and device.tobytes() in everything, (path, shape)


# ------------------------------------------------------------------ errors


def test_errors_name_the_problem(tmp_path):
    shape = (8, 8, 1)
    with pytest.raises(DataError, match="does not exist"):
        data.load_image_folder(tmp_path / "missing", input_shape=shape)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="image folder is empty"):
        data.load_image_folder(tmp_path / "empty", input_shape=shape)

    one = _folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(DataError, match="single class") as err:
        data.load_image_folder(one, input_shape=shape)
    assert "cat" in str(err.value)

    root = _folder(tmp_path / "imgs")
    (root / "zebra").mkdir()
    (root / "zebra" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="class folder holds no images") as err:
        data.load_image_folder(root, input_shape=shape)
    assert "zebra" in str(err.value) and ".txt" in str(err.value)
    (root / "zebra" / "notes.txt").unlink()
    with pytest.raises(DataError, match="empty folder"):
        data.load_image_folder(root, input_shape=shape)
    (root / "zebra").rmdir()

    bad = root / "dog" / "img03.png"
    bad.write_bytes(bad.read_bytes()[:60])                      # truncated PNG
    with pytest.raises(DataError, match="cannot be read") as err:
        data.load_image_folder(root, input_shape=shape)
    assert str(bad) in str(err.value)
    (root / "cat" / "a_fake.jpg").write_text("not a jpeg")    # the first bad file in order is named
    with pytest.raises(DataError, match="cannot be read") as err:
        data.load_image_folder(root, input_shape=shape)
    assert "a_fake.jpg" in str(err.value) and "img03" not in str(err.value)


def test_layout_and_shape_errors(tmp_path):
    loose = _folder(tmp_path / "loose")
    _png(loose / "stray.png", np.zeros((4, 4)))
    with pytest.raises(DataError, match="outside any class folder"):
        data.load_image_folder(loose, input_shape=(8, 8, 1))
    flat = tmp_path / "flat"
    _png(flat / "a.png", np.zeros((4, 4)))
    with pytest.raises(DataError, match="outside any class folder"):
        data.load_image_folder(flat, input_shape=(8, 8, 1))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "labels.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="no class folders") as err:
        data.load_image_folder(notes, input_shape=(8, 8, 1))
    assert "1 .txt" in str(err.value)
    few = _folder(tmp_path / "few", classes=("a", "b"), per_class=1)
    with pytest.raises(DataError, match="Too few images"):
        data.load_image_folder(few, input_shape=(8, 8, 1))
    root = _folder(tmp_path / "imgs")
    for shape in ((None, None, 3), (8, 8, 4), (64,), (2, 8, 8, 1)):
        with pytest.raises(DataError, match="cannot take images"):
            data.load_image_folder(root, input_shape=shape)
    with pytest.raises(DataError, match="val_fraction"):
        data.load_image_folder(root, input_shape=(8, 8, 1), val_fraction=1.0)

    split = tmp_path / "split"
    _folder(split / "train", classes=("a", "b"), per_class=2)
    (split / "val").mkdir()
    with pytest.raises(DataError, match="validation folder has no class folders"):
        data.load_image_folder(split, input_shape=(8, 8, 1))
    _folder(split / "val", classes=("a", "c"), per_class=1)
    with pytest.raises(DataError, match="no training folder") as err:
        data.load_image_folder(split, input_shape=(8, 8, 1))
    assert "c" in str(err.value)
    _folder(split / "dog", classes=("x",), per_class=1)
    with pytest.raises(DataError, match="mixes train/ and val/"):
        data.load_image_folder(split, input_shape=(8, 8, 1))


def test_missing_pillow_is_a_missing_dependency_with_the_pip_command(tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingDependency, match="pip install pillow"):
        data.load_image_folder(root, input_shape=(8, 8, 1))


# ------------------------------------------------------------------ folder_kind


def test_folder_kind_tells_images_from_recordings_and_names_anything_else(tmp_path):
    assert data.folder_kind(_folder(tmp_path / "imgs")) == "images"
    wavs = tmp_path / "wavs"
    for word in ("yes", "no"):
        (wavs / word).mkdir(parents=True)
        (wavs / word / "a_nohash_0.wav").write_bytes(b"RIFF")
    assert data.folder_kind(wavs) == "wav"

    _png(wavs / "cat" / "x.png", np.zeros((4, 4)))
    with pytest.raises(DataError, match="both images and recordings"):
        data.folder_kind(wavs)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images or recordings") as err:
        data.folder_kind(tmp_path / "empty")
    assert "an empty folder" in str(err.value) and ".npz" in str(err.value) and "<label>/*.wav" in str(err.value)

    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    for i in range(3):
        (other / "a" / f"{i}.tif").write_bytes(b"II*\0")
    np.savez(other / "data.npz", x=np.zeros(1))
    with pytest.raises(DataError) as err:
        data.folder_kind(other)
    message = str(err.value)
    assert "1 file(s) directly in it (1 .npz)" in message and "3 .tif" in message
    assert f"--data {other / 'data.npz'}" in message

    with pytest.raises(DataError, match="does not exist"):
        data.folder_kind(tmp_path / "nope")
