"""The microcontroller bundle: a TFLite Micro C++ project, its tensor arena size, and a real compile.

Why generated C++: a microcontroller has no file system or Python; the model is
a 16-byte-aligned array in flash (model_data.cc), main.cc registers exactly the
model's ops in a MicroMutableOpResolver, the arena is sized from the estimator's
plan and the TFLM interpreter's own use plus a margin, and the test vector is
the sample quantized as the input tensor expects. model_data.cc is compiled
with arm-none-eabi-g++ for the profile's core so the flash figure is measured.

Raises `DeployError` (not an mcu profile, ops TFLM cannot run, an input type
without test-vector support, a failed compile, an arena that cannot be sized),
and `MissingDependency` when tflite-micro is not installed (from edgesparse.runtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse._types import Progress
from edgesparse.deploy.layout import Bundle, fill_template, template, write_json
from edgesparse.deploy.source import BuildInfo, DeployError, Sample
from edgesparse.errors import EdgesparseError
from edgesparse.estimate import check_model
from edgesparse.fsutil import atomic_write_bytes, atomic_write_text
from edgesparse.profiles import Profile, load_profile
from edgesparse.runtime.verify import RunResult, run_tflite
from edgesparse.tflite.graph import io_quantization, op_types

__all__ = [
    "ARENA_MARGIN_FRACTION",
    "ARENA_MARGIN_MIN_BYTES",
    "CORE_FLAGS",
    "McuCompile",
    "arena_size",
    "compile_model_data",
    "mcu_profile",
    "quantize_input",
    "resolver_method",
    "write_mcu",
]

# Arm cores as profiles name them (Profile.core); ESP32-S3 is Xtensa (no arm-none-eabi build).
_FPV4 = ("-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
CORE_FLAGS = {
    "cortex-m4": ("-mcpu=cortex-m4", *_FPV4),
    "cortex-m33": ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
    "cortex-m7": ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
    "cortex-m0plus": ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
}

ARENA_MARGIN_FRACTION = 0.25
ARENA_MARGIN_MIN_BYTES = 2048

# Builtin operator names whose MicroMutableOpResolver method is not the plain CamelCase.
_RESOLVER_EXCEPTIONS = {"PADV2": "AddPadV2", "CUMSUM": "AddCumSum",
                        "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
                        "LOG_SOFTMAX": "AddLogSoftmax", "BATCH_MATMUL": "AddBatchMatMul"}
_NOT_IN_TFLM = {"DENSIFY": "TFLM cannot expand sparse weights: rebuild for a TFLM profile "
                           "(edgesparse build --profile nrf52840 ...), which writes a dense int8 flatbuffer",
                "CUSTOM": "register the custom kernel in main.cc yourself (resolver.AddCustom)"}
# Tensor type -> (C type, TfLitePtrUnion field).
_CTYPES = {"int8": ("int8_t", "int8"), "uint8": ("uint8_t", "uint8"), "float32": ("float", "f")}


@dataclass
class McuCompile:
    """model_data.cc compiled for the profile's core (or why it was not)."""

    compiler: str | None
    core: str
    flags: list[str]
    object_file: str | None
    flash_bytes: int | None              # text+data of model_data.o (arm-none-eabi-size)
    rodata_bytes: int | None
    alignment: int | None                # of the section that holds g_model
    skipped: str | None = None           # why no compile happened (Xtensa, no toolchain)


def resolver_method(op: str) -> str:
    """BuiltinOperator name -> MicroMutableOpResolver method ('DEPTHWISE_CONV_2D' -> 'AddDepthwiseConv2D')."""
    if op in _RESOLVER_EXCEPTIONS:
        return _RESOLVER_EXCEPTIONS[op]
    return "Add" + "".join(part if re.fullmatch(r"\d+D", part) else part.capitalize() for part in op.split("_"))


def mcu_profile(info: BuildInfo, profile: str | None) -> Profile:
    """--profile, else the build's profile; it must be a microcontroller's."""
    name = profile or (info.report.get("profile") or {}).get("name")
    prof = load_profile(name) if name else None
    if prof is None or prof.device_class != "mcu":
        raise DeployError("A microcontroller bundle needs a microcontroller profile", where="--profile",
                          expected="an mcu profile such as nrf52840, stm32l4r5, ek_ra6m4, stm32h7a3, rp2040",
                          received=f"{name} ({prof.device_class})" if prof else "none",
                          fix="Pass --profile NAME (it picks the core and sizes the tensor arena)")
    return prof


