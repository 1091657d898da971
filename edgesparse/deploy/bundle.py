"""Per-target deployment bundles, and pushing them to a device over ssh.

Why a bundle: what runs on the device must be exactly what was verified here,
and nothing more. A bundle is a self-contained directory (written atomically)
with the model, labels, the on-device app, a test input and the result the app
gives for it here; on a device the same app must print the same result.

    rpi      Python app (tflite-runtime or ai-edge-litert + numpy, no TensorFlow),
             requirements.txt, run.sh, a systemd unit; KWS bundles carry a copy
             of edgesparse/data/audio.py so the device computes the training MFCCs.
    android  model, labels, a LiteRT Interpreter integration note (Kotlin).
    mcu      a TFLite Micro C++ project: model_data.cc (alignas(16) g_model),
             main.cc with a MicroMutableOpResolver of exactly the model's ops,
             a tensor arena sized from the estimator's plan plus a margin, and
             a test vector; model_data.cc is compiled with arm-none-eabi-g++.

Public API:
    TARGETS, deploy(DeployOptions, progress=None) -> DeployResult
    make_bundle(build_dir, target, out=None, *, force=False, sample=None, ...) -> Bundle
    load_build(build_dir, *, force=False, labels=None) -> BuildInfo
    resolve_target("rpi4") -> ("rpi", None) | ("mcu", "nrf52840")
    parse_host("user@host[:path]", default_dir) -> Remote
    push_and_run(bundle, remote, *, port, identity, remote_python, remote_venv, ...) -> RemoteRun
    model_ops(model_bytes) -> list[str];  resolver_method(op) -> "AddConv2D"
    arena_size(model_bytes, profile, tflm_used) -> (bytes, why, short why)
    compile_model_data(project_dir, core) -> McuCompile
    tflite_runtime_hazards(model_bytes), pick_runtime(model_bytes, runtime, force=...)
    DeployError (exit 2)
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgesparse.errors import DataError, EdgesparseError, ModelError
from edgesparse.fsutil import atomic_write_bytes, atomic_write_text, check_output_free, staged_output_dir
from edgesparse.tflite.graph import input_shape
from edgesparse.tflite.graph import io_quantization as _io_quantization
from edgesparse.tflite.graph import op_types as model_ops

Progress = Callable[[str, dict], None]

TARGETS = ("rpi", "android", "mcu")
_TARGET_ALIASES = {"pi": "rpi", "raspberrypi": "rpi", "rpi3": "rpi", "rpi4": "rpi", "rpi5": "rpi",
                   "phone": "android", "microcontroller": "mcu", "tflm": "mcu"}

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# demos/ lives at the repository's top level (DESIGN.md); see demos_dir() for installed wheels.
DEMOS_DIR = PACKAGE_DIR.parent / "demos"

KWS_INPUT_SHAPE = (49, 10, 1)
DIGITS_LABELS = [str(i) for i in range(10)]

# Runtimes for a Linux board. tflite-runtime 2.14 has wheels for CPython <= 3.11 and needs
# numpy<2; newer Pythons (Raspberry Pi OS trixie: 3.13) get ai-edge-litert instead.
REQUIREMENTS = {
    "auto": ('tflite-runtime==2.14.0; python_version < "3.12"\n'
             'numpy>=1.23,<2; python_version < "3.12"\n'
             'ai-edge-litert==2.3.0; python_version >= "3.12"\n'
             'numpy>=1.26; python_version >= "3.12"\n'),
    "tflite-runtime": "tflite-runtime==2.14.0\nnumpy>=1.23,<2\n",
    "ai-edge-litert": "ai-edge-litert==2.3.0\nnumpy>=1.23.2\n",
}

# Arm cores by profile name; ESP32-S3 is Xtensa (no arm-none-eabi build).
_FPV4 = ("-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
CORE_FLAGS = {
    "cortex-m4": ("-mcpu=cortex-m4",) + _FPV4,
    "cortex-m33": ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
    "cortex-m7": ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
    "cortex-m0plus": ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
}
PROFILE_CORES = {"nrf52840": "cortex-m4", "stm32l4r5": "cortex-m4", "ek_ra6m4": "cortex-m33",
                 "stm32h7a3": "cortex-m7", "rp2040": "cortex-m0plus", "esp32s3": "xtensa-lx7",
                 "esp32_s3": "xtensa-lx7"}

ARENA_MARGIN_FRACTION = 0.25
ARENA_MARGIN_MIN_BYTES = 2048

# Builtin operator names whose MicroMutableOpResolver method is not the plain CamelCase.
_RESOLVER_EXCEPTIONS = {"PADV2": "AddPadV2", "CUMSUM": "AddCumSum",
                        "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
                        "LOG_SOFTMAX": "AddLogSoftmax", "BATCH_MATMUL": "AddBatchMatMul"}
_NOT_IN_TFLM = {"DENSIFY": "TFLM cannot expand sparse weights: rebuild for a TFLM profile "
                           "(edgesparse build --profile nrf52840 ...), which writes a dense int8 flatbuffer",
                "CUSTOM": "register the custom kernel in main.cc yourself (resolver.AddCustom)"}


class DeployError(EdgesparseError):
    """A bundle could not be made or pushed (bad build, unreachable host, refused key)."""


# ----------------------------------------------------------------------------- options, results

@dataclass
class DeployOptions:
    """Every knob of `edgesparse deploy`."""

    build_dir: Path
    target: str = "rpi"
    out: Path | None = None
    force: bool = False
    host: str | None = None
    port: int = 22
    identity: Path | None = None
    sample: Path | None = None
    labels: Path | None = None
    profile: str | None = None          # mcu: the TFLM profile that picks the core and sizes the arena
    runtime: str = "auto"               # rpi requirements: auto | tflite-runtime | ai-edge-litert
    remote_python: str = "python3"
    remote_venv: str | None = None      # default: <remote path>/venv; an existing venv is reused
    fresh_venv: bool = False
    skip_install: bool = False
    connect_timeout: int = 10
    run_timeout: int = 900


@dataclass
class McuCompile:
    compiler: str | None
    core: str
    flags: list[str]
    object_file: str | None
    flash_bytes: int | None              # text+data of model_data.o (arm-none-eabi-size)
    rodata_bytes: int | None
    alignment: int | None                # of the section that holds g_model
    skipped: str | None = None           # why no compile happened (Xtensa, no toolchain)


@dataclass
class Bundle:
    path: Path
    target: str
    kind: str                            # "kws" | "vision"
    files: list[str]
    test_input: str | None
    expected: dict[str, Any] | None      # what the app printed here for the test input
    mcu: McuCompile | None = None
    arena_bytes: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Remote:
    user: str
    host: str
    path: str

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


@dataclass
class RemoteRun:
    destination: str
    path: str
    venv: str
    result: dict[str, Any]
    matches_local: bool
    transfer: str                        # "rsync" | "tar over ssh"


@dataclass
class DeployResult:
    bundle: Bundle
    remote: RemoteRun | None = None


def _noop(event: str, fields: dict) -> None:
    return None


def demos_dir() -> Path:
    """demos/ of a source checkout; in a wheel, the same files mapped to the package `edgesparse._demos`."""
    for candidate in (DEMOS_DIR, PACKAGE_DIR / "_demos"):
        if (candidate / "rpi").is_dir():
            return candidate
    raise DeployError("The demo app templates are missing", where=str(DEMOS_DIR),
                      expected="demos/rpi, demos/mcu, demos/android beside the edgesparse package",
                      received="no such directory",
                      fix="Run edgesparse from a source checkout (pip install -e .), or reinstall it")


def normalise_target(target: str) -> str:
    """'rpi'|'android'|'mcu', an alias ('rpi4', 'phone'), or a device profile name ('nrf52840')."""
    return resolve_target(target)[0]


def resolve_target(target: str) -> tuple[str, str | None]:
    """(target, profile name or None): a profile name picks its class's target and itself as the profile."""
    name = _TARGET_ALIASES.get(target.lower(), target.lower())
    if name in TARGETS:
        return name, None
    from edgesparse.profiles.profile import available_profiles, load_profile

    if target in available_profiles():
        device_class = load_profile(target).device_class
        by_class = {"sbc": "rpi", "phone": "android", "mcu": "mcu"}
        if device_class in by_class:
            return by_class[device_class], target
    raise DeployError("Unknown deploy target", where="--target",
                      expected=" | ".join(TARGETS) + ", or a phone/sbc/mcu profile name",
                      received=repr(target))


