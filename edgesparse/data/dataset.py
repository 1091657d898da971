"""The Dataset every build trains on: the .npz format, its checks, and calibration samples.

Owns the in-memory shape of user data (Dataset: train and validation splits
with integer class ids; Splits adds a held-out test split), the .npz reader and
writer, the model-compatibility check (`check_compatible`, the one place a data
set is validated against a model), the int8 calibration generator and synthetic
data for models shipped without theirs. Numpy only, so a data problem is
reported before TensorFlow is even imported. The formats are in docs/data.md.

Raises DataError (bad files, arrays that do not fit the model).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.errors import DataError
from edgesparse.fsutil import atomic_write_bytes

__all__ = [
    "ARRAYS",
    "NAME_ARRAYS",
    "Dataset",
    "Splits",
    "absent_classes",
    "check_compatible",
    "generate_for_model",
    "input_range",
    "load_npz",
    "representative_dataset",
    "save_npz",
    "shape_text",
]

ARRAYS = ("x_train", "y_train", "x_val", "y_val")
# Class names, one string per class id: the first of these arrays an .npz holds.
NAME_ARRAYS = ("labels", "class_names")
_FORMAT = "an .npz with x_train, y_train, x_val, y_val (integer labels); see docs/data.md"
# A float32 network multiplies inputs by weights and sums many of them; inputs beyond this magnitude
# overflow or swamp every activation, whatever the model.
_HUGE_INPUT = 1e15


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
        return len(self.x_train)

    @property
    def n_val(self) -> int:
        return len(self.x_val)


@dataclass
class Splits:
    """Train/validation as a Dataset, plus a held-out test split (empty arrays when there is none)."""

    dataset: Dataset
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(x_test, y_test), or None when no sample was held out."""
        return (self.x_test, self.y_test) if len(self.y_test) else None

    @classmethod
    def without_test(cls, dataset: Dataset) -> Splits:
        """A data set that holds nothing out (an .npz, an image folder)."""
        return cls(dataset, np.zeros((0, *dataset.sample_shape), np.float32), np.zeros(0, np.int64))


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
            "The data file is not an .npz archive of plain arrays", where=source, expected=_FORMAT,
            received=_not_npz_reason(exc), fix="Write it with numpy.savez (see docs/data.md)",
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
        name_key = next((k for k in NAME_ARRAYS if k in archive.files), None)
        names = _read_array(archive, name_key, source) if name_key else None
    labels = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(
                "The class names are not a list of strings", where=f"{source}: {name_key}",
                expected="a 1-D array of strings, one per class id",
                received=f"{names.dtype} array of shape {names.shape}",
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
            "There are fewer class names than classes", where=f"{source}: {name_key}",
            expected=f"{seen} names (labels go up to {seen - 1})", received=f"{len(labels)} names",
            fix="List one name per class id, in id order",
        )
    return Dataset(num_classes=num_classes, source=source, labels=labels, **arrays)


def save_npz(path: Path | str, splits: Splits) -> None:
    """Write splits as an .npz `edgesparse build --data` reads, atomically.

    labels ride along and are read; x_test/y_test are stored for the caller's own use, but `build` reads
    no test split from an .npz (its accuracy is the validation split's).
    """
    d = splits.dataset
    arrays: dict[str, Any] = {"x_train": d.x_train, "y_train": d.y_train, "x_val": d.x_val, "y_val": d.y_val,
                              "x_test": splits.x_test, "y_test": splits.y_test}
    if d.labels:
        arrays["labels"] = np.array(list(d.labels))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(path), buffer.getvalue())


