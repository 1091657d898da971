"""build(): load -> prune -> convert -> verify -> estimate -> report.

The one place that strings the stages together. It never prints: progress goes
through a callback (`progress(event, fields)`) that the CLI renders. Every output
is staged in a temporary directory and published only when complete, so an
error or Ctrl-C leaves no half-written build and never clobbers an earlier one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgesparse.errors import AccuracyDropExceeded, BudgetExceeded, DataError
from edgesparse.fsutil import atomic_write_bytes, check_output_free, staged_output_dir
from edgesparse.profiles.profile import Profile, load_profile

Progress = Callable[[str, dict], None]

ARTIFACT_NAME = "model.tflite"
PRUNED_MODEL_NAME = "pruned_model.keras"
REPORT_NAME = "report.json"
# The dense references the artifact is compared against (sizes, battery gain from pruning).
BASELINES = {"dense_float32": "baselines/dense_float32.tflite", "dense_int8": "baselines/dense_int8.tflite"}


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
    final_sparsity: float | None = None   # None: 0.8, or M/N with --structured
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
    tensorboard: Path | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


@dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


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


def _final_sparsity(requested: float | None, structured: tuple[int, int] | None) -> float:
    """M:N structure fixes the sparsity at M/N; otherwise the TFMOT-style default of 0.8."""
    if requested is not None:
        return requested
    return structured[0] / structured[1] if structured else 0.8


def default_out_dir(model_name: str, profile: Profile) -> Path:
    return Path("build") / f"{model_name}-{profile.name}"


def _noop(event: str, fields: dict) -> None:
    return None


def _top1(probabilities: np.ndarray) -> np.ndarray:
    return np.asarray(probabilities).reshape(len(probabilities), -1).argmax(axis=1)


def _keras_predict(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


@dataclass
class PreparedInputs:
    """The dense model and data, loaded and checked once; a sweep reuses them for every point."""

    model: Any
    dataset: Any
    model_info: dict[str, Any]
    dense_accuracy: float
    test: tuple[np.ndarray, np.ndarray] | None = None   # held-out split, when the data set has one
    dense_test_accuracy: float | None = None


DEMOS = ("digits", "kws")


def _load_demo(name: str, progress: Progress):
    if name == "kws":
        from edgesparse.pipeline.demos import kws

        model, dataset = kws.demo_model(progress=progress)
        return model, dataset, kws.test_split()
    from edgesparse.pipeline.demos import digits as demo

    model, dataset = demo.demo_model(progress=progress)
    return model, dataset, None


def _load_user_data(path: Path, model, seed: int):
    """--data: an .npz, a folder of <label>/ images, or <label>/*.wav recordings (Speech Commands layout).

    Returns (dataset, test split or None). A folder is read for this model: images
    at its input size and channel count; recordings as MLPerf MFCCs, which need a
    (49, 10, 1) input and the 12 Speech Commands classes (checked before any file is decoded).
    """
    from edgesparse.data import dataset as data_mod

    if not path.expanduser().is_dir():
        return data_mod.load_npz(path), None
    input_shape = tuple(model.input_shape[1:])
    num_outputs = int(np.prod([d for d in model.output_shape[1:] if d is not None]))
    if data_mod.folder_kind(path) == "images":
        dataset = data_mod.load_image_folder(path, input_shape=input_shape, seed=seed)
        if dataset.num_classes != num_outputs:
            raise DataError("The image folder's classes do not match the model's outputs", where=str(path),
                            expected=f"one class folder per output ({num_outputs})",
                            received=f"{dataset.num_classes} class folders ({', '.join(dataset.labels[:10])}"
                                     f"{', ...' if dataset.num_classes > 10 else ''})",
                            fix="Add or remove class folders, or give the model one output per class")
        return dataset, None
    from edgesparse.data import audio
    from edgesparse.pipeline.demos import kws

    want = tuple(audio.FEATURE_SHAPE)
    fits = len(input_shape) == len(want) and all(d is None or int(d) < 0 or int(d) == w
                                                  for d, w in zip(input_shape, want))
    if not fits or num_outputs != len(kws.LABELS):
        raise DataError("A folder of .wav recordings needs a keyword-spotting model", where=str(path),
                        expected=f"a model with input {want} (MLPerf Tiny MFCCs) and {len(kws.LABELS)} outputs "
                                 f"({', '.join(kws.LABELS)})",
                        received=f"model input {tuple(input_shape)} and {num_outputs} outputs",
                        fix="Use a DS-CNN such as kws.build_ds_cnn(), or compute your own features and pass "
                            "an .npz (docs/data.md)")
    folders = {d.name.lower() for d in path.expanduser().iterdir() if d.is_dir()}
    if not folders & set(kws.KEYWORDS):
        raise DataError("No folder of the recordings is a Speech Commands keyword", where=str(path),
                        expected=f"folders named after the keywords ({', '.join(kws.KEYWORDS)}); "
                                 "every other folder is read as 'unknown'",
                        received=f"folders {', '.join(sorted(folders)[:8])}{', ...' if len(folders) > 8 else ''}",
                        fix="For other words use kws.load_folder(root, keywords=(...)) and kws.save_npz, "
                            "then pass the .npz (docs/kws.md)")
    splits = kws.load_folder(path, seed=seed)
    test = (splits.x_test, splits.y_test) if len(splits.y_test) else None
    return splits.dataset, test


def prepare_inputs(options: BuildOptions, progress: Progress | None = None) -> PreparedInputs:
    """Load the model and data set (the user's files, or a built-in demo) and check they match."""
    from edgesparse.data import dataset as data_mod
    from edgesparse.pipeline import models

    progress = progress or _noop
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
        dataset, test = _load_user_data(Path(options.data), model, options.seed)
        info = {"source": str(options.model), "format": loaded.format, "name": loaded.name,
                "rebuilt_from_keras3": loaded.rebuilt_from_keras3,
                "rebuild_max_abs_error": loaded.rebuild_max_abs_error}
    input_shape = tuple(int(d) if d is not None else -1 for d in model.input_shape[1:])
    num_classes = int(np.prod([d for d in model.output_shape[1:] if d is not None]))
    data_mod.check_compatible(dataset, input_shape, num_classes,
                              source=str(options.data) if options.data else info["source"])
    info.update(input_shape=list(input_shape), num_classes=num_classes, params=int(model.count_params()),
                labels=list(dataset.labels) if getattr(dataset, "labels", None) else None)
    dense_accuracy = _accuracy(model, dataset.x_val, dataset.y_val, options.batch_size)
    dense_test = _accuracy(model, *test, options.batch_size) if test is not None else None
    return PreparedInputs(model, dataset, info, dense_accuracy, test, dense_test)


def _accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    return float(np.mean(_top1(_keras_predict(model, x, batch_size)) == np.asarray(y)))


def _model_name(options: BuildOptions) -> str:
    if options.model is None:
        return options.demo
    from edgesparse.pipeline.models import safe_name

    return safe_name(options.model)


def build(options: BuildOptions, progress: Progress | None = None,
          prepared: PreparedInputs | None = None) -> BuildResult:
    """Run the whole pipeline and publish `out_dir` atomically. Raises EdgesparseError.

    `prepared` lets a sweep pass the dense model and data it loaded once.
    """
    progress = progress or _noop
    started = time.perf_counter()
    timings: dict[str, float] = {}
    starts: dict[str, float] = {}

    def stage(name: str, description: str) -> None:
        starts[name] = time.perf_counter()
        progress("stage", {"name": name, "description": description})

    def done(name: str) -> None:
        timings[name] = round(time.perf_counter() - starts[name], 3)
        progress("stage_done", {"name": name, "seconds": timings[name]})

    profile = load_profile(options.profile)
    structured = parse_structured(options.structured)
    options = dataclasses.replace(options, final_sparsity=_final_sparsity(options.final_sparsity, structured))
    out_dir = Path(options.out) if options.out else default_out_dir(_model_name(options), profile)
    check_output_free(out_dir, options.force)

    if options.demo not in DEMOS:
        raise DataError("Unknown demo", expected=" or ".join(DEMOS), received=repr(options.demo))
    from edgesparse.pipeline import convert
    from edgesparse.pipeline import prune
    from edgesparse.report import document as report
    from edgesparse.runtime import verify

    stage("load", "Loading model and data")
    if prepared is None:
        prepared = prepare_inputs(options, progress)
    model, dataset, model_info = prepared.model, prepared.dataset, dict(prepared.model_info)
    acc_dense = prepared.dense_accuracy
    done("load")

    stage("prune", "Pruning and fine-tuning")
    schedule = prune.ScheduleOptions(
        kind=options.schedule, initial_sparsity=options.initial_sparsity,
        final_sparsity=options.final_sparsity, begin_step=options.begin_step, end_step=options.end_step,
        power=options.power, frequency=options.frequency, structured=structured)
    policies = prune.plan_policy(model, profile, schedule, skip_layers=frozenset(options.skip_layers),
                                 quantize=options.quantize)
    pruned = prune.prune_and_finetune(
        model, dataset, policies, schedule, epochs=options.epochs, batch_size=options.batch_size,
        tensorboard_dir=options.tensorboard, progress=progress)
    pruned_pred = _keras_predict(pruned.model, dataset.x_val, options.batch_size)
    acc_pruned = float(np.mean(_top1(pruned_pred) == dataset.y_val))
    done("prune")

    stage("convert", f"Converting to TFLite ({options.quantize})")
    conversion = convert.build_artifact(pruned.model, dataset, quantize=options.quantize, profile=profile)
    done("convert")

    stage("verify", f"Running the artifact in {'TFLite Micro' if profile.runtime == 'tflm' else 'LiteRT'}")
    verification = verify.verify_artifact(
        conversion.artifact, dataset.x_val, dataset.y_val, runtime=profile.runtime,
        reference_predictions=_top1(pruned_pred))
    done("verify")

    stage("estimate", f"Checking against the {profile.name} profile")
    check = _device_check(conversion.artifact, profile)
    done("estimate")

    test_accuracy = None
    if prepared.test is not None:
        x_test, y_test = prepared.test
        tflite_test = verify.verify_artifact(conversion.artifact, x_test, y_test, runtime=profile.runtime,
                                             reference_predictions=_top1(_keras_predict(pruned.model, x_test, options.batch_size)))
        test_accuracy = {"dense_float": prepared.dense_test_accuracy, "tflite": float(tflite_test.accuracy),
                         "drop_points": round((prepared.dense_test_accuracy - tflite_test.accuracy) * 100.0, 3),
                         "n_samples": int(len(y_test))}

    drop_points = round((acc_dense - verification.accuracy) * 100.0, 3)
    failures: list[str] = []
    if drop_points > options.max_accuracy_drop:
        failures.append(
            f"accuracy drop {drop_points:.2f} points (dense float {acc_dense:.2%} -> .tflite "
            f"{verification.accuracy:.2%}) exceeds --max-accuracy-drop {options.max_accuracy_drop:g}")
    if check is not None and not check.get("fits", True):
        failed = [b["name"] for b in check.get("budgets", []) if not b.get("ok", True)]
        failures.append(f"the model does not fit the {profile.name} budget(s): {', '.join(failed)}")

    timings["total"] = round(time.perf_counter() - started, 3)
    document = report.build_report(
        options=options.to_dict(), profile=profile, model_info=model_info, dataset=dataset,
        policies=policies, pruned=pruned, conversion=conversion, verification=verification,
        accuracies={"dense_float": acc_dense, "pruned_keras": acc_pruned, "test": test_accuracy},
        drop_points=drop_points,
        check=check, failures=failures, timings=timings)

    stage("write", f"Writing {out_dir}")
    with staged_output_dir(out_dir, options.force) as staging:
        atomic_write_bytes(staging / ARTIFACT_NAME, conversion.artifact)
        for variant, relative in BASELINES.items():
            if getattr(conversion, variant):
                atomic_write_bytes(staging / relative, getattr(conversion, variant))
        pruned.model.save(staging / PRUNED_MODEL_NAME)
        report.write_report(staging, document)
        report.write_html(staging, document)
    done("write")

    result = BuildResult(out_dir=out_dir, report=document, failures=failures)
    return result


def raise_for_failures(result: BuildResult) -> None:
    """Turn a finished build's failed budgets into the exit-code-1 error, with a fix for each kind."""
    if not result.failures:
        return
    accuracy = [f for f in result.failures if f.startswith("accuracy drop")]
    fixes = ["The artifact, report.json and report.html were written for inspection"]
    if accuracy:
        fixes.append("for accuracy: lower --final-sparsity, fine-tune longer (--epochs) or skip sensitive layers "
                     "(--skip-layers)")
    if len(accuracy) < len(result.failures):
        fixes.append("for the device: a smaller model, another profile, or your own budget in a copy of the profile "
                     "(--profile ./my.toml); `edgesparse check` shows each budget's margin")
    error_cls = AccuracyDropExceeded if accuracy else BudgetExceeded
    raise error_cls("The build did not meet its budget", where=str(result.out_dir),
                    received="; ".join(result.failures), fix="; ".join(fixes))


def _device_check(artifact: bytes, profile: Profile) -> dict[str, Any] | None:
    """The estimator's verdict (flash, RAM, latency, energy, budgets) for report.json."""
    from edgesparse.estimate import latency as estimate

    return estimate.check_model(artifact, profile).to_dict()
