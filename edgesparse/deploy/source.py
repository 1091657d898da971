"""What a bundle is made from: the verified build (model, report, labels) and one test input.

Why its own module: every target (rpi, android, mcu) starts from the same
checked build and the same test input, and a bundle must carry exactly what
was verified. The build directory's contract (file names, the artifact's sha256
check, sample.npz and labels.txt) is `edgesparse.builddir`'s; this module only
reads it. Nothing here regenerates a data set: the test input is `--sample` or
the first input of the build's sample.npz.

Raises `DeployError` (a build that cannot be deployed), `ModelError` (a
missing or altered model.tflite) and `DataError` (labels, samples); all exit 2.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.builddir import LABELS, SAMPLE, load_report, read_verified_artifact
from edgesparse.data import IMAGE_SUFFIXES, audio, read_image
from edgesparse.errors import DataError, EdgesparseError
from edgesparse.tflite.graph import input_shape

__all__ = [
    "BuildInfo",
    "DeployError",
    "Sample",
    "load_build",
    "npy_bytes",
    "resolve_sample",
]

_REBUILD = ("Rebuild with `edgesparse build` (it writes sample.npz and labels.txt), or pass --sample FILE "
            "(.npy of one model input, .wav for keyword spotting, or a picture for a vision model)")


class DeployError(EdgesparseError):
    """A bundle could not be made or pushed (bad build, unreachable host, refused key)."""


@dataclass
class BuildInfo:
    """A build directory, checked: its model bytes match report.json, and it passed (or --force)."""

    path: Path
    model_bytes: bytes
    report: dict[str, Any]
    input_shape: tuple[int, ...]
    kind: str                            # "kws" (49x10 MFCCs from edgesparse.data.audio) | "vision"
    name: str
    labels: list[str]


@dataclass
class Sample:
    """The one test input a bundle carries, and what it is as a model input."""

    file_name: str          # as shipped in the bundle: test_input.wav / test_input.npy / test_input.png
    file_bytes: bytes
    features: np.ndarray    # float32, the model input shape (no batch axis)
    label: int | None       # its class id, when known
    source: str             # where it came from, for bundle.json and the test vector's comment


def load_build(build_dir: Path, *, force: bool = False, labels: Path | None = None) -> BuildInfo:
    """Read and check a build directory; a failed build is refused unless `force`."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise DeployError("Build directory not found", where=str(build_dir),
                          expected="a directory written by `edgesparse build`", received="no such directory")
    report = load_report(build_dir)
    model_bytes = read_verified_artifact(build_dir, report)
    if report.get("passed") is False and not force:
        failures = "; ".join(report.get("failures") or []) or "report.json says passed: false"
        raise DeployError("The build did not pass its checks; refusing to deploy it", where=str(build_dir),
                          expected="a build with passed: true", received=failures,
                          fix="Fix the build, or pass --force to deploy it anyway")
    model = report.get("model") or {}
    shape = tuple(int(d) for d in model.get("input_shape") or input_shape(model_bytes))
    name = str(model.get("name") or build_dir.name)
    kind = "kws" if shape == tuple(audio.FEATURE_SHAPE) or name.lower().startswith("kws") else "vision"
    num_classes = int(model.get("num_classes") or (report.get("data") or {}).get("num_classes") or 0)
    return BuildInfo(path=build_dir, model_bytes=model_bytes, report=report, input_shape=shape, kind=kind,
                     name=name, labels=_labels(build_dir, report, num_classes, labels))


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError("The labels file is not readable text", where=str(path), expected="one class name per line",
                        received=getattr(exc, "strerror", None) or "not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _labels(build_dir: Path, report: dict[str, Any], num_classes: int, labels_file: Path | None) -> list[str]:
    """Class names: --labels, the build's labels.txt, report.json's, or class_<i>."""
    where = str(build_dir / LABELS)
    if labels_file is not None:
        if not Path(labels_file).is_file():
            raise DataError("Labels file not found", where=str(labels_file), expected="one class name per line",
                            received="no such file")
        found: list[str] | None = _read_lines(Path(labels_file))
        where = str(labels_file)
    elif (build_dir / LABELS).is_file():
        found = _read_lines(build_dir / LABELS)
    else:
        found = next(([str(v) for v in value] for table in ("data", "model")
                      if (value := (report.get(table) or {}).get("labels"))), None)
    if found is None:
        found = [f"class_{i}" for i in range(num_classes)]
    if num_classes and len(found) != num_classes:
        raise DataError("The labels do not match the model's outputs", where=where,
                        expected=f"{num_classes} labels", received=f"{len(found)}",
                        fix="Pass --labels FILE with one class name per line, in output order")
    return found


def npy_bytes(x: np.ndarray) -> bytes:
    """One model input as a float32 .npy file's bytes (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(x, np.float32), allow_pickle=False)
    return buffer.getvalue()


def resolve_sample(info: BuildInfo, sample: Path | None) -> Sample:
    """The test input a bundle carries: --sample, else the first input of the build's sample.npz."""
    if sample is not None:
        return _sample_from_file(info, Path(sample))
    return _sample_from_build(info)


def _sample_from_build(info: BuildInfo, index: int = 0) -> Sample:
    """x[index] and y[index] of the build's sample.npz (held-out validation inputs, as the model takes them)."""
    path = info.path / SAMPLE
    if not path.is_file():
        raise DataError("The build directory has no test sample", where=str(info.path),
                        expected=f"{SAMPLE} (written by `edgesparse build`)",
                        received=f"no {SAMPLE}: the build was made by an earlier edgesparse", fix=_REBUILD)
    try:
        with np.load(path, allow_pickle=False) as npz:
            x = np.asarray(npz["x"], np.float32)
            y = np.asarray(npz["y"]).reshape(-1) if "y" in npz.files else np.zeros(0, np.int64)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        raise DataError(f"{SAMPLE} is not readable", where=str(path),
                        expected="an .npz with arrays x (model inputs) and y (their labels)",
                        received="not such an .npz", fix=_REBUILD) from None
    size = int(np.prod(info.input_shape))
    if len(x) <= index or x[index].size != size:
        raise DataError(f"{SAMPLE} does not match the model input", where=str(path),
                        expected=f"at least {index + 1} inputs of {info.input_shape}", received=f"x of shape {x.shape}",
                        fix=_REBUILD)
    features = x[index].reshape(info.input_shape)
    label = int(y[index]) if len(y) > index and 0 <= int(y[index]) < len(info.labels) else None
    return Sample("test_input.npy", npy_bytes(features), features, label, f"{path}: x[{index}]")


def _sample_from_file(info: BuildInfo, path: Path) -> Sample:
    """--sample: a .wav (keyword spotting), a .npy of one model input, or a picture (vision)."""
    if not path.is_file():
        raise DataError("Sample file not found", where=str(path), expected="a .wav, .npy or picture",
                        received="no such file")
    suffix = path.suffix.lower()
    data = path.read_bytes()
    if suffix == ".wav":
        if info.kind != "kws":
            raise DataError("A .wav sample needs a keyword-spotting model", where=str(path),
                            expected=f"a .npy or picture for input {info.input_shape}", received="a .wav")
        samples, rate = audio.decode_wav(data, where=str(path))
        return Sample("test_input.wav", data, audio.features_for_model(samples, rate), None, str(path))
    if suffix == ".npy":
        try:
            x = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
        except (ValueError, OSError, EOFError):
            raise DataError("The sample is not a readable .npy", where=str(path),
                            expected="numpy.save of one model input (no pickles)", received="not such a file") from None
        if x.size != int(np.prod(info.input_shape)):
            raise DataError("The sample does not match the model input", where=str(path),
                            expected=f"{int(np.prod(info.input_shape))} values {info.input_shape}",
                            received=f"shape {x.shape}")
        x = x.reshape(info.input_shape)
        return Sample("test_input.npy", npy_bytes(x), x, None, str(path))
    if suffix in IMAGE_SUFFIXES and info.kind == "vision":
        x = read_image(path, input_shape=info.input_shape)
        return Sample(f"test_input{suffix}", data, x, None, str(path))
    raise DataError("Unsupported sample file", where=str(path),
                    expected=".wav (KWS), .npy, or a picture (" + ", ".join(IMAGE_SUFFIXES) + ") for a vision model",
                    received=suffix or "no suffix", fix="Save the model input with numpy.save(...)")
