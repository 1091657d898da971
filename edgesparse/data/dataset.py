"""Data sets: .npz files, the representative dataset for int8 calibration.

CONTRACT:
    Dataset: x_train, y_train, x_val, y_val (numpy), num_classes (int), source (str),
             labels (list[str] | None); properties sample_shape, n_train, n_val
    load_npz(path) -> Dataset                  # keys x_train, y_train, x_val, y_val; int labels
    check_compatible(dataset, input_shape, num_classes, *, source) -> None   # DataError naming the array
    representative_dataset(x, max_samples=200, seed=0) -> Callable[[], Iterator[list[np.ndarray]]]
    generate_for_model(input_shape, num_classes, n_train, n_val, seed=0) -> Dataset
    IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
    load_image_folder(root, *, input_shape, seed=0, val_fraction=0.2, workers=None) -> Dataset
        # <root>/<label>/*.png|jpg|jpeg|bmp (or <root>/train/<label>/, <root>/val/<label>/); float32 in [0, 1]
    folder_kind(root) -> "images" | "wav"      # what a --data directory holds; DataError naming what it found

The formats are documented in docs/data.md. Everything here is numpy only (no
TensorFlow; Pillow for image folders), so a data problem is reported before
TensorFlow is even imported.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from edgesparse.errors import DataError, MissingDependency

ARRAYS = ("x_train", "y_train", "x_val", "y_val")
OPTIONAL = ("labels",)  # class names, one string per class id
_FORMAT = "an .npz with x_train, y_train, x_val, y_val (integer labels); see docs/data.md"


@dataclass
class Dataset:
    """Train and validation splits with integer class ids, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    source: str
    labels: list[str] | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(len(self.x_train))

    @property
    def n_val(self) -> int:
        return int(len(self.x_val))


def load_npz(path: Path | str) -> Dataset:
    """Read and validate an .npz data set; never unpickles (allow_pickle=False)."""
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise DataError(
            "The data file does not exist", where=source, expected=_FORMAT,
            received="a directory" if path.is_dir() else "no such file", fix="Check the path passed to --data",
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            "The data file is not an .npz archive", where=source, expected=_FORMAT,
            received=f"{type(exc).__name__}: {exc}", fix="Write it with numpy.savez (see docs/data.md)",
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            "The data file holds a single array, not an .npz archive", where=source, expected=_FORMAT,
            received=f"one array of shape {getattr(archive, 'shape', '?')}",
            fix="Write the four arrays with numpy.savez (see docs/data.md)",
        )
    with archive:
        missing = [k for k in ARRAYS if k not in archive.files]
        if missing:
            raise DataError(
                "The data file lacks required arrays", where=source, expected=", ".join(ARRAYS),
                received=f"arrays {sorted(archive.files)} (missing {', '.join(missing)})",
                fix="Save all four arrays: numpy.savez(path, x_train=..., y_train=..., x_val=..., y_val=...)",
            )
        arrays = {k: _read_array(archive, k, source) for k in ARRAYS}
        names = _read_array(archive, "labels", source) if "labels" in archive.files else None
    labels = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(
                "The class names are not a list of strings", where=f"{source}: labels",
                expected="a 1-D array of strings, one per class id", received=f"{names.dtype} array of shape {names.shape}",
                fix="Save them as numpy.array(['yes', 'no', ...])",
            )
        labels = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]
    for key in ("y_train", "y_val"):
        y = arrays[key]
        if y.ndim == 2 and y.shape[1] == 1:
            arrays[key] = y.reshape(-1)
    _check_arrays(arrays, source)
    seen = max(int(arrays["y_train"].max()), int(arrays["y_val"].max())) + 1
    num_classes = max(seen, len(labels) if labels else 0)
    if labels is not None and len(labels) < seen:
        raise DataError(
            "There are fewer class names than classes", where=f"{source}: labels",
            expected=f"{seen} names (labels go up to {seen - 1})", received=f"{len(labels)} names",
            fix="List one name per class id, in id order",
        )
    return Dataset(num_classes=num_classes, source=source, labels=labels, **arrays)