# ----------------------------------------------------------------------------- the build

@dataclass
class BuildInfo:
    path: Path
    model_bytes: bytes
    report: dict[str, Any]
    input_shape: tuple[int, ...]
    kind: str
    name: str
    labels: list[str]


def load_build(build_dir: Path, *, force: bool = False, labels: Path | None = None) -> BuildInfo:
    """Read and check a build directory; a failed build is refused unless `force`."""
    from edgesparse.report.document import load_report

    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise DeployError("Build directory not found", where=str(build_dir),
                          expected="a directory written by `edgesparse build`", received="no such directory")
    model_path = build_dir / "model.tflite"
    if not model_path.is_file():
        raise ModelError("No model.tflite in the build directory", where=str(build_dir),
                         expected="model.tflite and report.json from `edgesparse build`", received="no model.tflite")
    report = load_report(build_dir)
    model_bytes = model_path.read_bytes()
    recorded = ((report.get("files") or {}).get("model.tflite") or {}).get("sha256")
    if recorded and recorded != hashlib.sha256(model_bytes).hexdigest():
        raise ModelError("model.tflite is not the file report.json describes", where=str(model_path),
                         expected=f"sha256 {recorded}", received=f"sha256 {hashlib.sha256(model_bytes).hexdigest()}",
                         fix="Rebuild with `edgesparse build`, or restore the original model.tflite")
    if report.get("passed") is False and not force:
        failures = "; ".join(report.get("failures") or []) or "report.json says passed: false"
        raise DeployError("The build did not pass its checks; refusing to deploy it", where=str(build_dir),
                          expected="a build with passed: true", received=failures,
                          fix="Fix the build, or pass --force to deploy it anyway")
    model = report.get("model") or {}
    shape = tuple(int(d) for d in model.get("input_shape") or input_shape(model_bytes))
    name = str(model.get("name") or build_dir.name)
    kind = "kws" if shape == KWS_INPUT_SHAPE or name.lower().startswith("kws") else "vision"
    num_classes = int(model.get("num_classes") or (report.get("data") or {}).get("num_classes") or 0)
    return BuildInfo(path=build_dir, model_bytes=model_bytes, report=report, input_shape=shape, kind=kind,
                     name=name, labels=_labels(build_dir, report, name, kind, num_classes, labels))


def _labels(build_dir: Path, report: dict, name: str, kind: str, num_classes: int,
            labels_file: Path | None) -> list[str]:
    """Class names: --labels, labels.txt in the build, report.json, the demo's, or class_<i>."""
    found: list[str] | None = None
    for candidate in (labels_file, build_dir / "labels.txt"):
        if candidate is not None and Path(candidate).is_file():
            found = [line.strip() for line in Path(candidate).read_text("utf-8").splitlines() if line.strip()]
            break
        if candidate is labels_file and labels_file is not None:
            raise DataError("Labels file not found", where=str(labels_file), expected="one class name per line",
                            received="no such file")
    if found is None:
        found = _npz_labels(report)
    if found is None:
        for table in ("data", "model"):
            value = (report.get(table) or {}).get("labels")
            if value:
                found = [str(v) for v in value]
                break
    if found is None and kind == "kws":
        found = _kws_labels()
    if found is None and name == "digits":
        found = DIGITS_LABELS
    if found is None:
        found = [f"class_{i}" for i in range(num_classes)]
    if num_classes and len(found) != num_classes:
        raise DataError("The labels do not match the model's outputs", where=str(labels_file or build_dir),
                        expected=f"{num_classes} labels", received=f"{len(found)}",
                        fix="Pass --labels FILE with one class name per line, in output order")
    return found


def _npz_labels(report: dict) -> list[str] | None:
    """The `labels` array of the build's .npz data set, when it has one."""
    for value in ((report.get("data") or {}).get("source"), (report.get("options") or {}).get("data")):
        path = Path(str(value)) if value else None
        if path is not None and path.suffix == ".npz" and path.is_file():
            with np.load(path, allow_pickle=False) as npz:
                if "labels" in npz.files:
                    return [str(v) for v in npz["labels"].reshape(-1)]
    return None


def _kws_labels() -> list[str] | None:
    try:
        from edgesparse.pipeline.demos import kws
    except ImportError:
        return None
    labels = getattr(kws, "LABELS", None)
    return [str(v) for v in labels] if labels else None


# ----------------------------------------------------------------------------- samples

@dataclass
class Sample:
    file_name: str          # as shipped in the bundle: test_input.wav / test_input.npy
    file_bytes: bytes
    features: np.ndarray    # float32, the model input shape (no batch axis)
    label: int | None
    source: str


def resolve_sample(info: BuildInfo, sample: Path | None, *, prefer_validation: bool = False) -> Sample:
    """The test input a bundle carries: --sample, else one from the build's validation data."""
    if sample is not None:
        return _sample_from_file(info, Path(sample))
    if info.kind == "kws" and not prefer_validation:
        wav = _kws_wav(info)
        if wav is None:
            raise DataError("No test recording for the keyword-spotting bundle", where=str(info.path),
                            expected="a .wav to ship as the test input", received="none found",
                            fix="Pass --sample CLIP.wav")
        return wav
    x, y, source = _validation_sample(info)
    return Sample("test_input.npy", _npy_bytes(x), x, y, source)


def _npy_bytes(x: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(x, np.float32), allow_pickle=False)
    return buffer.getvalue()


