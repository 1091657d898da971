"""build(): load -> prune -> [cluster] -> convert -> [compress] -> verify -> [npu] -> estimate -> report.

The one place that strings the stages together. It never prints: progress goes
through a callback (`progress(event, fields)`) that the CLI renders. Every output
is staged in a temporary directory and published only when complete, so an
error or Ctrl-C leaves no half-written build and never clobbers an earlier one.

The build directory holds (names from edgesparse.builddir): the artifact, the
pruned Keras model, the dense baselines, report.json and report.html, and the
sample (a few held-out inputs and their labels) and labels.txt that deploy uses
instead of rebuilding the data set. On TFLite Micro profiles the artifact is
DECODE-compressed where that pays and the profile's RAM allows
(`pipeline.mcu_compress`; `--mcu-compression`), and the same model before
compression is kept as baselines/pruned_int8.tflite; the verify and estimate
stages run the file that is written. `--cluster N` fine-tunes the pruned
layers to N values per kernel before conversion, for the LUT decoder (and, on
Arm Ethos-U profiles, for Vela's weight encoding).

On an Ethos-U profile (`profile.npu`) there is no DECODE stage: the plain int8
model is verified in TFLite Micro exactly as on other TFLM profiles, then the
"npu" stage compiles it with Vela for the profile's NPU
(`pipeline.npu_compile`), and the dense int8 baseline (the model before
pruning) too. model.tflite is the compiled file, the plain int8 model is kept
as baselines/pruned_int8.tflite, and report.json's verification says which
file was run and that the NPU command stream was not; its "npu" section and
the check are the NPU estimate (`estimate.npu`). Vela's presence is checked
before any work.

`--granularity` chooses what pruning removes (build_checks.GRANULARITIES; the
default `auto` is the per-profile policy). `channel` removes whole channels on
the pruning schedule and rebuilds a smaller dense model
(prune.channel_finetune), optionally followed by element-wise pruning of what
is left (`--element-sparsity`); the rest of the pipeline runs on the small
model, and the dense baselines are the original model's, so every size and
ratio compares against what the user started from.

The output location and every option a click range cannot express are
checked before anything is loaded (fsutil.check_output_free with
builddir.is_build_dir: --force replaces only an earlier build). A finished
build fails (exit 1) not only on its budgets but when the .tflite is not the
model that was trained: an output that ignores the input, or top-1 agreement
with the pruned Keras model below --min-agreement (pipeline.build_checks).

Raises DataError (bad options or data), OutputExistsError and
OutputLocationError (--out), ModelError, PruningError, ConversionError,
VerificationError; AccuracyDropExceeded and BudgetExceeded come from
raise_for_failures once the outputs are written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import builddir
from edgesparse._types import Progress, no_progress
from edgesparse.data import Dataset, check_compatible, load_data
from edgesparse.errors import AccuracyDropExceeded, BudgetExceeded, ConversionError, DataError
from edgesparse.estimate import check_model
from edgesparse.estimate.speed import measure_host, speed_claim
from edgesparse.fsutil import atomic_write_bytes, atomic_write_text, check_output_free, staged_output_dir, write_error
from edgesparse.pipeline import convert, distribute, mcu_compress, models, npu_compile, prune, recurrent
from edgesparse.pipeline.build_checks import (
    DEFAULT_MIN_AGREEMENT,
    artifact_failures,
    check_dense_outputs,
    check_granularity,
    check_npu_quantize,
    check_options,
    dense_model_warnings,
    mcu_compression_mode,
)
from edgesparse.pipeline.demos import digits, kws
from edgesparse.pipeline.prune.channel_finetune import (
    DEFAULT_CHANNEL_FRACTION,
    ChannelPruneResult,
    channel_prune_and_finetune,
)
from edgesparse.pipeline.prune.policy import INT8_WEIGHT_MODES, OPTIMIZE_MODES
from edgesparse.profiles.profile import Profile, load_profile
from edgesparse.report.document import build_report
from edgesparse.report.html import write_report_html
from edgesparse.runtime import verify

__all__ = [
    "DEMOS",
    "SAMPLE_SIZE",
    "BuildOptions",
    "BuildResult",
    "PreparedInputs",
    "build",
    "block_shape",
    "class_names",
    "default_out_dir",
    "model_name",
    "parse_structured",
    "prepare_inputs",
    "raise_for_failures",
]

DEMOS = ("digits", "kws")
# How many held-out validation inputs go to builddir.SAMPLE (the first ones, in order).
SAMPLE_SIZE = 16


@dataclass
class BuildOptions:
    """Every knob of `edgesparse build`; recorded verbatim in report.json."""

    profile: str = "rpi4"
    model: Path | None = None
    data: Path | None = None
    demo: str = "digits"
    out: Path | None = None
    force: bool = False
    trust_model: bool = False
    schedule: str = "polynomial"
    initial_sparsity: float = 0.0
    final_sparsity: float | None = None   # None: 0.8, M/N with --structured, 0.5 of the channels with channel
    begin_step: int = 0
    end_step: int | None = None
    power: int = 3
    frequency: int = 100
    structured: str | None = None
    skip_layers: tuple[str, ...] = ()
    epochs: int = 8
    batch_size: int = 32
    quantize: str = "int8"
    max_accuracy_drop: float = 2.0
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    prune_output_layer: bool = False
    min_params: int = prune.MIN_PARAMS
    tensorboard: Path | None = None
    seed: int = 0
    mcu_compression: str | None = None    # None: auto on TFLite Micro profiles, off elsewhere (Ethos-U too)
    cluster: int | None = None            # sparsity-preserving weight clustering to N values per kernel
    granularity: str = "auto"             # build_checks.GRANULARITIES; auto = the per-profile policy
    element_sparsity: float | None = None  # channel: element-wise pruning of what is left, to this sparsity
    optimize: str = "balanced"            # prune.OPTIMIZE_MODES: which encodings the LiteRT policy may choose
    distribute: str | None = None         # None: one device; "mirrored" | "multi-worker" (tf.distribute)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


@dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    published: bool = True   # False on a --distribute multi-worker task that is not the chief: nothing written

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class PreparedInputs:
    """The dense model and data, loaded and checked once; a sweep reuses them for every point."""

    model: Any
    dataset: Dataset
    model_info: dict[str, Any]
    dense_accuracy: float
    test: tuple[np.ndarray, np.ndarray] | None = None   # held-out split, when the data set has one
    dense_test_accuracy: float | None = None
    warnings: list[str] = field(default_factory=list)    # about the data and the dense model, before pruning


def parse_structured(text: str | None) -> tuple[int, int] | None:
    """'2:4' -> (2, 4): TFMOT's sparsity_m_by_n."""
    if not text:
        return None
    try:
        m, n = (int(part) for part in text.split(":"))
    except ValueError:
        m = n = 0
    if not (0 < m < n):
        raise DataError("Bad --structured value", expected="M:N with 0 < M < N, e.g. 2:4",
                        received=repr(text))
    return m, n