def _read_array(archive: np.lib.npyio.NpzFile, key: str, source: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise DataError(
            f"Array '{key}' holds Python objects, which would need unpickling to read",
            where=f"{source}: {key}", expected="a numeric array (strings for 'labels')",
            received=f"ValueError: {exc}",
            fix="Stack samples into one numeric array (numpy.stack(list_of_arrays).astype('float32')) before saving",
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"Array '{key}' cannot be read", where=f"{source}: {key}", expected=_FORMAT,
            received=f"{type(exc).__name__}: {exc}", fix="Write the file again with numpy.savez",
        ) from None


def check_compatible(
    dataset: Dataset, input_shape: Sequence[int | None], num_classes: int | None, *, source: str | None = None
) -> None:
    """Check the data fits the model: per-sample shape, numeric dtypes, label range, no NaN.

    `input_shape` is the model's per-sample input shape (no batch dimension; None
    or a negative size such as -1 matches any size). `num_classes` is the number of output classes (None skips
    the label range check, e.g. for an autoencoder).
    """
    source = source or dataset.source
    arrays = {k: getattr(dataset, k) for k in ARRAYS}
    _check_arrays(arrays, source)
    want = tuple(None if d is None or int(d) < 0 else int(d) for d in input_shape)
    for key in ("x_train", "x_val"):
        got = tuple(arrays[key].shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise DataError(
                f"{key} has the wrong per-sample shape for the model", where=f"{source}: {key}",
                expected=f"samples of shape {_shape(want)} (the model's input)",
                received=f"samples of shape {_shape(got)} (array {_shape(arrays[key].shape)})",
                fix=_reshape_hint(key, got, want),
            )
    if num_classes is None:
        return
    for key in ("y_train", "y_val"):
        y = arrays[key]
        top = int(y.max())
        if top >= num_classes:
            raise DataError(
                f"{key} holds a label the model cannot output", where=f"{source}: {key}",
                expected=f"class ids 0..{num_classes - 1} (the model has {num_classes} outputs)",
                received=f"label {top} ({int(np.sum(y >= num_classes))} samples >= {num_classes})",
                fix="Use a model with one output per class, or remap the labels to 0..N-1",
            )


def _shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _reshape_hint(key: str, got: tuple, want: tuple) -> str:
    if None not in want and int(np.prod(got)) == int(np.prod(want)):
        if got + (1,) == want:
            return f"Add a channel axis: {key} = {key}[..., None]"
        return f"Reshape it: {key} = {key}.reshape((-1,) + {tuple(want)})"
    return "Resize or re-extract the features so each sample matches the model's input"


def _check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    """Model-independent checks: non-empty, numeric, finite, integer 1-D labels, x/y lengths."""
    for key in ARRAYS:
        a = arrays[key]
        where = f"{source}: {key}"
        if not isinstance(a, np.ndarray):
            raise DataError(f"{key} is not a numpy array", where=where, expected="numpy.ndarray",
                            received=type(a).__name__, fix="Convert it with numpy.asarray")
        if a.ndim == 0 or a.shape[0] == 0:
            raise DataError(f"{key} is empty", where=where, expected="at least one sample",
                            received=f"array of shape {_shape(a.shape)}", fix="Fill both splits with samples")
        if a.dtype.kind not in "iuf":
            raise DataError(
                f"{key} is not numeric", where=where, expected="an integer or float array",
                received=f"dtype {a.dtype}",
                fix="Convert it with .astype('float32')" if key.startswith("x")
                else "Store integer class ids with .astype('int64')",
            )
    for key in ("x_train", "x_val"):
        x = arrays[key]
        if x.dtype.kind == "f":
            bad = ~np.isfinite(x)
            if bad.any():
                first = int(np.argmax(bad.reshape(len(x), -1).any(axis=1)))
                raise DataError(
                    f"{key} holds NaN or infinite values", where=f"{source}: {key}", expected="finite numbers",
                    received=f"{int(bad.sum())} non-finite values (first in sample {first})",
                    fix="Drop or repair those samples before saving",
                )
    for key in ("y_train", "y_val"):
        y = arrays[key]
        where = f"{source}: {key}"
        if y.ndim == 2 and y.shape[1] > 1:
            raise DataError(
                f"{key} looks one-hot encoded", where=where, expected="1-D integer class ids, shape (N,)",
                received=f"array of shape {_shape(y.shape)}", fix=f"Store class ids: {key} = {key}.argmax(axis=1)",
            )
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise DataError(f"{key} is not a 1-D array of labels", where=where,
                            expected="shape (N,)", received=f"shape {_shape(y.shape)}",
                            fix="Store one integer class id per sample")
        if y.dtype.kind == "f":
            raise DataError(
                f"{key} holds non-integer labels", where=where, expected="integer class ids (int32/int64)",
                received=f"dtype {y.dtype}" + ("" if np.all(np.mod(y, 1) == 0) else " with fractional values"),
                fix=f"Store class ids as integers: {key}.astype('int64')",
            )
        if int(y.min()) < 0:
            raise DataError(f"{key} holds negative labels", where=where, expected="class ids >= 0",
                            received=f"minimum label {int(y.min())}", fix="Remap the labels to 0..N-1")
    for split in ("train", "val"):
        nx, ny = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if nx != ny:
            raise DataError(
                f"x_{split} and y_{split} have different lengths", where=f"{source}: y_{split}",
                expected=f"one label per sample ({nx})", received=f"{ny} labels for {nx} samples",
                fix="Save matching arrays",
            )
    if arrays["x_train"].shape[1:] != arrays["x_val"].shape[1:]:
        raise DataError(
            "x_train and x_val have different sample shapes", where=f"{source}: x_val",
            expected=f"samples of shape {_shape(arrays['x_train'].shape[1:])} like x_train",
            received=f"samples of shape {_shape(arrays['x_val'].shape[1:])}", fix="Save both splits with one shape",
        )


def representative_dataset(
    x: np.ndarray, max_samples: int = 200, seed: int = 0
) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The callable TFLiteConverter.representative_dataset wants: one float32 batch of 1 per yield.

    A fixed random subset (by `seed`) so int8 calibration is reproducible and
    bounded in time; every call replays the same samples.
    """
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise DataError("No samples for int8 calibration", where="representative_dataset",
                        expected="at least one sample", received=f"array of shape {x.shape}",
                        fix="Pass the training or validation inputs")
    if max_samples < 1:
        raise DataError("max_samples must be at least 1", where="representative_dataset",
                        expected="max_samples >= 1", received=max_samples, fix="Use the default of 200")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.permutation(len(x))[: min(max_samples, len(x))])
    samples = np.ascontiguousarray(x[take], dtype=np.float32)

    def generate() -> Iterator[list[np.ndarray]]:
        for i in range(len(samples)):
            yield [samples[i : i + 1]]

    return generate


def generate_for_model(
    input_shape: Sequence[int | None], num_classes: int, n_train: int, n_val: int, seed: int = 0,
    *, value_range: tuple[float, float] | None = None,
) -> Dataset:
    """Small synthetic but learnable data for a model without its real data set (tests, MLPerf).

    Each class has a fixed random prototype (a smooth pattern plus a per-channel
    offset, so it survives global pooling); a sample is its class prototype plus
    Gaussian noise. A linear classifier separates it, and a CNN learns it in a few steps.

    `value_range=(low, high)` maps both splits (with one affine map) into that range.
    A pretrained model with BatchNormalization needs inputs on the scale it was
    trained on, or its moving statistics make validation accuracy stick at chance
    while training accuracy climbs: MLPerf Tiny ResNet-8 wants (0, 255), VWW and
    the streaming wake word model (0, 1), KWS about (-10, 10) (docs/data.md).
    """
    shape = tuple(input_shape)
    if any(d is None for d in shape):
        raise DataError("Cannot generate data for a variable-size input", where="generate_for_model",
                        expected="a fixed per-sample shape", received=_shape(shape),
                        fix="Pass the input shape with concrete sizes")
    if num_classes < 2 or n_train < num_classes or n_val < 1:
        raise DataError("Too few classes or samples to generate a data set", where="generate_for_model",
                        expected="num_classes >= 2, n_train >= num_classes, n_val >= 1",
                        received=f"num_classes={num_classes}, n_train={n_train}, n_val={n_val}",
                        fix="Ask for more samples")
    rng = np.random.default_rng(seed)
    prototypes = np.stack([_prototype(shape, rng) for _ in range(num_classes)])

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        x = prototypes[y] + 0.25 * rng.standard_normal((n, *shape)).astype(np.float32)
        return x.astype(np.float32), y

    x_train, y_train = split(n_train)
    x_val, y_val = split(n_val)
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        lo, hi = float(min(x_train.min(), x_val.min())), float(max(x_train.max(), x_val.max()))
        scale = (high - low) / (hi - lo) if hi > lo else 0.0
        x_train, x_val = (((x - lo) * scale + low).astype(np.float32) for x in (x_train, x_val))
    return Dataset(x_train, y_train, x_val, y_val, num_classes=num_classes,
                   source=f"synthetic data for input {_shape(shape)} (seed {seed})")


def _prototype(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth random pattern: coarse noise upsampled 4x over the spatial axes, plus a channel offset."""
    spatial = len(shape) - 1 if len(shape) > 1 else len(shape)  # the last axis of an image is channels
    pattern = rng.standard_normal(tuple(max(1, (d + 3) // 4) if i < spatial else d for i, d in enumerate(shape)))
    for axis in range(spatial):
        pattern = np.repeat(pattern, 4, axis=axis)[(slice(None),) * axis + (slice(0, shape[axis]),)]
    offset = rng.standard_normal(shape[-1:] if shape else ()) * 0.5
    return (pattern + offset).astype(np.float32)


# ----------------------------------------------------------------------------- folders

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
WAV_SUFFIX = ".wav"           # exactly as kws.load_folder globs it (case-sensitive)
_SPLIT_DIRS = ("train", "val", "validation", "test")
# pixel p (0..255) -> p * _PIXEL_SCALE: what the deployed vision app computes (config.json image.scale 1/255)
_PIXEL_SCALE = np.float32(1.0 / 255.0)
_ACCEPTED = ("an .npz file (docs/data.md); a folder of images, one sub-folder per class "
             "(<label>/*.png|jpg|jpeg|bmp, optionally under train/ and val/); or a folder of recordings "
             "laid out like Speech Commands (<label>/*.wav)")


def _entries(path: Path) -> tuple[list[Path], list[Path]]:
    """Visible (no leading '.') sub-folders and files of `path`, each sorted by name."""
    dirs, files = [], []
    for p in sorted(path.iterdir()):
        if p.name.startswith("."):
            continue
        (dirs if p.is_dir() else files).append(p)
    return dirs, files


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _suffix_counts(files: Sequence[Path]) -> Counter:
    return Counter(p.suffix or "(no suffix)" for p in files)


def _describe_counts(counts: Counter) -> str:
    common = counts.most_common(5)
    text = ", ".join(f"{n} {suffix}" for suffix, n in common)
    rest = sum(counts.values()) - sum(n for _, n in common)
    return text + (f" and {rest} more" if rest else "")


def _split_layout(dirs: list[Path]) -> dict[str, Path] | None:
    """{'train': .., 'val': ..} when root holds train/ and val/ (or validation/) folders of class folders."""
    by_name = {d.name: d for d in dirs}
    val = by_name.get("val") or by_name.get("validation")
    train = by_name.get("train")
    if train is None or val is None or not _entries(train)[0]:
        return None
    return {"train": train, "val": val}


def folder_kind(root: Path | str) -> str:
    """What a `--data` directory holds: "images" or "wav" (Speech Commands layout).

    Looks one level into each sub-folder (two under train/ and val/). Raises
    DataError naming what was found, and what is accepted, for anything else:
    an empty folder, files with no class folder, other file types, or both
    images and recordings.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("The data folder does not exist", where=str(root), expected=_ACCEPTED,
                        received="a file" if root.exists() else "no such folder", fix="Check the path passed to --data")
    dirs, files = _entries(root)
    inner: list[Path] = []
    class_dirs = list(dirs)
    split = _split_layout(dirs)
    if split:
        class_dirs += [d for s in split.values() for d in _entries(s)[0]]
    for d in class_dirs:
        inner += _entries(d)[1]
    images = sum(_is_image(p) for p in inner)
    wavs = sum(p.suffix == WAV_SUFFIX for p in inner)
    if images and wavs:
        raise DataError("The data folder holds both images and recordings", where=str(root),
                        expected="one kind: " + _ACCEPTED,
                        received=f"{images} images and {wavs} .wav files in its sub-folders",
                        fix="Keep images and recordings in separate folders")
    if images:
        return "images"
    if wavs:
        return "wav"
    if not dirs and not files:
        received = "an empty folder"
    else:
        parts = []
        if files:
            parts.append(f"{len(files)} file(s) directly in it ({_describe_counts(_suffix_counts(files))})")
        if dirs:
            held = f"holding {len(inner)} file(s) ({_describe_counts(_suffix_counts(inner))})" if inner else "with no files in them"
            parts.append(f"{len(dirs)} sub-folder(s) ({', '.join(d.name for d in dirs[:5])}"
                         f"{', ...' if len(dirs) > 5 else ''}) {held}")
        received = "; ".join(parts)
    npz = [p for p in files if p.suffix == ".npz"]
    fix = (f"Pass the .npz file itself: --data {npz[0]}" if len(npz) == 1 else
           "Put each class's files in a sub-folder named after the class: <folder>/cat/1.png, <folder>/dog/2.png")
    raise DataError("The data folder holds no images or recordings in class sub-folders", where=str(root),
                    expected=_ACCEPTED, received=received, fix=fix)


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependency("Pillow is needed to read image folders and is not installed",
                                expected="the Pillow package (installed with matplotlib)", received=str(exc),
                                fix="Install it: pip install pillow") from None
    return Image


def _class_images(folder: Path) -> list[Path]:
    """The images of one class folder; DataError naming the folder when it has none."""
    dirs, files = _entries(folder)
    images = [p for p in files if _is_image(p)]
    if images:
        return images
    if files:
        received = f"{len(files)} file(s), none of them an image ({_describe_counts(_suffix_counts(files))})"
    elif dirs:
        received = f"only sub-folders ({', '.join(d.name for d in dirs[:5])}); images are not searched for recursively"
    else:
        received = "an empty folder"
    raise DataError("A class folder holds no images", where=str(folder),
                    expected=f"image files ({', '.join(IMAGE_SUFFIXES)}) directly in each class folder",
                    received=received, fix="Add images to it, or remove the folder (each folder is a class)")


def _stable_order(paths: list[Path], seed: int) -> list[Path]:
    """A seeded order that depends only on each file's name: adding a file moves no other file across the split."""
    return sorted(paths, key=lambda p: hashlib.sha1(f"{seed}:{p.name}".encode()).hexdigest())


def _image_shape(root: Path, input_shape: Sequence[int | None]) -> tuple[tuple[int, ...], str]:
    """The fixed (H, W[, C]) images are made into, and the Pillow mode ("L" or "RGB")."""
    shape = tuple(input_shape)
    fixed = all(d is not None and int(d) > 0 for d in shape)
    if len(shape) not in (2, 3) or not fixed or (len(shape) == 3 and int(shape[2]) not in (1, 3)):
        raise DataError("The model's input cannot take images", where=str(root),
                        expected="a fixed input of (height, width), (height, width, 1) grayscale or "
                                 "(height, width, 3) RGB",
                        received=f"model input {_shape([None if d is None or int(d) < 0 else int(d) for d in shape])}",
                        fix="Give the model a fixed-size image input, or preprocess the images into an .npz (docs/data.md)")
    shape = tuple(int(d) for d in shape)
    return shape, ("RGB" if len(shape) == 3 and shape[2] == 3 else "L")


def _read_image(image_module, path: Path, shape: tuple[int, ...], mode: str) -> np.ndarray:
    """One file -> float32 of `shape` in [0, 1]: convert(mode), resize (W, H) bilinear, * 1/255.

    The same calls, in the same order, as demos/rpi/vision_app.py (with config
    image.scale 1/255, offset 0, invert false), so the device sees what training saw.
    """
    try:
        with image_module.open(path) as picture:
            picture = picture.convert(mode).resize((shape[1], shape[0]), image_module.BILINEAR)
            pixels = np.asarray(picture, np.float32)
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as exc:
        raise DataError("An image cannot be read", where=str(path), expected="a readable PNG, JPEG or BMP file",
                        received=f"{type(exc).__name__}: {exc}",
                        fix="Re-save the file with an image editor, or delete it") from None
    return (pixels * _PIXEL_SCALE).reshape(shape)


def read_image(path: Path | str, *, input_shape: Sequence[int | None]) -> np.ndarray:
    """One picture preprocessed exactly as load_image_folder does, for a test input or a deploy sample."""
    path = Path(path)
    shape, mode = _image_shape(path, input_shape)
    return _read_image(_pillow(), path, shape, mode)


def load_image_folder(root: Path | str, *, input_shape: Sequence[int | None], seed: int = 0,
                      val_fraction: float = 0.2, workers: int | None = None) -> Dataset:
    """Read `<root>/<label>/*.png|jpg|jpeg|bmp` as a Dataset for a model with `input_shape`.

    Class ids are the label folders in sorted (Python string) order; their names
    go to Dataset.labels. Each image is converted to grayscale ("L") for 1 channel
    or RGB for 3 (an (H, W) input is grayscale without a channel axis), resized to
    (H, W) with Pillow's bilinear filter (aspect ratio not kept) and scaled to
    float32 in [0, 1] (pixel / 255), exactly as the Raspberry Pi vision app does.

    With `<root>/train/<label>/` and `<root>/val/<label>/` (or `validation/`) the
    split is theirs (`test/` is left alone); otherwise each class is split on its
    own: `val_fraction` of its images (rounded, at least one when it has two or
    more) go to validation, chosen by a seeded hash of the file name, so the split
    is stratified, repeatable and stable when files are added. Files and folders
    starting with '.' and files of other types are skipped; sub-folders of a class
    folder are not searched.
    """
    Image = _pillow()
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("The image folder does not exist", where=str(root),
                        expected="a folder with one sub-folder of images per class",
                        received="a file" if root.exists() else "no such folder", fix="Check the path")
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError("val_fraction must be between 0 and 1", where="load_image_folder",
                        expected="0 < val_fraction < 1, e.g. 0.2", received=val_fraction)
    shape, mode = _image_shape(root, input_shape)
    dirs, files = _entries(root)
    split = _split_layout(dirs)
    if split:
        extra = [d.name for d in dirs if d.name not in _SPLIT_DIRS]
        if extra:
            raise DataError("The image folder mixes train/ and val/ with class folders", where=str(root),
                            expected="either train/<label>/ and val/<label>/, or <label>/ folders only",
                            received=f"also {', '.join(extra)}",
                            fix="Move those folders under train/ (and val/), or drop train/ and val/")
        per_split = {name: {d.name: d for d in _entries(folder)[0]} for name, folder in split.items()}
        if not per_split["val"]:
            raise DataError("The validation folder has no class folders", where=str(split["val"]),
                            expected="val/<label>/ folders of images, like train/<label>/",
                            received="no sub-folders", fix="Add val/<label>/ images, or move the class folders up out of "
                            "train/ (and remove val/) to let edgesparse split them")
        names = sorted(set(per_split["train"]) | set(per_split["val"]))
        missing = sorted(set(per_split["val"]) - set(per_split["train"]))
        if missing:
            raise DataError("A validation class has no training folder", where=str(split["train"]),
                            expected="a train/<label>/ folder for every val/<label>/",
                            received=f"no train/ folder for {', '.join(missing)}",
                            fix="Add training images for those classes, or remove them from val/")
        layout = f"train/ and {split['val'].name}/ folders"
    else:
        per_split = {"all": {d.name: d for d in dirs}}
        names = [d.name for d in dirs]
        loose = [p.name for p in files if _is_image(p)]
        if loose:
            raise DataError("Images lie directly in the image folder, outside any class folder", where=str(root),
                            expected="<folder>/<label>/*.png|jpg|jpeg|bmp: one sub-folder per class",
                            received=f"{len(loose)} image(s) such as {loose[0]}",
                            fix="Move each image into the sub-folder named after its class")
        layout = f"stratified split, val_fraction {val_fraction:g}, seed {seed}"
    if not names:
        raise DataError("The image folder is empty" if not files else "The image folder has no class folders",
                        where=str(root), expected="one sub-folder of images per class (at least two)",
                        received="an empty folder" if not files else
                        f"{len(files)} file(s) ({_describe_counts(_suffix_counts(files))}) and no sub-folders",
                        fix="Lay the images out as <folder>/cat/1.png, <folder>/dog/2.png, ...")
    if len(names) < 2:
        raise DataError("The image folder has a single class", where=str(root),
                        expected="at least two class folders (a classifier needs two classes)",
                        received=f"one class folder: {names[0]}", fix="Add a folder of images for each other class")
    jobs: list[tuple[int, int, Path]] = []                 # (split 0 train / 1 val, class id, file)
    for label, name in enumerate(names):
        if split:
            for index, key in enumerate(("train", "val")):
                folder = per_split[key].get(name)
                if folder is not None:
                    jobs += [(index, label, p) for p in _class_images(folder)]
        else:
            images = _stable_order(_class_images(per_split["all"][name]), seed)
            n_val = 0 if len(images) < 2 else min(max(1, round(len(images) * val_fraction)), len(images) - 1)
            jobs += [(1 if i < n_val else 0, label, p) for i, p in enumerate(images)]
    if not any(s == 1 for s, _, _ in jobs):
        raise DataError("Too few images to make a validation split", where=str(root),
                        expected="at least two images in some class folder", received="one image per class",
                        fix="Add images, or give a val/ folder")
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        pixels = list(pool.map(lambda job: _read_image(Image, job[2], shape, mode), jobs))
    arrays = {}
    for index, key in enumerate(("train", "val")):
        take = [i for i, job in enumerate(jobs) if job[0] == index]
        arrays[f"x_{key}"] = np.stack([pixels[i] for i in take]).astype(np.float32, copy=False)
        arrays[f"y_{key}"] = np.array([jobs[i][1] for i in take], np.int64)
    return Dataset(num_classes=len(names), labels=list(names),
                   source=f"{root} (image folder: {len(jobs)} images, {len(names)} classes, {layout})", **arrays)
