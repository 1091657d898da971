"""Shared on-device code for the edgesparse demo apps (Raspberry Pi and any Linux board).

It imports only the standard library, numpy and one TFLite interpreter:
`ai_edge_litert` or `tflite_runtime`, whichever is installed, never
TensorFlow, so it runs in the small virtual environment a Pi image can have
(tflite-runtime 2.14 with numpy<2). `edgesparse deploy` copies this file into
every bundle next to the app, `config.json`, `model.tflite` and `labels.txt`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# The bundle ships a copy of the training-time feature code (edgesparse/data/audio.py) under lib/.
sys.path.insert(0, os.path.join(HERE, "lib"))


class AppError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


def load_config(path: str | None = None) -> dict:
    with open(path or os.path.join(HERE, "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def load_labels(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _interpreter_module(preferred: str = "auto"):
    """(module, name): ai_edge_litert if installed, else tflite_runtime (or as asked)."""
    order = {"auto": ("ai_edge_litert", "tflite_runtime"), "ai_edge_litert": ("ai_edge_litert",),
             "tflite_runtime": ("tflite_runtime",)}.get(preferred)
    if order is None:
        raise AppError(f"unknown --runtime {preferred!r}; use auto, ai_edge_litert or tflite_runtime")
    for name in order:
        try:
            module = __import__(f"{name}.interpreter", fromlist=["Interpreter"])
        except ImportError:
            continue
        return module, name
    raise AppError("no TFLite interpreter is installed: pip install tflite-runtime "
                   "(with numpy<2) or pip install ai-edge-litert")


class Model:
    """One .tflite in the interpreter: quantize in, invoke, dequantize out, time it."""

    def __init__(self, path: str, *, runtime: str = "auto", kernels: str = "auto", threads: int | None = None):
        module, self.runtime = _interpreter_module(runtime)
        self.version = _version(self.runtime)
        self.kernels = kernels
        if kernels not in ("auto", "default", "builtin"):
            raise AppError(f"unknown --kernels {kernels!r}; use auto, default or builtin")
        self.interpreter = None
        if kernels in ("auto", "default"):
            try:
                self.interpreter = self._make(module, path, threads, builtin=False)
                self.kernels = "default (XNNPACK where it applies)"
            except (RuntimeError, ValueError) as exc:
                # LiteRT's XNNPACK refuses sparse int8 FULLY_CONNECTED ("failed to prepare").
                if kernels == "default":
                    raise AppError(f"the default kernels could not prepare the model: {exc}") from None
        if self.interpreter is None:
            self.interpreter = self._make(module, path, threads, builtin=True)
            self.kernels = "builtin (no default delegates)"
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @staticmethod
    def _make(module, path, threads, builtin):
        kwargs = {"model_path": path, "num_threads": threads}
        if builtin:
            kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        interpreter = module.Interpreter(**kwargs)
        interpreter.allocate_tensors()
        return interpreter

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"][1:])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float features -> the input tensor's dtype, as the TFLite converter defined it."""
        x = np.asarray(x, np.float32).reshape(self.input["shape"])
        dtype = self.input["dtype"]
        scale, zero_point = self.input["quantization"]
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            q = np.round(x / np.float32(scale)) + zero_point
            return np.clip(q, info.min, info.max).astype(dtype)
        return x.astype(dtype)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output["quantization"]
        if np.issubdtype(y.dtype, np.integer) and scale:
            return (y.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
        return y.astype(np.float32)

    def run(self, x: np.ndarray, repeat: int = 1) -> tuple[np.ndarray, list[float]]:
        """Dequantized output (1-D) and each invoke's latency in ms."""
        self.interpreter.set_tensor(self.input["index"], self.quantize(x))
        times = []
        for _ in range(max(1, repeat)):
            self.interpreter.reset_all_variables()  # a fused LSTM's state must not carry over between inputs
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append((time.perf_counter() - start) * 1000.0)
        raw = self.interpreter.get_tensor(self.output["index"])
        return self.dequantize(raw).reshape(-1), times


def _version(name: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(name.replace("_", "-"))
    except Exception:
        return None


def result(source: str, labels: list[str], scores: np.ndarray, times: list[float], model: Model) -> dict:
    """One prediction as a JSON-ready dict; latency is the median of the timed invokes."""
    index = int(np.argmax(scores))
    ordered = sorted(times)
    return {
        "input": source,
        "label": labels[index] if index < len(labels) else str(index),
        "index": index,
        "score": float(scores[index]),
        "scores": [float(s) for s in scores],
        "latency_ms": round(ordered[len(ordered) // 2], 4),
        "latency_runs": len(times),
        "runtime": f"{model.runtime} {model.version or ''}".strip(),
        "kernels": model.kernels,
    }


def emit(record: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
    else:
        print(f"{record['input']}: {record['label']}  score {record['score']:.3f}  "
              f"latency {record['latency_ms']:.3f} ms  [{record['runtime']}, {record['kernels']}]", flush=True)


def add_common_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per input on stdout")
    parser.add_argument("--runtime", default="auto", help="auto, ai_edge_litert or tflite_runtime")
    parser.add_argument("--kernels", default="auto",
                        help="auto (XNNPACK, falling back to builtin kernels), default or builtin")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    parser.add_argument("--repeat", type=int, default=10, help="timed invokes per input (median is reported)")
    parser.add_argument("--model", default=None, help="override the bundled model.tflite")


def open_model(args, config: dict) -> tuple[Model, list[str]]:
    model = Model(args.model or os.path.join(HERE, config["model"]), runtime=args.runtime,
                  kernels=args.kernels, threads=args.threads)
    labels = load_labels(os.path.join(HERE, config["labels"]))
    return model, labels


def main_guard(main) -> int:
    """Run `main()`, turning AppError and missing files into one line and exit status 2."""
    try:
        from edgesparse.errors import EdgesparseError  # the bundled copy under lib/
    except ImportError:  # pragma: no cover - a vision bundle without lib/
        EdgesparseError = AppError
    try:
        return main() or 0
    except (AppError, EdgesparseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: file not found: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