def _read_array(archive: np.lib.npyio.NpzFile, key: str, source: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which is refused
        if "pickle" not in str(exc).lower():
            raise DataError(
                f"Array '{key}' cannot be read", where=f"{source}: {key}", expected=_FORMAT,
                received=_not_npz_reason(exc), fix="Write the file again with numpy.savez",
            ) from None
        raise DataError(
            f"Array '{key}' holds Python objects, so this is not a plain-array .npz",
            where=f"{source}: {key}", expected="a numeric array (strings for 'labels')",
            received="an object array (reading it would run pickle, which edgesparse never does for data files)",
            fix="Stack samples into one numeric array (numpy.stack(list_of_arrays).astype('float32')) before saving",
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"Array '{key}' cannot be read", where=f"{source}: {key}", expected=_FORMAT,
            received=_not_npz_reason(exc), fix="Write the file again with numpy.savez",
        ) from None


def _not_npz_reason(exc: BaseException) -> str:
    """What numpy found, in words that never suggest allow_pickle (loading an untrusted pickle runs its code)."""
    text = str(exc)
    if "pickle" in text.lower():
        return "neither a zip of .npy arrays nor a single .npy array"
    if isinstance(exc, (zipfile.BadZipFile, EOFError)):
        return f"a damaged or truncated archive ({text or type(exc).__name__})"
    return f"{type(exc).__name__}: {text}"


def check_compatible(
    dataset: Dataset, input_shape: Sequence[int | None], num_classes: int | None, *, source: str | None = None,
    require_validation: bool = True,
) -> None:
    """Check the data fits the model: per-sample shape, numeric dtypes, label range, no NaN.

    The one check of a data set against a model (build and fine-tuning both call
    it). `input_shape` is the model's per-sample input shape (no batch dimension;
    None or a negative size such as -1 matches any size). `num_classes` is the
    number of classes (None skips the label range check, e.g. for an
    autoencoder). With `require_validation=False` a missing or empty validation
    split is allowed (fine-tuning without validation) and only training is checked.
    """
    source = source or dataset.source
    x_val = getattr(dataset, "x_val", None)
    has_val = require_validation or (x_val is not None and len(x_val) > 0
                                     and getattr(dataset, "y_val", None) is not None)
    keys = ARRAYS if has_val else ("x_train", "y_train")
    arrays = {k: getattr(dataset, k) for k in keys}
    _check_arrays(arrays, source)
    want = tuple(None if d is None or int(d) < 0 else int(d) for d in input_shape)
    for key in [k for k in ("x_train", "x_val") if k in arrays]:
        got = tuple(arrays[key].shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise DataError(
                f"{key} has the wrong per-sample shape for the model", where=f"{source}: {key}",
                expected=f"samples of shape {shape_text(want)} (the model's input)",
                received=f"samples of shape {shape_text(got)} (array {shape_text(arrays[key].shape)})",
                fix=_reshape_hint(key, got, want),
            )
    if num_classes is None:
        return
    for label_key in [k for k in ("y_train", "y_val") if k in arrays]:
        y = arrays[label_key]
        top = int(y.max())
        if top >= num_classes:
            raise DataError(
                f"{label_key} holds a label the model cannot output", where=f"{source}: {label_key}",
                expected=f"class ids 0..{num_classes - 1} (the model has {num_classes} outputs)",
                received=f"label {top} ({int(np.sum(y >= num_classes))} samples >= {num_classes})",
                fix="Use a model with one output per class, or remap the labels to 0..N-1",
            )


def absent_classes(dataset: Dataset, num_classes: int) -> dict[str, list[int]]:
    """Class ids 0..num_classes-1 with no sample, per label split ("y_train", "y_val"); complete splits are left out.

    A small data set may well lack a class the model outputs: that is worth a
    warning (fine-tuning never sees it), not a refusal. Labels at or above
    `num_classes` are `check_compatible`'s error.
    """
    out = {}
    for key in ("y_train", "y_val"):
        y = np.asarray(getattr(dataset, key)).reshape(-1).astype(np.int64)
        present = np.bincount(y[(y >= 0) & (y < num_classes)], minlength=num_classes)
        missing = [int(c) for c in np.flatnonzero(present == 0)]
        if missing:
            out[key] = missing
    return out


def input_range(dataset: Dataset) -> str:
    """'inputs range from -3 to 1e+30 (...)' for messages that name the data's scale as the cause."""
    lo = float(min(np.min(dataset.x_train), np.min(dataset.x_val)))
    hi = float(max(np.max(dataset.x_train), np.max(dataset.x_val)))
    huge = max(abs(lo), abs(hi)) > _HUGE_INPUT
    return f"inputs range from {lo:.3g} to {hi:.3g}" + (" (far beyond what a float32 network can take)"
                                                         if huge else "")


def shape_text(shape: Sequence[int | None]) -> str:
    """(8, 8, 1) or (None, 10) as text; a 1-tuple keeps its comma."""
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _reshape_hint(key: str, got: tuple, want: tuple) -> str:
    if None not in want and int(np.prod(got)) == int(np.prod(want)):
        if (*got, 1) == want:
            return f"Add a channel axis: {key} = {key}[..., None]"
        return f"Reshape it: {key} = {key}.reshape((-1,) + {tuple(want)})"
    return "Resize or re-extract the features so each sample matches the model's input"


def _check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    """Model-independent checks of the arrays given: non-empty, numeric, finite, integer 1-D labels, x/y lengths."""
    for key in [k for k in ARRAYS if k in arrays]:
        a = arrays[key]
        where = f"{source}: {key}"
        if not isinstance(a, np.ndarray):
            raise DataError(f"{key} is not a numpy array", where=where, expected="numpy.ndarray",
                            received=type(a).__name__, fix="Convert it with numpy.asarray")
        if a.ndim == 0 or a.shape[0] == 0:
            raise DataError(f"{key} is empty", where=where, expected="at least one sample",
                            received=f"array of shape {shape_text(a.shape)}", fix="Fill both splits with samples")
        if a.dtype.kind not in "iuf":
            raise DataError(
                f"{key} is not numeric", where=where, expected="an integer or float array",
                received=f"dtype {a.dtype}",
                fix="Convert it with .astype('float32')" if key.startswith("x")
                else "Store integer class ids with .astype('int64')",
            )
    for key in [k for k in ("x_train", "x_val") if k in arrays]:
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
    for key in [k for k in ("y_train", "y_val") if k in arrays]:
        y = arrays[key]
        where = f"{source}: {key}"
        if y.ndim == 2 and y.shape[1] > 1:
            raise DataError(
                f"{key} looks one-hot encoded", where=where, expected="1-D integer class ids, shape (N,)",
                received=f"array of shape {shape_text(y.shape)}", fix=f"Store class ids: {key} = {key}.argmax(axis=1)",
            )
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise DataError(f"{key} is not a 1-D array of labels", where=where,
                            expected="shape (N,)", received=f"shape {shape_text(y.shape)}",
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
    for split in [s for s in ("train", "val") if f"x_{s}" in arrays]:
        nx, ny = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if nx != ny:
            raise DataError(
                f"x_{split} and y_{split} have different lengths", where=f"{source}: y_{split}",
                expected=f"one label per sample ({nx})", received=f"{ny} labels for {nx} samples",
                fix="Save matching arrays",
            )
    if "x_val" in arrays and arrays["x_train"].shape[1:] != arrays["x_val"].shape[1:]:
        raise DataError(
            "x_train and x_val have different sample shapes", where=f"{source}: x_val",
            expected=f"samples of shape {shape_text(arrays['x_train'].shape[1:])} like x_train",
            received=f"samples of shape {shape_text(arrays['x_val'].shape[1:])}", fix="Save both splits with one shape",
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
    if any(d is None for d in input_shape):
        raise DataError("Cannot generate data for a variable-size input", where="generate_for_model",
                        expected="a fixed per-sample shape", received=shape_text(input_shape),
                        fix="Pass the input shape with concrete sizes")
    shape = tuple(int(d) for d in input_shape if d is not None)
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
                   source=f"synthetic data for input {shape_text(shape)} (seed {seed})")


def _prototype(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth random pattern: coarse noise upsampled 4x over the spatial axes, plus a channel offset."""
    spatial = len(shape) - 1 if len(shape) > 1 else len(shape)  # the last axis of an image is channels
    pattern = rng.standard_normal(tuple(max(1, (d + 3) // 4) if i < spatial else d for i, d in enumerate(shape)))
    for axis in range(spatial):
        pattern = np.repeat(pattern, 4, axis=axis)[(slice(None),) * axis + (slice(0, shape[axis]),)]
    offset = rng.standard_normal(shape[-1:] if shape else ()) * 0.5
    return (pattern + offset).astype(np.float32)