def quantize_input(x: np.ndarray, io: dict[str, Any]) -> np.ndarray:
    """Float features -> the input tensor's type, the way verify.run_tflite quantizes (float64)."""
    dtype = np.dtype(io["dtype"])
    if dtype.kind == "f" or not io["scale"]:
        return np.asarray(x, dtype)
    limits = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / io["scale"]) + io["zero_point"]
    return np.clip(q, limits.min, limits.max).astype(dtype)


def arena_size(model_bytes: bytes, prof: Profile, tflm_used: int | None) -> tuple[int, str, str]:
    """Tensor arena bytes for main.cc, a sentence saying where the figure comes from, and a short form.

    The estimator's plan is for the profile's 32-bit layout and kernels (CMSIS-NN
    scratch included); the TFLM Python run is the real allocator, on a 64-bit host
    with reference kernels. The larger of the two, plus a margin, is taken.
    """
    planned = None
    try:
        ram = check_model(model_bytes, prof).ram
        planned = int(ram.total_bytes - ram.breakdown.get("runtime_persistent_ram", 0))
        basis = f"the estimator's TFLM plan ({ram.method}) = {planned} bytes"
    except EdgesparseError as exc:
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


def _tflm_ops(info: BuildInfo) -> list[str]:
    """The model's ops, refused when TFLM cannot run one of them."""
    ops = op_types(info.model_bytes)
    for op in ops:
        if op in _NOT_IN_TFLM:
            raise DeployError(f"The model uses {op}, which TFLite Micro cannot run", where=str(info.path),
                              expected="a dense int8 flatbuffer from a TFLM profile build",
                              received=f"ops {', '.join(ops)}", fix=_NOT_IN_TFLM[op])
    return ops


@dataclass
class _Run:
    """The test vector, and what TFLM answered for it here."""

    vector: np.ndarray
    io: dict[str, dict[str, Any]]
    run: RunResult
    scores: np.ndarray
    best: int


def _run_test_vector(info: BuildInfo, smp: Sample) -> _Run:
    io = io_quantization(info.model_bytes)
    if io["input"]["dtype"] not in _CTYPES:
        raise DeployError("The model input type has no test-vector support", where="input 0",
                          expected="int8, uint8 or float32", received=io["input"]["dtype"],
                          fix="Build with --quantize int8 for a microcontroller")
    vector = quantize_input(smp.features[None], io["input"])
    run = run_tflite(info.model_bytes, vector, runtime="tflm")
    scores = np.asarray(run.outputs, np.float32).reshape(-1)
    return _Run(vector=vector, io=io, run=run, scores=scores, best=int(np.argmax(scores)))


def _model_files(info: BuildInfo) -> dict[str, str]:
    """model_data.h/.cc: the flatbuffer as an alignas(16) array."""
    sha = hashlib.sha256(info.model_bytes).hexdigest()
    common = {"NAME": info.name, "MODEL_BYTES": len(info.model_bytes), "MODEL_SHA256": sha}
    return {"model_data.h": fill_template(template("mcu", "model_data.h"), common),
            "model_data.cc": fill_template(template("mcu", "model_data.cc"), {
                **common, "BYTES": _c_array(np.frombuffer(info.model_bytes, np.uint8), 12, lambda v: f"0x{v:02x}")})}


def _vector_files(info: BuildInfo, smp: Sample, t: _Run) -> dict[str, str]:
    """test_vector.h/.cc: the sample quantized as the input tensor expects."""
    in_io = t.io["input"]
    ctype, _ = _CTYPES[in_io["dtype"]]
    fmt: Callable[[Any], str] = (lambda v: repr(float(v)) + "f") if ctype == "float" else str
    common = {"NAME": info.name, "COUNT": int(t.vector.size), "CTYPE": ctype,
              "SHAPE": "x".join(str(d) for d in in_io["shape"]), "SCALE": repr(in_io["scale"]),
              "ZERO_POINT": in_io["zero_point"]}
    return {"test_vector.h": fill_template(template("mcu", "test_vector.h"), common),
            "test_vector.cc": fill_template(template("mcu", "test_vector.cc"), {
                **common, "SOURCE": smp.source.replace("\n", " "),
                "TRUE_LABEL": info.labels[smp.label] if smp.label is not None else "unknown",
                "VALUES": _c_array(t.vector, 16, fmt)})}