def _sample_from_file(info: BuildInfo, path: Path) -> Sample:
    if not path.is_file():
        raise DataError("Sample file not found", where=str(path), expected="a .wav, .npy or picture",
                        received="no such file")
    suffix = path.suffix.lower()
    data = path.read_bytes()
    if suffix == ".wav":
        if info.kind != "kws":
            raise DataError("A .wav sample needs a keyword-spotting model", where=str(path),
                            expected=f"a .npy or picture for input {info.input_shape}", received="a .wav")
        from edgesparse.data import audio

        samples, rate = audio.decode_wav(data, where=str(path))
        return Sample("test_input.wav", data, audio.features_for_model(samples, rate), None, str(path))
    if suffix == ".npy":
        x = np.load(path, allow_pickle=False).astype(np.float32)
        if x.size != int(np.prod(info.input_shape)):
            raise DataError("The sample does not match the model input", where=str(path),
                            expected=f"{int(np.prod(info.input_shape))} values {info.input_shape}",
                            received=f"shape {x.shape}")
        x = x.reshape(info.input_shape)
        return Sample("test_input.npy", _npy_bytes(x), x, None, str(path))
    from edgesparse.data.dataset import IMAGE_SUFFIXES, read_image

    if suffix in IMAGE_SUFFIXES and info.kind == "vision":
        x = read_image(path, input_shape=info.input_shape)
        return Sample(f"test_input{suffix}", data, x, None, str(path))
    raise DataError("Unsupported sample file", where=str(path),
                    expected=".wav (KWS), .npy, or a picture (" + ", ".join(IMAGE_SUFFIXES) + ") for a vision model",
                    received=suffix or "no suffix", fix="Save the model input with numpy.save(...)")


def _validation_sample(info: BuildInfo, index: int = 0) -> tuple[np.ndarray, int | None, str]:
    """x_val[index] of the build's data set: its .npz, or the built-in demo's."""
    data = info.report.get("data") or {}
    source = str(data.get("source") or "")
    model_source = str((info.report.get("model") or {}).get("source") or "")
    candidates = [Path(source)] if source.endswith(".npz") else []
    opts = info.report.get("options") or {}
    if opts.get("data"):
        candidates.append(Path(str(opts["data"])))
    for path in candidates:
        if path.is_file():
            with np.load(path, allow_pickle=False) as npz:
                x = np.asarray(npz["x_val"][index], np.float32).reshape(info.input_shape)
                y = int(np.asarray(npz["y_val"][index]).reshape(-1)[0]) if "y_val" in npz.files else None
            return x, y, f"{path}: x_val[{index}]"
    folder = Path(str(opts["data"])) if opts.get("data") else None
    if folder is not None and folder.is_dir():
        from edgesparse.data.dataset import folder_kind, load_image_folder

        seed = int(opts.get("seed", 0) or 0)
        if folder_kind(folder) == "images":
            dataset = load_image_folder(folder, input_shape=info.input_shape, seed=seed)
        else:
            from edgesparse.pipeline.demos.kws import load_folder

            dataset = load_folder(folder, seed=seed).dataset
        x = np.asarray(dataset.x_val[index], np.float32).reshape(info.input_shape)
        return x, int(dataset.y_val[index]), f"{folder}: validation sample {index}"
    if model_source.startswith("demo:") or source.startswith("demo"):
        dataset = _demo_dataset(model_source.split(":", 1)[-1] or info.name)
        if dataset is not None:
            x = np.asarray(dataset.x_val[index], np.float32).reshape(info.input_shape)
            return x, int(dataset.y_val[index]), f"{model_source or source}: x_val[{index}]"
    raise DataError("Cannot find the build's validation data for a test input", where=str(info.path),
                    expected="report.json data.source pointing at an existing .npz, or a built-in demo",
                    received=source or "no data source", fix="Pass --sample FILE (.npy of one model input, or .wav)")


def _demo_dataset(name: str):
    if name == "digits":
        from edgesparse.pipeline.demos import digits as demo

        return demo.load_digits_dataset()
    if name.startswith("kws"):
        try:
            from edgesparse.pipeline.demos import kws
        except ImportError:
            return None
        return kws.synthetic_splits().dataset
    return None


def _kws_wav(info: BuildInfo) -> Sample | None:
    """A spoken keyword for the KWS bundle, made by the demo's own synthesiser (espeak-ng, en-us)."""
    from edgesparse.data import audio

    words = [label for label in info.labels if label not in ("silence", "unknown") and not label.startswith("_")]
    if not words:
        return None
    word = "yes" if "yes" in words else words[0]
    try:
        from edgesparse.pipeline.demos import kws

        samples = kws.synthesize(word, "en-us")
    except (ImportError, AttributeError):
        return None
    except DataError as exc:
        raise DataError("Cannot make a test recording for the keyword-spotting bundle", where=f"'{word}'",
                        received=exc.what, fix="Pass --sample CLIP.wav, or install espeak-ng") from None
    data = audio.wav_bytes(audio.fit_length(samples, audio.SAMPLE_RATE))
    decoded, rate = audio.decode_wav(data, where=f"spoken '{word}'")
    return Sample("test_input.wav", data, audio.features_for_model(decoded, rate), info.labels.index(word),
                  f"'{word}' spoken by espeak-ng (en-us) via kws.synthesize")


# ----------------------------------------------------------------------------- flatbuffer

def resolver_method(op: str) -> str:
    """BuiltinOperator name -> MicroMutableOpResolver method ('DEPTHWISE_CONV_2D' -> 'AddDepthwiseConv2D')."""
    if op in _RESOLVER_EXCEPTIONS:
        return _RESOLVER_EXCEPTIONS[op]
    return "Add" + "".join(part if re.fullmatch(r"\d+D", part) else part.capitalize() for part in op.split("_"))


# ----------------------------------------------------------------------------- bundles

def default_out(build_dir: Path, target: str) -> Path:
    build_dir = Path(build_dir)
    return build_dir.parent / f"{build_dir.resolve().name}-{target}"


def make_bundle(build_dir: Path, target: str, out: Path | None = None, *, force: bool = False,
                sample: Path | None = None, labels: Path | None = None, profile: str | None = None,
                runtime: str = "auto", remote: Remote | None = None,
                progress: Progress | None = None) -> Bundle:
    """Write the bundle for `target` atomically; refuse to overwrite without `force`."""
    progress = progress or _noop
    target, target_profile = resolve_target(target)
    profile = profile or target_profile
    info = load_build(build_dir, force=force, labels=labels)
    out = Path(out) if out else default_out(info.path, target)
    if runtime not in REQUIREMENTS:
        raise DeployError("Unknown runtime for the bundle", where="--runtime",
                          expected=" | ".join(REQUIREMENTS), received=repr(runtime))
    check_output_free(out, force)
    runtime_notes: list[str] = []
    if target == "rpi":
        runtime, runtime_notes = pick_runtime(info.model_bytes, runtime, force=force)
    progress("stage", {"name": "sample", "description": "Choosing the test input"})
    smp = resolve_sample(info, sample, prefer_validation=(target == "mcu"))
    with staged_output_dir(out, force) as staging:
        progress("stage", {"name": "bundle", "description": f"Writing the {target} bundle"})
        if target == "rpi":
            bundle = _write_rpi(staging, info, smp, runtime=runtime, remote=remote)
            bundle.notes += runtime_notes
        elif target == "android":
            bundle = _write_android(staging, info, smp)
        else:
            bundle = _write_mcu(staging, info, smp, profile=profile, progress=progress)
        bundle.files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        atomic_write_text(staging / "bundle.json", json.dumps(_bundle_manifest(bundle, info, smp), indent=2) + "\n")
    bundle.path = out
    return bundle


