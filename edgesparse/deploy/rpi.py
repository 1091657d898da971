"""The Raspberry Pi (any Linux board) bundle: a Python app, its runtime requirements, run.sh, a systemd unit.

Why a Python app and no TensorFlow: a Pi image runs tflite-runtime or
ai-edge-litert with numpy in a small venv. Keyword-spotting bundles carry
edgesparse/data/audio.py byte for byte, so the device computes the training
MFCCs with the training code itself. The app is run here on the bundle's test
input; expected.json is what the device must print.

Raises `DeployError` (a runtime known to compute this model wrongly, feature
code that imports something a device lacks) and `EdgesparseError` (the
bundled app failed here: a bug).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.deploy.layout import (
    PACKAGE_DIR,
    Bundle,
    demos_dir,
    device_dir_name,
    fill_template,
    slug,
    template,
    write_json,
)
from edgesparse.deploy.source import BuildInfo, DeployError, Sample
from edgesparse.deploy.ssh import Remote
from edgesparse.errors import EdgesparseError
from edgesparse.fsutil import atomic_write_bytes, atomic_write_text, umask
from edgesparse.tflite.edit import sparse_encoding_report

__all__ = [
    "FEATURE_CODE",
    "REQUIREMENTS",
    "copy_feature_code",
    "image_mapping",
    "pick_runtime",
    "tflite_runtime_hazards",
    "write_rpi",
]

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

# The training feature code a KWS bundle carries (relative to the edgesparse package), and what it may import.
FEATURE_CODE = ("data/audio.py", "errors.py")
_DEVICE_MODULES = frozenset(sys.stdlib_module_names) | {"numpy"}


def tflite_runtime_hazards(model_bytes: bytes) -> list[str]:
    """Weights tflite-runtime 2.14 computes wrongly: int8 block-sparse tensors FULLY_CONNECTED reads itself.

    Checked on this machine: for such a model (TF 2.21 converter, 1x16 blocks)
    tflite-runtime 2.14 returns the same output for every input, without an
    error, with and without XNNPACK; LiteRT 2.3 runs it correctly. DENSIFY'd
    sparse weights (any op) run correctly in both.
    """
    return [t.name for t in sparse_encoding_report(model_bytes)
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


def _imported_modules(source: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(("." * node.level) + (node.module or ""))
    return names


def copy_feature_code(lib: Path) -> list[str]:
    """Copy edgesparse/data/audio.py (and errors.py, which it imports) as they are, after checking their imports.

    The device must compute the training features, so the code is the training
    code itself, never a second implementation.
    """
    docstring = '"""The subset of edgesparse the on-device app needs (copied by `edgesparse deploy`)."""\n'
    copied = []
    for relative in FEATURE_CODE:
        for module in _imported_modules((PACKAGE_DIR / relative).read_text("utf-8")):
            if module != "edgesparse.errors" and module.split(".")[0] not in _DEVICE_MODULES:
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
    record: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    record["input"] = test_input
    return record


def image_mapping(info: BuildInfo, smp: Sample) -> dict[str, Any]:
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


def _write_unit(staging: Path, info: BuildInfo, app: str, remote: Remote | None) -> tuple[str, str]:
    """The systemd unit; returns its file name and the directory it expects the bundle in."""
    unit = f"edgesparse-{slug(info.name)}.service"
    user = (remote.user if remote else "") or "pi"
    home = "/root" if user == "root" else f"/home/{user}"
    path = remote.path if remote else device_dir_name(info)
    directory = path if path.startswith("/") else f"{home}/{path.removeprefix('~/')}"
    atomic_write_text(staging / unit, fill_template(template("rpi", "edgesparse-app.service"), {
        "NAME": info.name, "UNIT": unit, "APP": app, "USER": user, "DIR": directory,
        "SERVICE_ARGS": "--mic" if info.kind == "kws" else f"--watch {directory}/inbox"}))
    return unit, directory


def write_rpi(staging: Path, info: BuildInfo, smp: Sample, *, runtime: str, remote: Remote | None) -> Bundle:
    """Write the rpi bundle into `staging` and run its app here on the test input."""
    app = "kws_app.py" if info.kind == "kws" else "vision_app.py"
    rpi = demos_dir() / "rpi"
    atomic_write_bytes(staging / "model.tflite", info.model_bytes)
    atomic_write_text(staging / "labels.txt", "\n".join(info.labels) + "\n")
    for name in ("edgesparse_app.py", app):
        shutil.copyfile(rpi / name, staging / name)
    if info.kind == "kws":
        copy_feature_code(staging / "lib")
    atomic_write_bytes(staging / smp.file_name, smp.file_bytes)
    config: dict[str, Any] = {"model": "model.tflite", "labels": "labels.txt", "kind": info.kind,
                              "input_shape": list(info.input_shape), "test_input": smp.file_name}
    if info.kind == "vision":
        config["image"] = image_mapping(info, smp)
    write_json(staging / "config.json", config)
    atomic_write_text(staging / "requirements.txt",
                      "# The on-device runtime: no TensorFlow. sounddevice (microphone) is optional;\n"
                      "# install it yourself when needed.\n" + REQUIREMENTS[runtime]
                      + ("pillow>=9  # reads pictures\n" if info.kind == "vision" else ""))
    atomic_write_text(staging / "run.sh", fill_template(template("rpi", "run.sh"), {"APP": app}))
    os.chmod(staging / "run.sh", 0o777 & ~umask())             # executable, for whom the umask allows
    unit, directory = _write_unit(staging, info, app, remote)
    expected = _run_local_app(staging, app, smp.file_name)
    expected["true_label"] = info.labels[smp.label] if smp.label is not None else None
    write_json(staging / "expected.json", expected)
    atomic_write_text(staging / "README.md", fill_template(template("rpi", "README.md"), {
        "NAME": info.name, "APP": app, "TEST_INPUT": smp.file_name, "UNIT": unit, "DIR": directory,
        "LABEL": expected["label"], "SCORE": f"{expected['score']:.3f}", "KIND": info.kind,
        "RUNTIME": expected["runtime"]}))
    return Bundle(path=staging, target="rpi", kind=info.kind, files=[], test_input=smp.file_name, expected=expected)
