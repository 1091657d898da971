"""The Android bundle: model and labels as app assets, a test input, and a LiteRT integration note (Kotlin).

Why a note and not an app: an Android app is the user's own; what they need is
the model, the input/output quantization to (de)quantize with, and one input
with the output LiteRT gives for it here, to check their integration against.
Nothing is run on a phone here, and the bundle says so.

Raises `VerificationError` and `MissingDependency` from the LiteRT run (see
edgesparse.runtime.verify).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesparse.deploy.layout import Bundle, fill_template, template, write_json
from edgesparse.deploy.source import BuildInfo, Sample, npy_bytes
from edgesparse.fsutil import atomic_write_bytes, atomic_write_text
from edgesparse.runtime.verify import run_tflite
from edgesparse.tflite.graph import io_quantization

__all__ = ["write_android"]

_KWS_FEATURES = ("MFCCs from edgesparse/data/audio.py (49 frames x 10 coefficients; port it to Kotlin and "
                 "check it against test_input.npy)")
_VISION_FEATURES = "the image scaled as in training (see test_input.npy for one model input)"


def write_android(staging: Path, info: BuildInfo, smp: Sample) -> Bundle:
    """Model, labels, a test input with its expected output, and the Kotlin integration note."""
    assets = staging / "assets"
    atomic_write_bytes(assets / "model.tflite", info.model_bytes)
    atomic_write_text(assets / "labels.txt", "\n".join(info.labels) + "\n")
    atomic_write_bytes(staging / "test_input.npy", npy_bytes(smp.features))
    run = run_tflite(info.model_bytes, smp.features[None].astype(np.float32), runtime="litert")
    scores = np.asarray(run.outputs, np.float32).reshape(-1)
    best = int(np.argmax(scores))
    expected = {"label": info.labels[best], "index": best, "score": float(scores[best]),
                "scores": [float(s) for s in scores], "interpreter": run.interpreter}
    write_json(staging / "expected.json", expected)
    io = io_quantization(info.model_bytes)
    atomic_write_text(staging / "README.md", fill_template(template("android", "README.md"), {
        "NAME": info.name, "INPUT_SHAPE": "x".join(str(d) for d in (1, *info.input_shape)),
        "INPUT_DTYPE": io["input"]["dtype"], "INPUT_SCALE": repr(io["input"]["scale"]),
        "INPUT_ZERO_POINT": io["input"]["zero_point"], "OUTPUT_DTYPE": io["output"]["dtype"],
        "OUTPUT_SCALE": repr(io["output"]["scale"]), "OUTPUT_ZERO_POINT": io["output"]["zero_point"],
        "NUM_CLASSES": len(info.labels), "LABEL": expected["label"], "SCORE": f"{expected['score']:.4f}",
        "FEATURES": _KWS_FEATURES if info.kind == "kws" else _VISION_FEATURES}))
    return Bundle(path=staging, target="android", kind=info.kind, files=[], test_input="test_input.npy",
                  expected=expected, notes=["not run on a phone here: the note and expected.json are for the app"])