def tflite_runtime_hazards(model_bytes: bytes) -> list[str]:
    """Weights tflite-runtime 2.14 computes wrongly: int8 block-sparse tensors FULLY_CONNECTED reads itself.

    Checked on this machine: for such a model (TF 2.21 converter, 1x16 blocks)
    tflite-runtime 2.14 returns the same output for every input, without an
    error, with and without XNNPACK; LiteRT 2.3 runs it correctly. DENSIFY'd
    sparse weights (any op) run correctly in both.
    """
    from edgesparse.tflite import edit as tflite_edit

    return [t.name for t in tflite_edit.sparse_encoding_report(model_bytes)
            if t.block_size and str(t.dtype).upper() == "INT8" and "FULLY_CONNECTED" in (t.consumers or [])]


def pick_runtime(model_bytes: bytes, runtime: str, *, force: bool = False) -> tuple[str, list[str]]:
    """The requirements.txt variant for a Linux board: avoid tflite-runtime where it is known to be wrong."""
    hazards = tflite_runtime_hazards(model_bytes)
    if not hazards or runtime == "ai-edge-litert":
        return runtime, []
    why = (f"tflite-runtime 2.14 computes the block-sparse int8 FULLY_CONNECTED weights of this model "
           f"({len(hazards)} tensor(s), e.g. {hazards[0]}) wrongly: the same output for every input")
    if runtime == "auto":
        return "ai-edge-litert", [f"{why}; requirements.txt installs ai-edge-litert instead"]
    if not force:
        raise DeployError("This model does not run correctly in tflite-runtime 2.14", where="--runtime tflite-runtime",
                          expected="a runtime that reads block-sparse int8 FULLY_CONNECTED weights",
                          received=why,
                          fix="Use --runtime ai-edge-litert (or auto), or rebuild for a profile without "
                              "sparse_weights; --force deploys it anyway")
    return runtime, [f"{why}; deployed with tflite-runtime because of --force"]


def _bundle_manifest(bundle: Bundle, info: BuildInfo, smp: Sample) -> dict[str, Any]:
    from edgesparse import __version__

    return {"tool": {"name": "edgesparse", "version": __version__}, "target": bundle.target, "kind": bundle.kind,
            "build_dir": str(info.path.resolve()), "model": info.name,
            "model_sha256": hashlib.sha256(info.model_bytes).hexdigest(),
            "profile": (info.report.get("profile") or {}).get("name"),
            "test_input": bundle.test_input, "test_input_source": smp.source, "test_input_label": smp.label,
            "expected": bundle.expected, "arena_bytes": bundle.arena_bytes,
            "mcu_compile": asdict(bundle.mcu) if bundle.mcu else None, "notes": bundle.notes,
            "files": bundle.files}


def _fill(template: str, values: dict[str, Any]) -> str:
    """Replace @KEY@ placeholders; a placeholder left over is a bug in the template."""
    text = template
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise EdgesparseError("A demo template has unfilled placeholders", received=", ".join(sorted(set(left))))
    return text


def _template(*parts: str) -> str:
    return demos_dir().joinpath(*parts).read_text("utf-8")


def _copy_feature_code(lib: Path) -> list[str]:
    """Copy edgesparse/data/audio.py (and errors.py, which it imports) as they are, after checking their imports.

    The device must compute the training features, so the code is the training
    code itself, never a second implementation.
    """
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    docstring = '"""The subset of edgesparse the on-device app needs (copied by `edgesparse deploy`)."""\n'
    copied = []
    for relative in ("data/audio.py", "errors.py"):
        source = (PACKAGE_DIR / relative).read_text("utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [("." * node.level) + (node.module or "")]
            else:
                continue
            for module in modules:
                if module != "edgesparse.errors" and module.split(".")[0] not in allowed:
                    raise DeployError("The feature code imports something the device will not have",
                                      where=f"edgesparse/{relative}", expected="stdlib and numpy only",
                                      received=module, fix="Keep edgesparse/data/audio.py free of TensorFlow and scipy")
        target = lib / "edgesparse" / relative
        for folder in (lib / "edgesparse", target.parent):
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "__init__.py").exists():
                atomic_write_text(folder / "__init__.py", docstring)
        shutil.copyfile(PACKAGE_DIR / relative, target)
        copied.append(f"lib/edgesparse/{relative}")
    return copied