def _main_cc(info: BuildInfo, ops: list[str], t: _Run, arena: int, arena_basis: str) -> str:
    """main.cc: the resolver with exactly the model's ops, the arena, the test vector and the expected label."""
    out_io = t.io["output"]
    q_best = (int(np.round(t.scores[t.best] / out_io["scale"] + out_io["zero_point"])) if out_io["scale"]
              else t.scores[t.best])
    _, out_field = _CTYPES.get(out_io["dtype"], ("float", "f"))
    dequantize = (f"(output->data.{out_field}[best] - ({out_io['zero_point']})) * {out_io['scale']!r}f"
                  if out_field != "f" else "output->data.f[best]")
    return fill_template(template("mcu", "main.cc"), {
        "NAME": info.name, "EXPECTED_LABEL": info.labels[t.best], "EXPECTED_SCORE_Q": q_best,
        "ARENA_COMMENT": "\n".join("// " + line for line in textwrap.wrap("Tensor arena: " + arena_basis + ".", 96)),
        "ARENA_SIZE": arena, "NUM_OPS": len(ops),
        "REGISTER_OPS": "\n".join(f"  if (resolver.{resolver_method(op)}() != kTfLiteOk) return kTfLiteError;"
                                  for op in ops),
        "LABELS": ", ".join(json.dumps(label) for label in info.labels), "NUM_LABELS": len(info.labels),
        "EXPECTED_INDEX": t.best, "OUTPUT_FIELD": out_field, "DEQUANTIZE_BEST": dequantize})


def write_mcu(staging: Path, info: BuildInfo, smp: Sample, *, profile: str | None, progress: Progress) -> Bundle:
    """Write the TFLM project into `staging`, run its test vector in TFLM here, compile model_data.cc."""
    prof = mcu_profile(info, profile)
    ops = _tflm_ops(info)
    progress("stage", {"name": "tflm", "description": "Running the test vector in TFLite Micro"})
    t = _run_test_vector(info, smp)
    size, arena_basis, arena_short = arena_size(info.model_bytes, prof, t.run.arena_bytes)
    files = {**_model_files(info), **_vector_files(info, smp, t), "main.cc": _main_cc(info, ops, t, size, arena_basis)}
    for file_name, text in files.items():
        atomic_write_text(staging / file_name, text)
    atomic_write_bytes(staging / "model.tflite", info.model_bytes)
    atomic_write_text(staging / "labels.txt", "\n".join(info.labels) + "\n")

    core = prof.core or "unknown"
    progress("stage", {"name": "compile", "description": f"Compiling model_data.cc for {core}"})
    compiled = compile_model_data(staging, core)
    expected = {"label": info.labels[t.best], "index": t.best, "score": float(t.scores[t.best]),
                "scores": [float(s) for s in t.scores], "interpreter": t.run.interpreter,
                "test_vector_sha256": hashlib.sha256(t.vector.tobytes()).hexdigest()}
    write_json(staging / "expected.json", expected)
    flash = (f"{compiled.flash_bytes:,} bytes (arm-none-eabi-size of model_data.o, {core})"
             if compiled.flash_bytes is not None else f"not compiled here: {compiled.skipped}")
    atomic_write_text(staging / "README.md", fill_template(template("mcu", "README.md"), {
        "NAME": info.name, "PROFILE": prof.name, "CORE": core, "FLAGS": " ".join(compiled.flags) or "(none)",
        "OPS": ", ".join(ops), "ARENA_SIZE": f"{size:,}", "ARENA_SOURCE": arena_basis,
        "LABEL": info.labels[t.best], "FLASH": flash, "MODEL_BYTES": f"{len(info.model_bytes):,}",
        "TFLM_ARENA": f"{t.run.arena_bytes:,}" if t.run.arena_bytes else "n/a"}))
    notes = [arena_short] + ([compiled.skipped] if compiled.skipped else [])
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
                      rodata_bytes=sections.get(".rodata.g_model"),
                      alignment=_section_alignment(obj, ".rodata.g_model"))


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
