"""What a build checks besides its budgets: options before any work, and whether its results can be trusted.

Why its own module: a build that "passes" with an artifact that ignores its
input, or that blames the pruning schedule for data scaled to 1e30, is worse
than one that fails. The checks here run at three moments: before any work
(`check_options`: options a click range cannot express, such as a TensorBoard
path that is a file, `--mcu-compression` on a profile without TFLite Micro or on
an Ethos-U profile, `--cluster` where neither a LUT decoder nor Vela's weight
encoding would use the clusters, a `--quantize` Vela cannot compile; `check_granularity`:
a `--granularity` that contradicts `--structured`, `--element-sparsity` or the
profile;
`mcu_compression_mode` is the one rule for that option's default), on the
dense model before pruning (`dense_model_warnings`, `check_dense_outputs`),
and on the verified artifact (`artifact_failures`). Numpy only; the model is passed in, never imported here.

Raises DataError (an option or the data is the cause) and OutputLocationError
(a --tensorboard location that cannot be written).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.data import Dataset, absent_classes, input_range
from edgesparse.errors import DataError, OutputLocationError
from edgesparse.fsutil import check_writable_location
from edgesparse.pipeline.prune import check_clusters
from edgesparse.profiles.schema import NPU_RUNTIMES
from edgesparse.tflite.decode_compress import MODES

__all__ = [
    "DEFAULT_MIN_AGREEMENT",
    "GRANULARITIES",
    "artifact_failures",
    "at_chance",
    "check_dense_outputs",
    "check_granularity",
    "check_npu_quantize",
    "check_options",
    "chance_level",
    "dense_model_warnings",
    "mcu_compression_mode",
    "output_ignores_input",
    "untrusted_in_report",
]

# Top-1 agreement of the .tflite with the pruned Keras model on the validation set, below which the artifact
# is not the model that was trained. Measured on the demos (int8, 3 epochs): digits 100 % on rpi4 and pixel4 and
# 99.7 % on nrf52840 (360 samples), keyword spotting 98.2 % on rpi4 and 98.6 % on nrf52840 (1080 samples):
# int8 quantization flips only near-ties, at most 1.8 % here. 0.9 leaves five times that margin (and a one-sample
# flip in a validation set of ten), while a broken conversion (0 %, or a constant output at ~1/classes) falls
# far below it. `--min-agreement` changes it.
DEFAULT_MIN_AGREEMENT = 0.9
#: --granularity: auto = the per-profile policy (block shapes where the runtime's kernels read them, element-wise
#: elsewhere: edgesparse's behaviour before --granularity existed), element = element-wise everywhere, block = the
#: profile's block shape (refused where it has none), 2:4 = TFMOT sparsity_m_by_n, channel = whole channels removed
#: and the model rebuilt smaller (prune.channel_finetune).
GRANULARITIES = ("auto", "element", "block", "2:4", "channel")
# How a constant-output failure begins, in report.json's failures (the sweep reads it from cached points).
_CONSTANT_OUTPUT = "the .tflite's output does not depend on its input"
# Outputs whose spread across inputs is below this fraction of their magnitude do not depend on the input.
_CONSTANT_RTOL = 1e-6


def _flag_path_error(flag: str, path: Path, what: str, received: str) -> DataError:
    return DataError(f"{flag} {what}", where=str(path), expected="a directory for the logs (created if missing)",
                     received=received, fix=f"Choose another {flag} directory")


def mcu_compression_mode(requested: str | None, runtime: str) -> str:
    """The DECODE compression a build applies: `requested`, or by default `auto` on TFLite Micro, `off` elsewhere.

    `runtime` is the profile's runtime name as written (`Profile.runtime_name`).
    Only TFLite Micro has the DECODE op, so asking for compression on another
    runtime is refused (DataError, exit 2) instead of silently ignored. On an
    Ethos-U profile (tflm+ethos-u) it is off and refused too: Vela encodes the
    weights itself, losslessly, and a DECODE op is a custom op Vela cannot place
    on the NPU, so every layer behind one would run on the CPU.
    """
    if requested is not None and requested not in MODES:
        raise DataError("Bad --mcu-compression", where="--mcu-compression",
                        expected=" | ".join(MODES), received=repr(requested))
    if runtime == "tflm":
        return requested or "auto"
    if requested in (None, "off"):
        return "off"
    if runtime in NPU_RUNTIMES:
        raise DataError("--mcu-compression does not apply to Ethos-U profiles", where="--mcu-compression",
                        expected="off (the default on an Ethos-U profile), or no --mcu-compression",
                        received=f"--mcu-compression {requested} on a {runtime} profile",
                        fix="Drop --mcu-compression: Vela compresses the weights itself (zeros and clustered values "
                            "shrink its encoding, so pruning and --cluster N pay without DECODE), and TFLite Micro's "
                            "DECODE ops are custom ops Vela cannot place on the NPU: the layers behind them would "
                            "run on the CPU")
    raise DataError("--mcu-compression applies only to TFLite Micro profiles", where="--mcu-compression",
                    expected="a profile whose runtime is tflm (a microcontroller), or no --mcu-compression",
                    received=f"--mcu-compression {requested} on a {runtime} profile",
                    fix="Drop --mcu-compression: LiteRT profiles use TFLite's own sparse format where the profile "
                        "lists sparse_weights")


def _granularity_error(what: str, received: str, fix: str, where: str = "--granularity") -> DataError:
    return DataError(what, where=where, expected="one pruning granularity per build (docs/pruning.md)",
                     received=received, fix=fix)


def check_granularity(granularity: str, *, structured: tuple[int, int] | None = None,
                      element_sparsity: float | None = None, cluster: int | None = None,
                      tensorboard: Path | None = None, block_shape: tuple[int, int] | None = None,
                      profile_name: str | None = None) -> None:
    """--granularity against the options it cannot combine with, before any work (DataError, exit 2).

    `block_shape` is the block the profile's sparse kernels read for the build's quantization (None when they
    read none); it is only consulted for `block`, and only when `profile_name` is given.
    """
    if granularity not in GRANULARITIES:
        raise DataError("Unknown --granularity", where="--granularity", expected=" | ".join(GRANULARITIES),
                        received=repr(granularity))
    if structured is not None and granularity not in ("auto", "2:4"):
        raise _granularity_error(f"--structured cannot be combined with --granularity {granularity}",
                                 f"--structured {structured[0]}:{structured[1]} with --granularity {granularity}",
                                 "Drop --structured (--granularity 2:4 is the same as --structured 2:4)")
    if granularity == "2:4" and structured not in (None, (2, 4)):
        raise _granularity_error("--granularity 2:4 contradicts --structured",
                                 f"--structured {structured[0]}:{structured[1]}" if structured else "",
                                 "Drop --structured")
    if element_sparsity is not None:
        if granularity != "channel":
            raise _granularity_error("--element-sparsity prunes what channel pruning left, so it needs "
                                     "--granularity channel", f"--element-sparsity {element_sparsity:g} with "
                                     f"--granularity {granularity}",
                                     "Add --granularity channel, or use --final-sparsity for element-wise pruning",
                                     where="--element-sparsity")
        if isinstance(element_sparsity, bool) or not 0.0 < float(element_sparsity) < 1.0:
            raise DataError("Bad --element-sparsity", where="--element-sparsity",
                            expected="a fraction in (0, 1) of the remaining weights to zero",
                            received=repr(element_sparsity))
    if granularity == "channel" and element_sparsity is None:
        for flag, value in (("--cluster", cluster), ("--tensorboard", tensorboard)):
            if value is not None:
                raise _granularity_error(f"{flag} needs a TFMOT pruning pass, and --granularity channel alone has "
                                         "none", f"{flag} with --granularity channel",
                                         f"Add --element-sparsity F (element-wise pruning after the channels), or "
                                         f"drop {flag}", where=flag)
    if granularity == "block" and profile_name is not None and block_shape is None:
        raise _granularity_error(f"--granularity block: {profile_name}'s runtime reads no block-sparse weights",
                                 f"--granularity block for {profile_name}",
                                 "Use --granularity auto (the profile's policy) or element; block shapes pay only "
                                 "on LiteRT profiles that list block_sparsity")


def check_options(*, tensorboard: Path | None, min_agreement: float, epochs: int, batch_size: int,
                  min_params: int, runtime: str | None = None, mcu_compression: str | None = None,
                  cluster: int | None = None) -> None:
    """Options the CLI's ranges cannot check, or a library caller may pass: refused before any work, by flag.

    `runtime` is the profile's runtime name as written (`Profile.runtime_name`); on an Ethos-U profile
    `--cluster N` is allowed (clustered values shrink Vela's weight encoding) and `--mcu-compression` is not.
    """
    mode = mcu_compression_mode(mcu_compression, runtime) if runtime is not None else None
    if cluster is not None:
        check_clusters(cluster)
        if mode not in ("lut", "auto", None) and runtime not in NPU_RUNTIMES:
            raise DataError("--cluster pays only where TFLite Micro's LUT decoder stores the clusters",
                            where="--cluster",
                            expected="a TFLite Micro profile with --mcu-compression lut or auto (the default), "
                                     "or an Ethos-U profile (Vela's weight encoding)",
                            received=f"--mcu-compression {mode} on a {runtime} profile",
                            fix="Drop --cluster, or build for a microcontroller profile with --mcu-compression "
                                "auto: clustering costs accuracy and saves nothing without LUT")
    for flag, value, minimum in (("--epochs", epochs, 1), ("--batch-size", batch_size, 1),
                                 ("--min-params", min_params, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise DataError(f"Bad {flag}", where=flag, expected=f"a whole number >= {minimum}", received=repr(value))
    if not isinstance(min_agreement, (int, float)) or not 0.0 <= min_agreement <= 1.0:
        raise DataError("Bad --min-agreement", where="--min-agreement",
                        expected="a fraction in [0, 1] (0.9 = the .tflite agrees with Keras on 90 % of inputs)",
                        received=repr(min_agreement))
    if tensorboard is None:
        return
    path = Path(tensorboard).expanduser()
    if path.exists() and not path.is_dir():
        raise _flag_path_error("--tensorboard", path, "points at a file", "an existing file")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _flag_path_error("--tensorboard", path, "is below a regular file", f"{ancestor} is a file")
    if not path.exists():
        try:
            check_writable_location(path)
        except OutputLocationError as exc:
            raise OutputLocationError(f"--tensorboard: {exc.what}", where=exc.where, expected=exc.expected,
                                      received=exc.received, fix="Choose another --tensorboard directory") from None


def check_npu_quantize(quantize: str, profile_name: str) -> None:
    """An Ethos-U build compiles a full-integer int8 model with Vela; any other --quantize is refused before work.

    Vela places only quantized ops on the NPU (int8, or int16 activations with int8 weights): a float32,
    float16 or dynamic-range model would run entirely on the CPU, which is not what an Ethos-U profile is for.
    """
    if quantize == "int8":
        return
    raise DataError(f"--quantize {quantize} cannot run on {profile_name}'s Ethos-U NPU", where="--quantize",
                    expected="int8 (Vela compiles full-integer models for the NPU)", received=f"--quantize {quantize}",
                    fix="Use --quantize int8 (the default), or a profile without an NPU")


def chance_level(y: np.ndarray) -> float:
    """The accuracy of always answering the most frequent class."""
    y = np.asarray(y).reshape(-1)
    return float(np.bincount(y.astype(np.int64)).max() / len(y)) if len(y) else 0.0


def at_chance(accuracy: float, y: np.ndarray) -> bool:
    """True when `accuracy` is within two standard errors of `chance_level(y)` (a coin would do as well)."""
    n = len(np.asarray(y).reshape(-1))
    if n == 0:
        return False
    p = chance_level(y)
    return accuracy <= p + 2.0 * math.sqrt(max(p * (1.0 - p), 1e-12) / n)


def dense_model_warnings(model: Any, dataset: Dataset, num_classes: int, accuracy: float) -> list[str]:
    """Warnings about the dense model and data before pruning: absent classes, chance accuracy and its likely cause."""
    warnings = []
    for split, missing in absent_classes(dataset, num_classes).items():
        names = dataset.labels or []
        shown = ", ".join(f"{c} ({names[c]})" if c < len(names) else str(c) for c in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        warnings.append(f"class(es) {shown}{more} of the model's {num_classes} outputs have no sample in {split}: "
                        + ("fine-tuning never sees them" if split == "y_train" else "accuracy does not cover them"))
    if at_chance(accuracy, dataset.y_val):
        cause = ("--data is not on the input scale the model was trained on, and its BatchNormalization moving "
                 "statistics are only right for that scale: scale --data to that range (docs/data.md, 'Input scale "
                 "of pretrained models'); or the weights are untrained" if _has_batch_norm(model) else
                 "the weights are untrained, the inputs are not preprocessed as in the model's training, or the "
                 "labels are not in the model's output order (docs/data.md)")
        warnings.append(f"the dense model is at chance before pruning: {accuracy:.2%} on {dataset.n_val} validation "
                        f"samples, where always answering the most frequent class scores "
                        f"{chance_level(dataset.y_val):.2%}. Likely cause: {cause}. Pruning and the accuracy budget "
                        "measure nothing useful until it is above chance")
    return warnings


def _has_batch_norm(model: Any) -> bool:
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if "BatchNormalization" in type(layer).__name__:
            return True
        stack.extend(getattr(layer, "layers", []))
    return False


def check_dense_outputs(predictions: np.ndarray, dataset: Dataset) -> None:
    """The dense model's outputs on the validation data must be finite; NaN or inf there is the data's scale."""
    bad = ~np.isfinite(np.asarray(predictions, np.float64))
    if not bad.any():
        return
    raise DataError("The dense model's outputs are NaN or infinite on the validation data", where=dataset.source,
                    expected="inputs on the scale the model was trained on (e.g. 0..1, -1..1 or 0..255)",
                    received=f"{int(bad.reshape(len(bad), -1).any(axis=1).sum())} of {len(bad)} samples give "
                             f"non-finite outputs; {input_range(dataset)}",
                    fix="Scale the inputs as in the model's training (docs/data.md); pruning cannot fix this")


def output_ignores_input(outputs: np.ndarray) -> bool:
    """True when every input gave the same output (two inputs at least): the model computes a constant."""
    out = np.asarray(outputs, np.float64)
    if out.ndim == 0 or len(out) < 2:
        return False
    out = out.reshape(len(out), -1)
    if not np.isfinite(out).all():
        return False
    spread = float(np.max(np.ptp(out, axis=0)))
    return spread <= _CONSTANT_RTOL * max(float(np.max(np.abs(out))), 1e-30)


def artifact_failures(*, agreement: float | None, outputs: np.ndarray | None, n_samples: int,
                      min_agreement: float) -> list[str]:
    """Why the verified .tflite is not the model that was trained: an output that ignores the input, low agreement."""
    failures = []
    if outputs is not None and output_ignores_input(outputs):
        first = np.asarray(outputs, np.float64).reshape(len(outputs), -1)[0]
        shown = ", ".join(f"{v:.4g}" for v in first[:4]) + (", ..." if first.size > 4 else "")
        failures.append(f"{_CONSTANT_OUTPUT}: all {n_samples} validation inputs give the same output [{shown}]")
    if agreement is not None and agreement < min_agreement:
        failures.append(f"the .tflite agrees with the pruned Keras model on {agreement:.2%} of {n_samples} validation "
                        f"inputs, below --min-agreement {min_agreement:g}")
    return failures


def untrusted_in_report(report: dict[str, Any], min_agreement: float) -> list[str]:
    """`artifact_failures` of a finished build, from its report.json (a sweep's cached point), at `min_agreement`."""
    accuracy = report.get("accuracy") or {}
    constant = [f for f in report.get("failures") or [] if str(f).startswith(_CONSTANT_OUTPUT)]
    return constant + artifact_failures(agreement=accuracy.get("agreement_pruned_keras_vs_tflite"), outputs=None,
                                        n_samples=int(accuracy.get("n_samples") or 0), min_agreement=min_agreement)