def _run_local_app(bundle_dir: Path, app: str, test_input: str) -> dict[str, Any]:
    """Run the bundle's own app here (ai_edge_litert) on its test input: the expected device result."""
    proc = subprocess.run([sys.executable, str(bundle_dir / app), str(bundle_dir / test_input), "--json",
                           "--repeat", "3"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        raise EdgesparseError("The bundled app failed on its own test input here", where=app,
                              received=(proc.stderr.strip().splitlines() or ["no output"])[-1],
                              fix="This is a bug in edgesparse; run the app by hand to see the traceback")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record["input"] = test_input
    return record


def _write_rpi(staging: Path, info: BuildInfo, smp: Sample, *, runtime: str, remote: Remote | None) -> Bundle:
    app = "kws_app.py" if info.kind == "kws" else "vision_app.py"
    rpi = demos_dir() / "rpi"
    atomic_write_bytes(staging / "model.tflite", info.model_bytes)
    atomic_write_text(staging / "labels.txt", "\n".join(info.labels) + "\n")
    for name in ("edgesparse_app.py", app):
        shutil.copyfile(rpi / name, staging / name)
    if info.kind == "kws":
        _copy_feature_code(staging / "lib")
    atomic_write_bytes(staging / smp.file_name, smp.file_bytes)
    config: dict[str, Any] = {"model": "model.tflite", "labels": "labels.txt", "kind": info.kind,
                              "input_shape": list(info.input_shape), "test_input": smp.file_name}
    if info.kind == "vision":
        config["image"] = _image_mapping(info, smp)
    atomic_write_text(staging / "config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(staging / "requirements.txt",
                      "# The on-device runtime: no TensorFlow. sounddevice (microphone) is optional;\n"
                      "# install it yourself when needed.\n" + REQUIREMENTS[runtime]
                      + ("pillow>=9  # reads pictures\n" if info.kind == "vision" else ""))
    run_sh = _fill(_template("rpi", "run.sh"), {"APP": app})
    atomic_write_text(staging / "run.sh", run_sh)
    os.chmod(staging / "run.sh", 0o755)
    unit = f"edgesparse-{_slug(info.name)}.service"
    user = (remote.user if remote else "") or "pi"
    home = "/root" if user == "root" else f"/home/{user}"
    path = remote.path if remote else device_dir_name(info)
    directory = path if path.startswith("/") else f"{home}/{path.removeprefix('~/')}"
    atomic_write_text(staging / unit, _fill(_template("rpi", "edgesparse-app.service"), {
        "NAME": info.name, "UNIT": unit, "APP": app, "USER": user, "DIR": directory,
        "SERVICE_ARGS": "--mic" if info.kind == "kws" else f"--watch {directory}/inbox"}))
    expected = _run_local_app(staging, app, smp.file_name)
    expected["true_label"] = info.labels[smp.label] if smp.label is not None else None
    atomic_write_text(staging / "expected.json", json.dumps(expected, indent=2) + "\n")
    atomic_write_text(staging / "README.md", _fill(_template("rpi", "README.md"), {
        "NAME": info.name, "APP": app, "TEST_INPUT": smp.file_name, "UNIT": unit, "DIR": directory,
        "LABEL": expected["label"], "SCORE": f"{expected['score']:.3f}", "KIND": info.kind,
        "RUNTIME": expected["runtime"]}))
    return Bundle(path=staging, target="rpi", kind=info.kind, files=[], test_input=smp.file_name, expected=expected)


def device_dir_name(info: BuildInfo) -> str:
    return f"edgesparse-{_slug(info.name)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def _image_mapping(info: BuildInfo, smp: Sample) -> dict[str, Any]:
    """How a 0..255 picture maps to the training scale.

    A model trained on an image folder saw pixel / 255 (data.read_image), exactly.
    The built-in digits demo is ink-is-high on 0..1, so a dark-on-white picture is
    inverted first. For an .npz the scale is inferred from the test input's range
    (0..1, 0..16 or 0..255) and the config says it was inferred.
    """
    options = info.report.get("options") or {}
    if options.get("data") and Path(str(options["data"])).is_dir():
        return {"scale": 1.0 / 255.0, "offset": 0.0, "invert": False, "basis": "image folder: pixel / 255",
                "note": "pixel p (0..255) -> p * scale + offset, as data.read_image did in training"}
    demo = str((info.report.get("model") or {}).get("source") or "") == "demo:digits"
    top = float(np.max(smp.features))
    peak = 1.0 if top <= 1.0 + 1e-6 else 16.0 if top <= 16.0 + 1e-6 else 255.0
    return {"scale": peak / 255.0, "offset": 0.0, "invert": demo,
            "basis": "built-in digits demo" if demo else f"inferred from the test input's range (0..{peak:g})",
            "note": "pixel p (0..255, after `invert` maps dark ink to high values) -> p * scale + offset"}


# ----------------------------------------------------------------------------- android

def _write_android(staging: Path, info: BuildInfo, smp: Sample) -> Bundle:
    """Model, labels, a test input with its expected output, and the Kotlin integration note."""
    from edgesparse.runtime import verify

    assets = staging / "assets"
    atomic_write_bytes(assets / "model.tflite", info.model_bytes)
    atomic_write_text(assets / "labels.txt", "\n".join(info.labels) + "\n")
    x = smp.features[None].astype(np.float32)
    atomic_write_bytes(staging / "test_input.npy", _npy_bytes(smp.features))
    run = verify.run_tflite(info.model_bytes, x, runtime="litert")
    scores = np.asarray(run.outputs, np.float32).reshape(-1)
    best = int(np.argmax(scores))
    expected = {"label": info.labels[best], "index": best, "score": float(scores[best]),
                "scores": [float(s) for s in scores], "interpreter": run.interpreter}
    atomic_write_text(staging / "expected.json", json.dumps(expected, indent=2) + "\n")
    io = _io_quantization(info.model_bytes)
    atomic_write_text(staging / "README.md", _fill(_template("android", "README.md"), {
        "NAME": info.name, "INPUT_SHAPE": "x".join(str(d) for d in (1,) + info.input_shape),
        "INPUT_DTYPE": io["input"]["dtype"], "INPUT_SCALE": repr(io["input"]["scale"]),
        "INPUT_ZERO_POINT": io["input"]["zero_point"], "OUTPUT_DTYPE": io["output"]["dtype"],
        "OUTPUT_SCALE": repr(io["output"]["scale"]), "OUTPUT_ZERO_POINT": io["output"]["zero_point"],
        "NUM_CLASSES": len(info.labels), "LABEL": expected["label"], "SCORE": f"{expected['score']:.4f}",
        "FEATURES": ("MFCCs from edgesparse/data/audio.py (49 frames x 10 coefficients; port it to Kotlin and "
                     "check it against test_input.npy)" if info.kind == "kws"
                     else "the image scaled as in training (see test_input.npy for one model input)")}))
    return Bundle(path=staging, target="android", kind=info.kind, files=[], test_input="test_input.npy",
                  expected=expected, notes=["not run on a phone here: the note and expected.json are for the app"])


# ----------------------------------------------------------------------------- mcu

_CTYPES = {"int8": ("int8_t", "int8"), "uint8": ("uint8_t", "uint8"), "float32": ("float", "f")}


def _mcu_profile(info: BuildInfo, profile: str | None):
    from edgesparse.profiles.profile import load_profile

    name = profile or (info.report.get("profile") or {}).get("name")
    prof = load_profile(name) if name else None
    if prof is None or prof.device_class != "mcu":
        raise DeployError("A microcontroller bundle needs a microcontroller profile", where="--profile",
                          expected="an mcu profile such as nrf52840, stm32l4r5, ek_ra6m4, stm32h7a3, rp2040",
                          received=f"{name} ({prof.device_class})" if prof else "none",
                          fix="Pass --profile NAME (it picks the core and sizes the tensor arena)")
    return prof


def core_for_profile(prof) -> str:
    """The CPU core of a profile: by name, else from [device] cpu ("Cortex-M4F" -> cortex-m4)."""
    if prof.name in PROFILE_CORES:
        return PROFILE_CORES[prof.name]
    cpu = str(prof.raw.get("device", {}).get("cpu", "")).lower().replace(" ", "")
    if "xtensa" in cpu or "esp32" in cpu:
        return "xtensa"
    match = re.search(r"cortex-?m(\d+)(plus|\+)?", cpu)
    if match:
        core = f"cortex-m{match.group(1)}" + ("plus" if match.group(2) else "")
        if core in CORE_FLAGS:
            return core
    return "unknown"


def quantize_input(x: np.ndarray, io: dict[str, Any]) -> np.ndarray:
    """Float features -> the input tensor's type, the way verify.run_tflite quantizes (float64)."""
    dtype = np.dtype(io["dtype"])
    if dtype.kind == "f" or not io["scale"]:
        return np.asarray(x, dtype)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / io["scale"]) + io["zero_point"]
    return np.clip(q, info.min, info.max).astype(dtype)


def arena_size(model_bytes: bytes, prof, tflm_used: int | None) -> tuple[int, str, str]:
    """Tensor arena bytes for main.cc, a sentence saying where the figure comes from, and a short form.

    The estimator's plan is for the profile's 32-bit layout and kernels (CMSIS-NN
    scratch included); the TFLM Python run is the real allocator, on a 64-bit host
    with reference kernels. The larger of the two, plus a margin, is taken.
    """
    planned = None
    try:
        from edgesparse.estimate import latency as estimate

        ram = estimate.check_model(model_bytes, prof).ram
        planned = int(ram.total_bytes - ram.breakdown.get("runtime_persistent_ram", 0))
        basis = f"the estimator's TFLM plan ({ram.method}) = {planned} bytes"
    except (ImportError, AttributeError, EdgesparseError) as exc:
        basis = f"the estimator was unavailable ({exc})"
    base = planned
    if tflm_used is not None and (base is None or tflm_used > base):
        base = tflm_used
        basis += f"; the TFLM Python interpreter used {tflm_used} bytes on this host, the larger, taken"
    elif tflm_used is not None:
        basis += f" (the TFLM Python interpreter used {tflm_used} bytes on this 64-bit host)"
    source = "estimator plan" if base == planned else "TFLM Python run"
    if base is None:
        raise DeployError("Cannot size the tensor arena", expected="the estimator's plan or a TFLM run",
                          received=basis, fix="Check that tflite-micro is installed")
    margin = max(ARENA_MARGIN_MIN_BYTES, int(np.ceil(base * ARENA_MARGIN_FRACTION)))
    size = (base + margin + 15) // 16 * 16
    long = (f"{basis}, plus a margin of max({ARENA_MARGIN_MIN_BYTES} B, "
            f"{int(ARENA_MARGIN_FRACTION * 100)}%) for kernel scratch and port differences")
    return size, long, f"tensor arena {size:,} B = {base:,} B ({source}) + margin"


def _c_array(values: np.ndarray, per_line: int, fmt: Callable[[Any], str]) -> str:
    items = [fmt(v) for v in values.reshape(-1).tolist()]
    return "\n".join("    " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line))