def _final_sparsity(requested: float | None, structured: tuple[int, int] | None, granularity: str = "auto") -> float:
    """M:N structure fixes the sparsity at M/N; channels default to half removed; otherwise TFMOT's 0.8."""
    if requested is not None:
        return requested
    if granularity == "channel":
        return DEFAULT_CHANNEL_FRACTION
    return structured[0] / structured[1] if structured else 0.8


def default_out_dir(name: str, profile: Profile) -> Path:
    return Path("build") / f"{name}-{profile.name}"


def model_name(options: BuildOptions) -> str:
    """The name a build (or sweep) directory is called after: the demo's, or the model file's."""
    return options.demo if options.model is None else models.safe_name(options.model)


def _predict(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    return float(np.mean(verify.top1(_predict(model, x, batch_size)) == np.asarray(y)))


def _dense_accuracy(model: Any, dataset: Dataset, batch_size: int) -> float:
    """The dense model's validation accuracy; non-finite outputs are the data's scale (DataError), not pruning's."""
    predictions = _predict(model, dataset.x_val, batch_size)
    check_dense_outputs(predictions, dataset)
    return float(np.mean(verify.top1(predictions) == np.asarray(dataset.y_val)))


def _output_count(model: Any) -> int:
    return int(np.prod([d for d in model.output_shape[1:] if d is not None]))


def _load_demo(name: str, progress: Progress) -> tuple[Any, Dataset, tuple[np.ndarray, np.ndarray] | None]:
    if name == "kws":
        model, dataset = kws.demo_model(progress=progress)
        return model, dataset, kws.test_split()
    model, dataset = digits.demo_model(progress=progress)
    return model, dataset, None


def prepare_inputs(options: BuildOptions, progress: Progress | None = None) -> PreparedInputs:
    """Load the model and data set (the user's files, or a built-in demo) and check they match."""
    progress = progress or no_progress
    test = None
    if options.model is None:
        if options.data is not None:
            raise DataError("--data was given without --model",
                            expected="both --model and --data, or neither (a built-in demo)",
                            received=f"--data {options.data}", fix="Add --model PATH, or drop --data to build the demo")
        model, dataset, test = _load_demo(options.demo, progress)
        info = {"source": f"demo:{options.demo}", "format": "demo", "name": options.demo, "rebuilt_from_keras3": False}
    else:
        if options.data is None:
            raise DataError("--model needs --data", where=str(options.model),
                            expected="an .npz with x_train, y_train, x_val, y_val, a folder of <label>/ images "
                                     "or a folder of <label>/*.wav recordings (see docs/data.md)",
                            received="no --data", fix="Pass --data PATH.npz or --data FOLDER")
        loaded = models.load_model(options.model, trust_model=options.trust_model)
        model = loaded.model
        splits = load_data(Path(options.data), input_shape=tuple(model.input_shape[1:]),
                           num_outputs=_output_count(model), seed=options.seed)
        dataset, test = splits.dataset, splits.test
        info = {"source": str(options.model), "format": loaded.format, "name": loaded.name,
                "rebuilt_from_keras3": loaded.rebuilt_from_keras3,
                "rebuild_max_abs_error": loaded.rebuild_max_abs_error}
    recurrent.check_recurrent(model)  # before any prediction or fine-tuning: what no --quantize mode converts
    input_shape = tuple(int(d) if d is not None else -1 for d in model.input_shape[1:])
    num_classes = _output_count(model)
    check_compatible(dataset, input_shape, num_classes, source=str(options.data) if options.data else info["source"])
    # The classes are the model's outputs: a class the data happens not to hold is a warning, not a smaller model.
    dataset = dataclasses.replace(dataset, num_classes=max(num_classes, 2))
    info.update(input_shape=list(input_shape), num_classes=num_classes, params=int(model.count_params()),
                labels=list(dataset.labels) if dataset.labels else None)
    dense_accuracy = _dense_accuracy(model, dataset, options.batch_size)
    dense_test = _accuracy(model, *test, options.batch_size) if test is not None else None
    warnings = dense_model_warnings(model, dataset, num_classes, dense_accuracy)
    return PreparedInputs(model, dataset, info, dense_accuracy, test, dense_test, warnings)


class _Stages:
    """Times each stage and reports "stage" / "stage_done" (only when the stage finished)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextmanager
    def run(self, name: str, description: str) -> Iterator[None]:
        started = time.perf_counter()
        self.progress("stage", {"name": name, "description": description})
        yield
        self.timings[name] = round(time.perf_counter() - started, 3)
        self.progress("stage_done", {"name": name, "seconds": self.timings[name]})


def build(options: BuildOptions, progress: Progress | None = None,
          prepared: PreparedInputs | None = None) -> BuildResult:
    """Run the whole pipeline and publish `out_dir` atomically. Raises EdgesparseError.

    `prepared` lets a sweep pass the dense model and data it loaded once.
    """
    progress = progress or no_progress
    started = time.perf_counter()
    stages = _Stages(progress)
    profile = load_profile(options.profile)
    options, out_dir, schedule = _checked_options(options, profile)
    # Before anything touches TensorFlow's devices: logical CPUs for mirrored, the cluster for multi-worker.
    strategy = distribute.start(options.distribute)

    with stages.run("load", "Loading model and data"):
        if prepared is None:
            prepared = prepare_inputs(options, progress)
    dataset = prepared.dataset
    for warning in prepared.warnings:
        progress("warning", {"message": warning})
    channels: ChannelPruneResult | None = None
    with stages.run("prune", _prune_description(options)):
        if options.granularity == "channel":
            channels, policies, pruned = _prune_channels(prepared, options, profile, schedule, progress)
        else:
            policies, pruned = _prune(prepared, options, profile, schedule, progress)
        pruned_top1 = verify.top1(_predict(pruned.model, dataset.x_val, options.batch_size))
        acc_pruned = float(np.mean(pruned_top1 == dataset.y_val))
    if strategy is not None and not strategy.is_chief:  # it fine-tuned in lockstep; the chief converts and writes
        return BuildResult(out_dir=out_dir, report={"distribute": strategy.describe()}, published=False)
    keras_model, clustered = pruned.model, _cluster(pruned.model, dataset, policies, options, stages)
    if clustered is not None:  # the clustered model is the one converted: agreement is measured against it
        keras_model = clustered.model
        pruned_top1 = verify.top1(_predict(keras_model, dataset.x_val, options.batch_size))
    with stages.run("convert", f"Converting to TFLite ({options.quantize})"):
        conversion = convert.build_artifact(keras_model, dataset, quantize=options.quantize, profile=profile)
        conversion = _original_baselines(conversion, prepared, options.quantize, channels is not None, profile)
    compression = _compress(conversion, profile, options.mcu_compression, dataset, stages)
    if compression is not None:
        conversion = dataclasses.replace(conversion, artifact=compression.model, dense_int8=compression.dense_int8,
                                         notes=[*conversion.notes, _compression_note(compression)])
        compression.section["cluster"] = _cluster_summary(clustered)
    warnings = list(prepared.warnings) + (compression.warnings if compression is not None else [])
    with stages.run("verify", _verify_description(profile)):
        verification = verify.verify_artifact(conversion.artifact, dataset.x_val, dataset.y_val,
                                              runtime=profile.runtime, reference_predictions=pruned_top1)
    test_accuracy = _test_accuracy(prepared, conversion.artifact, keras_model, profile, options.batch_size)
    npu = _compile_npu(conversion, profile, stages)
    check, npu_estimates = _estimate(conversion, npu, profile, verification.interpreter, stages)
    section = compression.section if compression is not None else None
    mcu_compress.add_estimate(section, check)
    speed = _speed(conversion, profile, stages) if npu is None else None   # the NPU's dense vs pruned: "npu"
    if npu is not None:
        conversion = dataclasses.replace(conversion, artifact=npu.model,
                                         notes=[*conversion.notes, npu_compile.note(npu, profile)])

    drop_points = round((prepared.dense_accuracy - verification.accuracy) * 100.0, 3)
    failures = artifact_failures(agreement=verification.agreement, outputs=verification.predictions,
                                 n_samples=verification.n_samples, min_agreement=options.min_agreement)
    failures += _failures(drop_points, prepared.dense_accuracy, verification.accuracy, options, check, profile)
    stages.timings["total"] = round(time.perf_counter() - started, 3)
    document = build_report(
        options=options.to_dict(), profile=profile, model_info=dict(prepared.model_info), dataset=dataset,
        policies=policies, pruned=pruned, conversion=conversion, verification=verification,
        accuracies={"dense_float": prepared.dense_accuracy, "pruned_keras": acc_pruned, "test": test_accuracy,
                    "clustered_keras": clustered.accuracy_after if clustered is not None else None},
        drop_points=drop_points, check=check, failures=failures, timings=stages.timings, compression=section,
        channels=channels.as_dict() if channels is not None else None,
        npu=None if npu_estimates is None else dict(npu_estimates.section, cluster=_cluster_summary(clustered)))
    document["warnings"] = warnings
    document["speed"] = speed
    document["distribute"] = None if strategy is None else {"strategy": strategy.describe(),
                                                             "replicas": pruned.replicas}
    if npu is not None:   # its "npu" section holds the clustering summary (there is no compression section)
        document["verification"].update(npu_compile.verification_scope(verification.interpreter))

    with stages.run("write", f"Writing {out_dir}"):
        _publish(out_dir, options.force, conversion.artifact, _baselines(conversion, compression, npu), keras_model,
                 document, sample=_sample_npz(dataset), sample_count=min(SAMPLE_SIZE, dataset.n_val),
                 labels=class_names(dataset, prepared.model_info["num_classes"]))
    # The CPU fallback and Vela's warnings are printed with the build's, but kept once in report.json (check.warnings).
    shown = warnings + (npu_estimates.warnings if npu_estimates is not None else [])
    return BuildResult(out_dir=out_dir, report=document, failures=failures, warnings=shown)


def _checked_options(options: BuildOptions, profile: Profile) -> tuple[BuildOptions, Path, prune.ScheduleOptions]:
    """Every option and the output location checked before anything is loaded; defaults resolved for report.json."""
    structured = parse_structured(options.structured)
    granularity = "2:4" if options.granularity == "auto" and structured == (2, 4) else options.granularity
    check_granularity(granularity, structured=structured, element_sparsity=options.element_sparsity,
                      cluster=options.cluster, tensorboard=options.tensorboard,
                      block_shape=block_shape(profile, options.quantize), profile_name=profile.name)
    if granularity == "2:4":
        structured = (2, 4)
    options = dataclasses.replace(options, granularity=granularity,
                                  final_sparsity=_final_sparsity(options.final_sparsity, structured, granularity))
    out_dir = Path(options.out) if options.out else default_out_dir(model_name(options), profile)
    check_output_free(out_dir, options.force, ours=builddir.is_build_dir)
    check_options(tensorboard=options.tensorboard, min_agreement=options.min_agreement, epochs=options.epochs,
                  batch_size=options.batch_size, min_params=options.min_params, runtime=profile.runtime_name,
                  mcu_compression=options.mcu_compression, cluster=options.cluster)
    options = dataclasses.replace(options, mcu_compression=mcu_compression_mode(options.mcu_compression,
                                                                                 profile.runtime_name))
    if options.demo not in DEMOS:
        raise DataError("Unknown demo", expected=" or ".join(DEMOS), received=repr(options.demo))
    # --distribute: TF_CONFIG read and checked (multi-worker), channel pruning and --cluster refused; exit 2 before
    # any work.
    distribute.check_distribute(options.distribute, granularity=granularity, cluster=options.cluster)
    if options.optimize not in OPTIMIZE_MODES:
        raise DataError("Bad --optimize", where="--optimize", expected=" | ".join(OPTIMIZE_MODES),
                        received=repr(options.optimize))
    schedule = _schedule(options, structured)  # the schedule's option errors too
    if profile.npu is not None:  # last: every option error first, then the missing compiler, before any work
        check_npu_quantize(options.quantize, profile.name)
        npu_compile.require_compiler(profile)
    return options, out_dir, schedule


def _speed(conversion: convert.ConversionResult, profile: Profile, stages: _Stages) -> dict[str, Any] | None:
    """report.json's "speed": the artifact against dense int8, estimated for the profile, and on LiteRT profiles
    also measured on this host in the same run, interleaved (TFLM's wheel on x86 says nothing about a device)."""
    if not conversion.dense_int8:
        return None
    with stages.run("speed", "Comparing the artifact's speed with dense int8"):
        host = measure_host(conversion.artifact, conversion.dense_int8) if profile.runtime == "litert" else None
        return speed_claim(conversion.artifact, conversion.dense_int8, profile, host=host)


def _verify_description(profile: Profile) -> str:
    """The verify stage's line: which file runs in which interpreter (on Ethos-U, what does not run)."""
    if profile.npu is not None:
        return ("Running the plain int8 model in TFLite Micro (the file Vela compiles next; the NPU command stream "
                "cannot run here and is not verified)")
    return f"Running the artifact in {'TFLite Micro' if profile.runtime == 'tflm' else 'LiteRT'}"


def _compile_npu(conversion: convert.ConversionResult, profile: Profile,
                 stages: _Stages) -> npu_compile.NpuBuild | None:
    """The "npu" stage of an Ethos-U build: the verified int8 model and the dense int8 baseline through Vela."""
    if profile.npu is None:
        return None
    with stages.run("npu", f"Compiling for the {profile.npu.product} ({profile.npu.accelerator}) with Vela, "
                           "pruned and dense int8"):
        return npu_compile.compile_for_profile(conversion.artifact, conversion.dense_int8, profile)


def _estimate(conversion: convert.ConversionResult, npu: npu_compile.NpuBuild | None, profile: Profile,
              interpreter: str, stages: _Stages) -> tuple[dict[str, Any], npu_compile.NpuEstimates | None]:
    """report.json's "check" and, on an Ethos-U build, its "npu" section (the NPU estimate, dense vs pruned)."""
    with stages.run("estimate", f"Checking against the {profile.name} profile"):
        if npu is None:
            return check_model(conversion.artifact, profile).to_dict(), None
        estimates = npu_compile.estimate(npu, conversion.dense_int8, profile, interpreter, stages.progress)
        return estimates.check, estimates


def _cluster(model: Any, dataset: Dataset, policies: list[prune.LayerPolicy], options: BuildOptions,
             stages: _Stages) -> prune.ClusterResult | None:
    """--cluster N: the pruned layers fine-tuned to N values per kernel, zeros kept (for TFLM's LUT decoder)."""
    if options.cluster is None:
        return None
    with stages.run("cluster", f"Clustering the pruned weights ({options.cluster} values per kernel, zeros kept)"):
        return prune.cluster_and_finetune(model, dataset, options.cluster, policies=policies, epochs=options.epochs,
                                          batch_size=options.batch_size, progress=stages.progress, seed=options.seed)


def _cluster_summary(clustered: prune.ClusterResult | None) -> dict[str, Any] | None:
    """report.json's compression.cluster: the clustering stage's accuracy on the pruned model, before and after."""
    if clustered is None:
        return None
    return {"clusters": clustered.clusters, "accuracy_before": clustered.accuracy_before,
            "accuracy_after": clustered.accuracy_after, "accuracy_split": clustered.accuracy_split,
            "clustered_layers": clustered.clustered_layers,
            "layers": [{"name": layer.name, "clustered": layer.clustered, "reason": layer.reason,
                        "distinct_values": layer.distinct_values, "sparsity_after": round(layer.sparsity_after, 6)}
                       for layer in clustered.layers]}


def _compress(conversion: convert.ConversionResult, profile: Profile, mode: str, dataset: Dataset,
              stages: _Stages) -> mcu_compress.McuCompression | None:
    """Overhead stripping and DECODE compression of a TFLite Micro artifact (None on other runtimes).

    A stage of its own unless off (then only the stripping runs, proven the same way). None on Ethos-U profiles
    too: Vela rewrites the whole file and encodes the weights itself, so the file Vela compiles is the converter's.
    """
    if profile.runtime != "tflm" or profile.npu is not None:
        return None
    if mode == "off":
        return mcu_compress.compress_for_mcu(conversion.artifact, profile, mode, dataset.x_val,
                                             dense_int8=conversion.dense_int8, progress=stages.progress)
    with stages.run("compress", f"Compressing for TFLite Micro (DECODE, {mode}) and proving it in TFLM"):
        return mcu_compress.compress_for_mcu(conversion.artifact, profile, mode, dataset.x_val,
                                             dense_int8=conversion.dense_int8, progress=stages.progress)


def _compression_note(compression: mcu_compress.McuCompression) -> str:
    """conversion.notes' line for what DECODE compression did."""
    section = compression.section
    if not section["applied"]:
        return f"DECODE compression {section['mode']}: no tensor compressed (model.tflite is the dense int8 file)"
    count = sum(1 for t in section["tensors"] if t["method"] != "dense")
    return (f"DECODE compression {section['mode']}: {count} tensor(s) compressed, {section['uncompressed_bytes']:,} "
            f"-> {section['compressed_bytes']:,} B, bitwise identical in TFLite Micro")


def _baselines(conversion: convert.ConversionResult, compression: mcu_compress.McuCompression | None,
               npu: npu_compile.NpuBuild | None = None) -> dict[str, bytes]:
    """builddir.BASELINES variant -> bytes to write; pruned_int8 only when model.tflite differs from it
    (DECODE-compressed, or Vela-compiled: then it is the plain int8 model the build verified)."""
    found = {"dense_float32": conversion.dense_float32, "dense_int8": conversion.dense_int8}
    if compression is not None and compression.applied:
        found["pruned_int8"] = compression.uncompressed
    if npu is not None:
        found["pruned_int8"] = npu.plain_int8
    return {variant: data for variant, data in found.items() if data}


def block_shape(profile: Profile, quantize: str) -> tuple[int, int] | None:
    """The block shape the profile's sparse kernels read for this quantization, or None (--granularity block)."""
    if profile.runtime != "litert" or not profile.sparse_weights:
        return None
    return profile.block_sparsity_int8 if quantize in INT8_WEIGHT_MODES else profile.block_sparsity


def _schedule(options: BuildOptions, structured: tuple[int, int] | None) -> prune.ScheduleOptions:
    """The pruning schedule the options ask for (PruningError naming the flag when they conflict).

    --granularity element sets block_size (1, 1), which the per-profile policy reads as "no block shape".
    """
    return prune.ScheduleOptions(
        kind=options.schedule, initial_sparsity=options.initial_sparsity,
        final_sparsity=options.final_sparsity, begin_step=options.begin_step, end_step=options.end_step,
        power=options.power, frequency=options.frequency, structured=structured,
        block_size=(1, 1) if options.granularity == "element" else None)


def _prune_description(options: BuildOptions) -> str:
    if options.granularity != "channel":
        return "Pruning and fine-tuning"
    then = (f", then element-wise to {options.element_sparsity:g}" if options.element_sparsity is not None else "")
    return f"Pruning {options.final_sparsity:g} of the channels while fine-tuning, shrinking the model{then}"


def _prune_channels(prepared: PreparedInputs, options: BuildOptions, profile: Profile,
                    schedule: prune.ScheduleOptions, progress: Progress
                    ) -> tuple[ChannelPruneResult, list[prune.LayerPolicy], prune.PruneResult]:
    """Channel masks on the schedule, surgery; then (--element-sparsity) TFMOT element-wise on the small model."""
    channels = channel_prune_and_finetune(prepared.model, prepared.dataset, schedule,
                                          skip_layers=frozenset(options.skip_layers), epochs=options.epochs,
                                          batch_size=options.batch_size, progress=progress, seed=options.seed)
    if options.element_sparsity is None:
        # Nothing zeroed inside the kept filters: the report's weight sparsity is 0 and its schedule the channels'.
        return channels, [], prune.PruneResult(model=channels.model, layers=[], overall_sparsity=0.0,
                                               end_step=channels.schedule.end_step, history=channels.history,
                                               schedule=channels.schedule)
    element = prune.ScheduleOptions(kind=options.schedule, final_sparsity=options.element_sparsity,
                                    power=options.power, frequency=options.frequency, block_size=(1, 1))
    small = PreparedInputs(channels.model, prepared.dataset, prepared.model_info, prepared.dense_accuracy)
    policies, pruned = _prune(small, options, profile, element, progress)
    return channels, policies, pruned


def _original_baselines(conversion: convert.ConversionResult, prepared: PreparedInputs, quantize: str,
                        channel: bool, profile: Profile) -> convert.ConversionResult:
    """Dense baselines of the model before pruning, on a channel build (sizes and ratios against what the user
    started from) and on an Ethos-U build (Vela's dense figures: the converter's "dense" int8 of the pruned model
    holds its zeros); other builds keep the converter's."""
    if channel:
        why = "channel pruning: the dense baselines are the original model, converted before any channel was removed"
    elif profile.npu is not None:
        why = ("Ethos-U: the dense baselines are the model before pruning, so Vela's figures for the dense int8 "
               "baseline compare dense with pruned")
    else:
        return conversion
    original, dataset = prepared.model, prepared.dataset
    dense_float32 = convert.convert_keras(original, quantize="none")
    try:
        dense_int8 = convert.convert_keras(original, quantize="int8", representative=dataset.x_train)
    except ConversionError:
        if quantize == "int8":
            raise
        dense_int8 = b""
    return dataclasses.replace(conversion, dense_float32=dense_float32, dense_int8=dense_int8,
                               notes=[*conversion.notes, why])


def _prune(prepared: PreparedInputs, options: BuildOptions, profile: Profile, schedule: prune.ScheduleOptions,
           progress: Progress) -> tuple[list[prune.LayerPolicy], prune.PruneResult]:
    """The per-layer plan for this profile, then TFMOT fine-tuning to it."""
    policies = prune.plan_policy(prepared.model, profile, schedule, skip_layers=frozenset(options.skip_layers),
                                 quantize=options.quantize, min_params=options.min_params,
                                 prune_output_layer=options.prune_output_layer, optimize=options.optimize)
    pruned = prune.prune_and_finetune(
        prepared.model, prepared.dataset, policies, schedule, epochs=options.epochs, batch_size=options.batch_size,
        tensorboard_dir=options.tensorboard, progress=progress, seed=options.seed, distribute=options.distribute)
    return policies, pruned


def _test_accuracy(prepared: PreparedInputs, artifact: bytes, pruned_model: Any, profile: Profile,
                   batch_size: int) -> dict[str, Any] | None:
    """The artifact's accuracy on the held-out test split, when the data set has one."""
    if prepared.test is None or prepared.dense_test_accuracy is None:
        return None
    x_test, y_test = prepared.test
    reference = verify.top1(_predict(pruned_model, x_test, batch_size))
    result = verify.verify_artifact(artifact, x_test, y_test, runtime=profile.runtime,
                                    reference_predictions=reference)
    return {"dense_float": prepared.dense_test_accuracy, "tflite": float(result.accuracy),
            "drop_points": round((prepared.dense_test_accuracy - result.accuracy) * 100.0, 3),
            "n_samples": len(y_test)}


def _failures(drop_points: float, dense: float, tflite: float, options: BuildOptions, check: dict[str, Any] | None,
              profile: Profile) -> list[str]:
    """What the finished build missed: the accuracy budget, and the profile's budgets."""
    failures = []
    if drop_points > options.max_accuracy_drop:
        failures.append(
            f"accuracy drop {drop_points:.2f} points (dense float {dense:.2%} -> .tflite "
            f"{tflite:.2%}) exceeds --max-accuracy-drop {options.max_accuracy_drop:g}")
    if check is not None and not check.get("fits", True):
        failed = [b["name"] for b in check.get("budgets", []) if not b.get("ok", True)]
        failures.append(f"the model does not fit the {profile.name} budget(s): {', '.join(failed)}")
    return failures


def class_names(dataset: Dataset, num_outputs: int) -> list[str]:
    """One name per model output, in output order (builddir.LABELS; deploy checks the count).

    The data set's names (digits "0".."9", the KWS classes, image or recording
    folder names, an .npz `labels`/`class_names` array), else the class ids.
    """
    names = list(dataset.labels or [])
    return [names[i] if i < len(names) else str(i) for i in range(num_outputs)]


def _sample_npz(dataset: Dataset) -> bytes:
    """builddir.SAMPLE: the first SAMPLE_SIZE validation inputs as the model takes them (x), and their labels (y)."""
    buffer = io.BytesIO()
    np.savez(buffer, x=np.ascontiguousarray(dataset.x_val[:SAMPLE_SIZE], np.float32),
             y=np.asarray(dataset.y_val[:SAMPLE_SIZE], np.int64).reshape(-1))
    return buffer.getvalue()


def _file_entry(data: bytes) -> dict[str, Any]:
    """How report.json's "files" describes a written file."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _publish(out_dir: Path, force: bool, artifact: bytes, baselines: dict[str, bytes], pruned_model: Any,
             document: dict[str, Any], *, sample: bytes, sample_count: int, labels: list[str]) -> None:
    """Write every output into a staging directory, then publish it as `out_dir` in one rename."""
    labels_text = "".join(f"{name}\n" for name in labels)
    files = document.setdefault("files", {})
    if "pruned_int8" in baselines:  # the file the compressed artifact is proven identical to
        files[builddir.BASELINES["pruned_int8"]] = _file_entry(baselines["pruned_int8"])
    files[builddir.SAMPLE] = dict(_file_entry(sample), samples=sample_count)
    files[builddir.LABELS] = dict(_file_entry(labels_text.encode()), classes=len(labels))
    with staged_output_dir(out_dir, force, ours=builddir.is_build_dir) as staging:
        atomic_write_bytes(staging / builddir.ARTIFACT, artifact)
        for variant, data in baselines.items():
            atomic_write_bytes(staging / builddir.BASELINES[variant], data)
        _save_keras(pruned_model, staging / builddir.PRUNED_MODEL)
        atomic_write_bytes(staging / builddir.SAMPLE, sample)
        atomic_write_text(staging / builddir.LABELS, labels_text)
        builddir.write_report(staging, document)
        write_report_html(staging, document)


def _save_keras(model: Any, path: Path) -> None:
    """Keras writes the file itself; a full disk there is the same exit-2 write error as fsutil's writes."""
    try:
        model.save(path)
    except OSError as exc:
        raise write_error(path, exc) from None


def raise_for_failures(result: BuildResult) -> None:
    """Turn a finished build's failed budgets into the exit-code-1 error, with a fix for each kind."""
    if not result.failures:
        return
    accuracy = [f for f in result.failures if f.startswith("accuracy drop")]
    untrusted = [f for f in result.failures if f.startswith("the .tflite")]
    fixes = ["The artifact, report.json and report.html were written for inspection"]
    if untrusted:
        fixes.append("for the .tflite: it does not compute what the Keras model does; build with --quantize none "
                     "to see whether int8 quantization is the cause, and check that --data is on the model's input "
                     "scale (int8 calibration uses it; docs/data.md)"
                     + ("; lower --min-agreement only if flipped near-ties are expected"
                        if any("--min-agreement" in f for f in untrusted) else ""))
    if accuracy:
        fixes.append("for accuracy: lower --final-sparsity, fine-tune longer (--epochs) or skip sensitive layers "
                     "(--skip-layers)")
    if len(accuracy) + len(untrusted) < len(result.failures):
        fixes.append("for the device: a smaller model, another profile, or your own budget in a copy of the profile "
                     "(--profile ./my.toml); `edgesparse check` shows each budget's margin")
    error_cls = AccuracyDropExceeded if accuracy else BudgetExceeded
    what = "The build's .tflite cannot be trusted" if untrusted else "The build did not meet its budget"
    raise error_cls(what, where=str(result.out_dir), received="; ".join(result.failures), fix="; ".join(fixes))