def _write_mcu(staging: Path, info: BuildInfo, smp: Sample, *, profile: str | None,
               progress: Progress) -> Bundle:
    from edgesparse.runtime import verify

    prof = _mcu_profile(info, profile)
    ops = model_ops(info.model_bytes)
    for op in ops:
        if op in _NOT_IN_TFLM:
            raise DeployError(f"The model uses {op}, which TFLite Micro cannot run", where=str(info.path),
                              expected="a dense int8 flatbuffer from a TFLM profile build",
                              received=f"ops {', '.join(ops)}", fix=_NOT_IN_TFLM[op])
    io = _io_quantization(info.model_bytes)
    if io["input"]["dtype"] not in _CTYPES:
        raise DeployError("The model input type has no test-vector support", where="input 0",
                          expected="int8, uint8 or float32", received=io["input"]["dtype"],
                          fix="Build with --quantize int8 for a microcontroller")
    vector = quantize_input(smp.features[None], io["input"])
    progress("stage", {"name": "tflm", "description": "Running the test vector in TFLite Micro"})
    run = verify.run_tflite(info.model_bytes, vector, runtime="tflm")
    scores = np.asarray(run.outputs, np.float32).reshape(-1)
    best = int(np.argmax(scores))
    out_io = io["output"]
    q_best = int(round(scores[best] / out_io["scale"] + out_io["zero_point"])) if out_io["scale"] else scores[best]
    size, arena_basis, arena_short = arena_size(info.model_bytes, prof, run.arena_bytes)

    name = info.name
    sha = hashlib.sha256(info.model_bytes).hexdigest()
    model_array = np.frombuffer(info.model_bytes, np.uint8)
    files = {
        "model_data.h": _fill(_template("mcu", "model_data.h"),
                              {"NAME": name, "MODEL_BYTES": len(info.model_bytes), "MODEL_SHA256": sha}),
        "model_data.cc": _fill(_template("mcu", "model_data.cc"), {
            "NAME": name, "MODEL_BYTES": len(info.model_bytes), "MODEL_SHA256": sha,
            "BYTES": _c_array(model_array, 12, lambda v: f"0x{v:02x}")}),
    }
    ctype, field_name = _CTYPES[io["input"]["dtype"]]
    fmt = (lambda v: repr(float(v)) + "f") if ctype == "float" else str
    common = {"NAME": name, "COUNT": int(vector.size), "CTYPE": ctype,
              "SHAPE": "x".join(str(d) for d in io["input"]["shape"]), "SCALE": repr(io["input"]["scale"]),
              "ZERO_POINT": io["input"]["zero_point"]}
    files["test_vector.h"] = _fill(_template("mcu", "test_vector.h"), common)
    files["test_vector.cc"] = _fill(_template("mcu", "test_vector.cc"), {
        **common, "SOURCE": smp.source.replace("\n", " "),
        "TRUE_LABEL": info.labels[smp.label] if smp.label is not None else "unknown",
        "VALUES": _c_array(vector, 16, fmt)})
    out_ctype, out_field = _CTYPES.get(out_io["dtype"], ("float", "f"))
    dequantize = (f"(output->data.{out_field}[best] - ({out_io['zero_point']})) * {out_io['scale']!r}f"
                  if out_field != "f" else "output->data.f[best]")
    labels_c = ", ".join(json.dumps(label) for label in info.labels)
    files["main.cc"] = _fill(_template("mcu", "main.cc"), {
        "NAME": name, "EXPECTED_LABEL": info.labels[best], "EXPECTED_SCORE_Q": q_best,
        "ARENA_COMMENT": "\n".join("// " + line for line in textwrap.wrap("Tensor arena: " + arena_basis + ".", 96)),
        "ARENA_SIZE": size, "NUM_OPS": len(ops),
        "REGISTER_OPS": "\n".join(f"  if (resolver.{resolver_method(op)}() != kTfLiteOk) return kTfLiteError;"
                                  for op in ops),
        "LABELS": labels_c, "NUM_LABELS": len(info.labels), "EXPECTED_INDEX": best,
        "OUTPUT_FIELD": out_field, "DEQUANTIZE_BEST": dequantize})
    for file_name, text in files.items():
        atomic_write_text(staging / file_name, text)
    atomic_write_bytes(staging / "model.tflite", info.model_bytes)
    atomic_write_text(staging / "labels.txt", "\n".join(info.labels) + "\n")

    core = core_for_profile(prof)
    progress("stage", {"name": "compile", "description": f"Compiling model_data.cc for {core}"})
    compiled = compile_model_data(staging, core)
    expected = {"label": info.labels[best], "index": best, "score": float(scores[best]),
                "scores": [float(s) for s in scores], "interpreter": run.interpreter,
                "test_vector_sha256": hashlib.sha256(vector.tobytes()).hexdigest()}
    atomic_write_text(staging / "expected.json", json.dumps(expected, indent=2) + "\n")
    flash = (f"{compiled.flash_bytes:,} bytes (arm-none-eabi-size of model_data.o, {core})"
             if compiled.flash_bytes is not None else f"not compiled here: {compiled.skipped}")
    atomic_write_text(staging / "README.md", _fill(_template("mcu", "README.md"), {
        "NAME": name, "PROFILE": prof.name, "CORE": core, "FLAGS": " ".join(compiled.flags) or "(none)",
        "OPS": ", ".join(ops), "ARENA_SIZE": f"{size:,}", "ARENA_SOURCE": arena_basis,
        "LABEL": info.labels[best], "FLASH": flash, "MODEL_BYTES": f"{len(info.model_bytes):,}",
        "TFLM_ARENA": f"{run.arena_bytes:,}" if run.arena_bytes else "n/a"}))
    notes = [arena_short]
    if compiled.skipped:
        notes.append(compiled.skipped)
    return Bundle(path=staging, target="mcu", kind=info.kind, files=[], test_input="test_vector.cc",
                  expected=expected, mcu=compiled, arena_bytes=size, notes=notes)


def compile_model_data(project_dir: Path, core: str) -> McuCompile:
    """Compile model_data.cc for `core` with arm-none-eabi-g++; flash size from arm-none-eabi-size.

    -fdata-sections puts g_model in its own .rodata.g_model section, so its bytes
    and alignment can be read back from the object (tests compare them to the .tflite).
    """
    if core not in CORE_FLAGS:
        why = ("ESP32-S3 is an Xtensa LX7 core: build it with ESP-IDF (xtensa-esp32s3-elf-gcc), "
               "not arm-none-eabi" if core.startswith("xtensa") else f"no Arm flags known for core '{core}'")
        return McuCompile(None, core, [], None, None, None, None, skipped=why)
    compiler = shutil.which("arm-none-eabi-g++")
    size_tool = shutil.which("arm-none-eabi-size")
    if compiler is None or size_tool is None:
        return McuCompile(None, core, list(CORE_FLAGS[core]), None, None, None, None,
                          skipped="arm-none-eabi-g++ is not installed (Debian: gcc-arm-none-eabi "
                                  "binutils-arm-none-eabi)")
    flags = ["-std=c++17", "-Os", "-fdata-sections", "-ffunction-sections", *CORE_FLAGS[core]]
    obj_dir = Path(project_dir) / "obj"
    obj_dir.mkdir(exist_ok=True)
    obj = obj_dir / "model_data.o"
    proc = subprocess.run([compiler, *flags, "-c", str(Path(project_dir) / "model_data.cc"), "-o", str(obj)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise DeployError("arm-none-eabi-g++ could not compile model_data.cc", where=str(project_dir),
                          received=(proc.stderr.strip().splitlines() or ["no output"])[-1],
                          fix="This is a bug in edgesparse's generator; please report it")
    sizes = subprocess.run([size_tool, "-A", str(obj)], capture_output=True, text=True, timeout=60).stdout
    sections = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\S+)\s+(\d+)\s+\d+", sizes, re.M)}
    berkeley = subprocess.run([size_tool, str(obj)], capture_output=True, text=True, timeout=60).stdout
    numbers = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)", berkeley, re.M)
    flash = int(numbers[0][0]) + int(numbers[0][1]) if numbers else None
    return McuCompile(compiler=os.path.basename(compiler), core=core, flags=flags,
                      object_file=str(obj.relative_to(project_dir)), flash_bytes=flash,
                      rodata_bytes=sections.get(".rodata.g_model"), alignment=_section_alignment(obj, ".rodata.g_model"))


def _section_alignment(obj: Path, section: str) -> int | None:
    readelf = shutil.which("arm-none-eabi-readelf") or shutil.which("readelf")
    if readelf is None:
        return None
    text = subprocess.run([readelf, "-S", "-W", str(obj)], capture_output=True, text=True, timeout=60).stdout
    for line in text.splitlines():
        fields = line.replace("[ ", "[").split()
        if section in fields:
            return int(fields[-1])
    return None


# ----------------------------------------------------------------------------- ssh

_HOST_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<path>.*))?$")
_KNOWN_HOSTS = "known_hosts"


def parse_host(text: str, default_dir: str) -> Remote:
    """'user@host[:path]' -> Remote; the path defaults to ~/<default_dir> (relative to the login's home)."""
    match = _HOST_RE.match(text.strip())
    if not match:
        raise DeployError("Bad --host", where="--host", expected="USER@HOST[:PATH], e.g. pi@raspberrypi.local",
                          received=repr(text))
    path = (match.group("path") or "").rstrip("/") or default_dir
    if path in ("", "~", ".", "/") or path.startswith("-"):
        raise DeployError("The remote path must be a directory of its own", where="--host",
                          expected="USER@HOST:DIR, e.g. pi@raspberrypi.local:edgesparse-kws", received=repr(text))
    return Remote(user=match.group("user") or "", host=match.group("host").strip("[]"), path=path)


def ssh_options(known_hosts: Path, port: int, identity: Path | None, connect_timeout: int) -> list[str]:
    """Non-interactive ssh options: no password prompts, host key pinned in the bundle's own file."""
    options = ["-p", str(port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
               "-o", "StrictHostKeyChecking=accept-new",
               "-o", f"UserKnownHostsFile={Path(known_hosts).resolve()}",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
    if identity is not None:
        options += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    return options


def _remote_dir_expr(path: str) -> str:
    """A shell word for the remote directory: ~/x stays relative to the home directory."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    if path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path)


def _classify_ssh_failure(stderr: str, remote: Remote, port: int, identity: Path | None) -> DeployError:
    """One clear message for the common ways ssh fails; never echoes key material or the environment."""
    text = stderr.strip()
    lines = [line for line in text.splitlines() if line.strip() and "Warning: Permanently added" not in line]
    where = f"{remote.destination} port {port}"
    if "Permission denied" in text:
        return DeployError("The host refused the ssh key", where=where,
                           expected="a key listed in the login's ~/.ssh/authorized_keys",
                           received=lines[-1] if lines else "Permission denied",
                           fix=("Check --identity " + str(identity) if identity else "Pass --identity KEY") +
                               " and install its public half with ssh-copy-id")
    if any(s in text for s in ("Connection refused", "timed out", "No route to host", "Could not resolve",
                               "Network is unreachable", "Connection closed", "Name or service not known")):
        return DeployError("Cannot reach the host over ssh", where=where,
                           expected="an ssh server answering on that port",
                           received=lines[-1] if lines else "no answer",
                           fix="Check the host name, --port, and that sshd runs on the device")
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return DeployError("The host's key differs from the one pinned for this bundle", where=where,
                           received="host key verification failed",
                           fix=f"If the device was reinstalled, delete {_KNOWN_HOSTS} in the bundle directory")
    return DeployError("ssh failed", where=where, received=lines[-1] if lines else "no message",
                       fix="Run ssh by hand with the same user, host, port and key to see why")


def _ssh(options: list[str], remote: Remote, command: str, *, timeout: int, port: int,
         identity: Path | None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    ssh = shutil.which("ssh")
    if ssh is None:
        raise DeployError("The ssh client is not installed", expected="ssh on PATH",
                          received="no ssh", fix="Install it (Debian: apt-get install openssh-client)")
    try:
        proc = subprocess.run([ssh, *options, remote.destination, command], input=stdin, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployError("The remote command did not finish in time", where=remote.destination,
                          received=f"still running after {timeout} s",
                          fix="Check the device; pip installs on a slow Pi can take minutes") from None
    if proc.returncode == 255:
        raise _classify_ssh_failure(proc.stderr.decode("utf-8", "replace"), remote, port, identity)
    return proc


def probe(remote: Remote, options: list[str], *, port: int, identity: Path | None,
          connect_timeout: int) -> None:
    """Log in once and create the remote directory: fails fast on an unreachable host or a refused key."""
    if identity is not None and not Path(identity).is_file():
        raise DeployError("The ssh key file does not exist", where="--identity", expected="a private key file",
                          received="no such file")
    proc = _ssh(options, remote, f"mkdir -p {_remote_dir_expr(remote.path)}", timeout=connect_timeout + 30,
                port=port, identity=identity)
    if proc.returncode != 0:
        raise DeployError("Cannot create the remote directory", where=f"{remote.destination}:{remote.path}",
                          received=(proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1],
                          fix="Pick a directory the login can write (USER@HOST:PATH)")


def push_and_run(bundle: Bundle, remote: Remote, *, port: int = 22, identity: Path | None = None,
                 remote_python: str = "python3", remote_venv: str | None = None, fresh_venv: bool = False,
                 skip_install: bool = False, connect_timeout: int = 10, run_timeout: int = 900,
                 progress: Progress | None = None) -> RemoteRun:
    """Copy the bundle to the host, set up its venv, run the app on the test input, compare with here."""
    progress = progress or _noop
    if bundle.target != "rpi":
        raise DeployError("--host deploys only the rpi target", where="--target", expected="rpi",
                          received=bundle.target,
                          fix="Flash the mcu project with your toolchain; add the android bundle to an app")
    options = ssh_options(bundle.path / _KNOWN_HOSTS, port, identity, connect_timeout)
    directory = _remote_dir_expr(remote.path)
    progress("stage", {"name": "connect", "description": f"Connecting to {remote.destination}"})
    probe(remote, options, port=port, identity=identity, connect_timeout=connect_timeout)

    progress("stage", {"name": "push", "description": f"Copying the bundle to {remote.destination}"})
    transfer = _push(bundle.path, remote, options, directory, port=port, identity=identity,
                     timeout=run_timeout)

    venv = remote_venv or f"{remote.path}/venv"
    venv_expr = _remote_dir_expr(venv)
    steps = [f"cd {directory}"]
    if fresh_venv:
        steps.append(f"rm -rf {venv_expr}")
    env = f"PYTHON={shlex.quote(remote_python)} EDGESPARSE_VENV={venv_expr}"
    if skip_install:
        env += " EDGESPARSE_SKIP_INSTALL=1"
    app_args = f"{shlex.quote(bundle.test_input or '')} --json"
    steps.append(f"{env} sh ./run.sh {app_args}")
    progress("stage", {"name": "run", "description": "Installing the runtime and running the app on the device"})
    proc = _ssh(options, remote, " && ".join(steps), timeout=run_timeout, port=port, identity=identity)
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
        raise DeployError("The app failed on the device", where=f"{remote.destination}:{remote.path}",
                          expected="exit status 0 and one JSON line", received=" | ".join(tail) or f"exit {proc.returncode}",
                          fix="Log in and run ./run.sh by hand in that directory to see the full output")
    result = _last_json(stdout)
    if result is None:
        raise DeployError("The app printed no result on the device", where=f"{remote.destination}:{remote.path}",
                          expected="one JSON line on stdout", received=(stdout.strip()[-200:] or "nothing"))
    matches = bool(bundle.expected) and result.get("label") == bundle.expected.get("label") and \
        result.get("scores") == bundle.expected.get("scores")
    return RemoteRun(destination=remote.destination, path=remote.path, venv=venv, result=result,
                     matches_local=matches, transfer=transfer)


def _push(bundle_dir: Path, remote: Remote, options: list[str], directory: str, *, port: int,
          identity: Path | None, timeout: int) -> str:
    """rsync when both ends have it, else a tar stream over ssh. The bundle's known_hosts stays here."""
    excludes = [_KNOWN_HOSTS, "venv", "__pycache__"]
    rsync = shutil.which("rsync")
    if rsync is not None:
        probe = _ssh(options, remote, "command -v rsync", timeout=60, port=port, identity=identity)
        if probe.returncode == 0:
            ssh_command = " ".join(shlex.quote(part) for part in ["ssh", *options])
            target = f"{remote.destination}:{remote.path.replace('~/', '', 1) if remote.path.startswith('~/') else remote.path}/"
            args = [rsync, "-rlptz", "--protect-args", "-e", ssh_command]
            for pattern in excludes:
                args += ["--exclude", pattern]
            try:
                proc = subprocess.run([*args, f"{bundle_dir}/", target], capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise DeployError("Copying the bundle timed out", where=remote.destination,
                                  received=f"rsync still running after {timeout} s") from None
            if proc.returncode != 0:
                stderr = proc.stderr.decode("utf-8", "replace")
                if "Permission denied" in stderr or "Connection" in stderr:
                    raise _classify_ssh_failure(stderr, remote, port, identity)
                raise DeployError("rsync could not copy the bundle", where=remote.destination,
                                  received=(stderr.strip().splitlines() or ["no message"])[-1])
            return "rsync"
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(Path(bundle_dir).rglob("*")):
            rel = path.relative_to(bundle_dir)
            if path.is_file() and not any(part in excludes for part in rel.parts):
                tar.add(path, arcname=str(rel))
    proc = _ssh(options, remote, f"tar -xzf - -C {directory}", timeout=timeout, port=port, identity=identity,
                stdin=buffer.getvalue())
    if proc.returncode != 0:
        raise DeployError("Unpacking the bundle on the host failed", where=remote.destination,
                          received=(proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1])
    return "tar over ssh"


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


# ----------------------------------------------------------------------------- the command

def deploy(options: DeployOptions, progress: Progress | None = None) -> DeployResult:
    """Make the bundle, and with --host push it, run it there and compare with the local result."""
    progress = progress or _noop
    target, target_profile = resolve_target(options.target)
    profile = options.profile or target_profile
    if options.host and target != "rpi":
        raise DeployError("--host deploys only the rpi target", where="--target", expected="rpi",
                          received=target, fix="Drop --host: the mcu and android bundles are built here only")
    remote = None
    pinned = None
    out = Path(options.out) if options.out else default_out(Path(options.build_dir), target)
    if options.host:
        info = load_build(options.build_dir, force=options.force, labels=options.labels)
        remote = parse_host(options.host, device_dir_name(info))
        check_output_free(out, options.force)
        # Reach the host before any work: an unreachable host or a refused key fails in seconds.
        pinned = Path(tempfile.mkdtemp(prefix="edgesparse-ssh-")) / _KNOWN_HOSTS
        progress("stage", {"name": "connect", "description": f"Checking ssh access to {remote.destination}"})
        try:
            probe(remote, ssh_options(pinned, options.port, options.identity, options.connect_timeout),
                  port=options.port, identity=options.identity, connect_timeout=options.connect_timeout)
        except BaseException:
            shutil.rmtree(pinned.parent, ignore_errors=True)
            raise
    try:
        bundle = make_bundle(options.build_dir, target, out, force=options.force, sample=options.sample,
                             labels=options.labels, profile=profile, runtime=options.runtime,
                             remote=remote, progress=progress)
        if pinned is not None and pinned.is_file():
            shutil.copyfile(pinned, bundle.path / _KNOWN_HOSTS)
    finally:
        if pinned is not None:
            shutil.rmtree(pinned.parent, ignore_errors=True)
    result = DeployResult(bundle=bundle)
    if remote is not None:
        result.remote = push_and_run(bundle, remote, port=options.port, identity=options.identity,
                                     remote_python=options.remote_python, remote_venv=options.remote_venv,
                                     fresh_venv=options.fresh_venv, skip_install=options.skip_install,
                                     connect_timeout=options.connect_timeout, run_timeout=options.run_timeout,
                                     progress=progress)
    return result
