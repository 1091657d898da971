"""The microcontroller bundle: a TFLite Micro C++ project, its tensor arena size, and a real compile.

Why generated C++: a microcontroller has no file system or Python; the model is
a 16-byte-aligned array in flash (model_data.cc), main.cc registers exactly the
model's ops in a MicroMutableOpResolver (DECODE, TFLM's custom op for
compressed constants, included), the arena is sized from the estimator's plan
and the TFLM interpreter's own use plus a margin and then proven in TFLM (in a
child process: TFLM can segfault on a too small arena for compressed models),
and the test vector is the sample quantized as the input tensor expects.
model_data.cc is compiled with arm-none-eabi-g++ for the profile's core so the
flash figure is measured, and the compiled array is read back and compared
with the .tflite byte for byte.

The TFLM API main.cc uses for compressed models was read in tflite-micro's git
history (github.com/tensorflow/tflite-micro, at 90b983c, 2026-08-20):
`MicroMutableOpResolver::AddDecode()` (micro_mutable_op_resolver.h, registers
`Register_DECODE()` under the custom code "TFLM_DECODE"; since d96fe663d,
2025-10-17, PR #3132, LUT only; the PRUNING decoder since ecf58d7a4,
2025-10-23, PR #3162) and `MicroInterpreter::SetDecompressionMemory(const
MicroContext::AlternateMemoryRegion* regions, size_t count)`
(micro_interpreter.h; micro_context.h declares the region struct; alternate
decompression memory for DECODE since 6c1c1a89f, 2025-11-19, PR #3213, with an
initializer_list argument; this pointer-and-count form since f5c36ef2e,
2025-12-10, PR #3267). Neither needs USE_TFLM_COMPRESSION (the decode kernels
are in the default make sources).

For an Arm Ethos-U profile and a Vela-compiled model (an `ethos-u` custom op
holding the NPU command stream), `mcu_ethos_u` adds the NPU operator, the
driver set-up and the README's driver section; the test vector then runs
through the plain int8 model Vela compiled (TFLM here cannot run the NPU op),
the arena is the estimator's plan of the compiled file (Vela's offline plan of
its scratch included) plus the margin, and model_data.cc is compiled for the
profile's core (Cortex-M55 on the shipped Ethos-U devices).

Raises `DeployError` (not an mcu profile, ops TFLM cannot run, an input type
without test-vector support, a failed compile or compiled bytes that differ
from the model, an arena that cannot be sized or does not run the model, and
the Ethos-U refusals of `mcu_ethos_u`), and `MissingDependency` when
tflite-micro is not installed (from edgesparse.runtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse._types import Progress
from edgesparse.deploy.layout import Bundle, fill_template, template, write_json
from edgesparse.deploy.mcu_ethos_u import (
    NPU_NOT_VERIFIED,
    REFERENCE_FILE,
    EthosUDeploy,
    bundle_notes,
    ethos_u_deploy,
    main_cc_blocks,
    readme_blocks,
)
from edgesparse.deploy.source import BuildInfo, DeployError, Sample
from edgesparse.errors import EdgesparseError
from edgesparse.estimate import align_up, check_model
from edgesparse.fsutil import atomic_write_bytes, atomic_write_text
from edgesparse.profiles import Profile, load_profile
from edgesparse.runtime.tflm import interpreter_name
from edgesparse.runtime.tflm_decode import arena_fits, measured_arena
from edgesparse.runtime.verify import RunResult, run_tflite
from edgesparse.tflite.decode import DECODE_OP, DecodeSite, decode_sites
from edgesparse.tflite.ethos_u import ETHOS_U_OP
from edgesparse.tflite.graph import io_quantization, load_graph, op_types

__all__ = [
    "ARENA_MARGIN_FRACTION",
    "ARENA_MARGIN_MIN_BYTES",
    "CORE_FLAGS",
    "TFLM_ALT_MEMORY_SINCE",
    "TFLM_DECODE_SINCE",
    "TFLM_SOURCE_READ",
    "McuCompile",
    "arena_size",
    "compile_model_data",
    "decompression_memory_bytes",
    "mcu_profile",
    "quantize_input",
    "resolver_method",
    "tflm_requirement",
    "write_mcu",
]

# Arm cores as profiles name them (Profile.core); ESP32-S3 is Xtensa (no arm-none-eabi build).
_FPV4 = ("-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
CORE_FLAGS = {
    "cortex-m4": ("-mcpu=cortex-m4", *_FPV4),
    "cortex-m33": ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
    "cortex-m7": ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
    # Helium (MVE) and FPv5 from -mfpu=auto, as TFLM's cortex_m_generic makefile builds TARGET_ARCH=cortex-m55.
    "cortex-m55": ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard", "-mfpu=auto"),
    "cortex-m0plus": ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
}

ARENA_MARGIN_FRACTION = 0.25
ARENA_MARGIN_MIN_BYTES = 2048

# The tflite-micro commits main.cc's DECODE code needs, from the repository's git history (see the docstring).
TFLM_SOURCE_READ = "90b983c, 2026-08-20"
TFLM_DECODE_SINCE = ("ecf58d7a4 (2025-10-23, PR #3162: the PRUNING decoder; DECODE and AddDecode() since d96fe663d, "
                     "2025-10-17)")
TFLM_ALT_MEMORY_SINCE = ("f5c36ef2e (2025-12-10, PR #3267: MicroInterpreter::SetDecompressionMemory(regions, count); "
                         "from 6c1c1a89f, 2025-11-19, it took an initializer_list)")
_DECOMPRESSION_ALIGNMENT = 16     # MicroArenaBufferAlignment(): each DECODE output starts on it

# Operator names whose MicroMutableOpResolver method is not the plain CamelCase.
_RESOLVER_EXCEPTIONS = {"PADV2": "AddPadV2", "CUMSUM": "AddCumSum",
                        "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
                        "LOG_SOFTMAX": "AddLogSoftmax", "BATCH_MATMUL": "AddBatchMatMul",
                        DECODE_OP: "AddDecode", ETHOS_U_OP: "AddEthosU"}
_NOT_IN_TFLM = {"DENSIFY": "TFLM cannot expand sparse weights: rebuild for a TFLM profile "
                           "(edgesparse build --profile nrf52840 ...), which writes a dense int8 flatbuffer"}
_CUSTOM_FIX = "register the custom kernel in main.cc yourself (resolver.AddCustom)"
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
    bytes_match: bool | None = None      # g_model read back from the object (objcopy) == the .tflite


def resolver_method(op: str) -> str:
    """Operator name -> MicroMutableOpResolver method ('DEPTHWISE_CONV_2D' -> 'AddDepthwiseConv2D').

    DECODE is the custom op "TFLM_DECODE"; its method is AddDecode(). Vela's NPU op "ethos-u" is AddEthosU().
    """
    if op in _RESOLVER_EXCEPTIONS:
        return _RESOLVER_EXCEPTIONS[op]
    return "Add" + "".join(part if re.fullmatch(r"\d+D", part) else part.capitalize() for part in op.split("_"))


def tflm_requirement(uses_decode: bool, decompression_memory: bool) -> str:
    """The TFLM version the generated main.cc needs, as one README sentence (why: DECODE is recent)."""
    if not uses_decode:
        return ("any TFLite Micro with MicroMutableOpResolver and MicroInterpreter::arena_used_bytes() "
                "(every release since 2022); the model has no DECODE op")
    need = f"tflite-micro at commit {TFLM_DECODE_SINCE} or later"
    if decompression_memory:
        need = f"tflite-micro at commit {TFLM_ALT_MEMORY_SINCE} or later"
    return (f"{need}: the model uses DECODE (custom op {DECODE_OP}); in older trees main.cc does not compile "
            "(no AddDecode() or SetDecompressionMemory) or Prepare refuses the decoder "
            f"(the API was read at tflite-micro {TFLM_SOURCE_READ})")


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


def decompression_memory_bytes(sites: Sequence[DecodeSite], available: int) -> int:
    """The separate decompression memory main.cc allocates: what one DECODE op's outputs take, at most `available`.

    Why not all of `available`: TFLM resets the memory in every DECODE's Prepare,
    so each DECODE op reuses it from its start (outputs 16-byte aligned), and
    beyond the largest op's outputs it would be RAM allocated for nothing. A
    decoded tensor that does not fit goes to the arena (TFLM's fallback), which
    the arena measurement then includes.
    """
    if available <= 0 or not sites:
        return 0
    per_op: dict[tuple[int, int], int] = {}
    for site in sites:
        key = (site.subgraph, site.op)
        per_op[key] = align_up(per_op.get(key, 0), _DECOMPRESSION_ALIGNMENT) + site.info.decoded_bytes
    return min(int(available), align_up(max(per_op.values()), _DECOMPRESSION_ALIGNMENT))


def _planned_arena(model_bytes: bytes, prof: Profile) -> tuple[int, str]:
    ram = check_model(model_bytes, prof).ram
    return int(ram.total_bytes - ram.breakdown.get("runtime_persistent_ram", 0)), ram.method


def _estimated_arena(model_bytes: bytes, prof: Profile, decompression_bytes: int) -> tuple[int | None, str]:
    """The estimator's arena plan, or None (with why) when it is unavailable or not for this memory layout.

    With a decompression memory the plan counts only if the estimator models it,
    i.e. its plan changes when the profile's alt_decompression_bytes is 0: a plan
    that keeps the decoded tensors in the arena would size it as if there were none.
    """
    try:
        planned, method = _planned_arena(model_bytes, prof)
        basis = f"the estimator's TFLM plan ({method}) = {planned} bytes"
        if decompression_bytes:
            runtime = {**prof.runtime_table, "alt_decompression_bytes": 0}
            without, _ = _planned_arena(model_bytes, replace(prof, raw={**prof.raw, "runtime": runtime}))
            if without == planned:
                return None, (basis + ", which keeps the decoded tensors in the arena (it does not model the "
                                      "separate decompression memory), so it is not used")
    except EdgesparseError as exc:
        return None, f"the estimator was unavailable ({exc})"
    return planned, basis


def arena_size(model_bytes: bytes, prof: Profile, tflm_used: int | None, *,
               decompression_bytes: int = 0, estimated: tuple[int | None, str] | None = None) -> tuple[int, str, str]:
    """Tensor arena bytes for main.cc, a sentence saying where the figure comes from, and a short form.

    The estimator's plan is for the profile's 32-bit layout and kernels (CMSIS-NN
    scratch included); the TFLM Python run is the real allocator, on a 64-bit host
    with reference kernels. The larger of the two, plus a margin, is taken. With
    `decompression_bytes` of separate decompression memory (DECODE outputs outside
    the arena), `tflm_used` must be TFLM's use with that memory
    (runtime.tflm_decode.measured_arena). `estimated`: the estimator's plan when the caller already has it
    (`_estimated_arena` of the same model, profile and decompression memory), so it is made once.
    """
    planned, basis = estimated or _estimated_arena(model_bytes, prof, decompression_bytes)
    with_memory = f" with {decompression_bytes} bytes of decompression memory" if decompression_bytes else ""
    base = planned
    if tflm_used is not None and (base is None or tflm_used > base):
        base = tflm_used
        basis += (f"; the TFLM Python interpreter used {tflm_used} bytes{with_memory} on this host, "
                  + ("taken" if planned is None else "the larger, taken"))
    elif tflm_used is not None:
        basis += f" (the TFLM Python interpreter used {tflm_used} bytes{with_memory} on this 64-bit host)"
    source = "estimator plan" if base == planned else "TFLM Python run"
    if base is None:
        raise DeployError("Cannot size the tensor arena", expected="the estimator's plan or a TFLM run",
                          received=basis, fix="Check that tflite-micro is installed")
    margin = max(ARENA_MARGIN_MIN_BYTES, int(np.ceil(base * ARENA_MARGIN_FRACTION)))
    size = (base + margin + 15) // 16 * 16
    long = (f"{basis}, plus a margin of max({ARENA_MARGIN_MIN_BYTES} B, "
            f"{int(ARENA_MARGIN_FRACTION * 100)}%) for kernel scratch and port differences")
    return size, long, f"tensor arena {size:,} B = {base:,} B ({source}) + margin"


def _prove_arena(model_bytes: bytes, size: int, decompression_bytes: int) -> None:
    """The chosen arena really runs the model in TFLM (a child process: TFLM can crash on a too small arena)."""
    if not arena_fits(model_bytes, size, alt_decompression_bytes=decompression_bytes):
        raise DeployError("The tensor arena chosen for main.cc does not run the model in TFLite Micro",
                          where=interpreter_name(), expected=f"a model that allocates and runs in {size:,} bytes",
                          received="AllocateTensors or Invoke failed (or TFLM crashed) in a child process",
                          fix="This is a bug in edgesparse's arena sizing; please report it")


def _c_array(values: np.ndarray, per_line: int, fmt: Callable[[Any], str]) -> str:
    items = [fmt(v) for v in values.reshape(-1).tolist()]
    return "\n".join("    " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line))


def _tflm_ops(info: BuildInfo, npu: bool) -> list[str]:
    """The model's ops, refused when TFLM cannot run one of them (DECODE, a custom op, is TFLM's own; so is
    ethos-u, on a profile with an Ethos-U NPU)."""
    ops = op_types(info.model_bytes)
    known = {DECODE_OP, ETHOS_U_OP} if npu else {DECODE_OP}
    custom = {op.opcode for sg in load_graph(info.model_bytes).subgraphs for op in sg.ops if not op.builtin}
    for op in ops:
        if op in _NOT_IN_TFLM:
            raise DeployError(f"The model uses {op}, which TFLite Micro cannot run", where=str(info.path),
                              expected="a dense int8 flatbuffer from a TFLM profile build",
                              received=f"ops {', '.join(ops)}", fix=_NOT_IN_TFLM[op])
        if op in custom and op not in known:
            raise DeployError(f"The model uses the custom op {op}, which edgesparse cannot register for TFLite Micro",
                              where=str(info.path), expected=f"builtin ops and {' or '.join(sorted(known))}",
                              received=f"ops {', '.join(ops)}", fix=_CUSTOM_FIX)
    return ops


@dataclass
class _Run:
    """The test vector, and what TFLM answered for it here."""

    vector: np.ndarray
    io: dict[str, dict[str, Any]]
    run: RunResult
    scores: np.ndarray
    best: int


def _run_test_vector(model_bytes: bytes, smp: Sample) -> _Run:
    """The sample quantized for `model_bytes` and run in TFLM (for an Ethos-U build, the plain int8 model)."""
    io = io_quantization(model_bytes)
    if io["input"]["dtype"] not in _CTYPES:
        raise DeployError("The model input type has no test-vector support", where="input 0",
                          expected="int8, uint8 or float32", received=io["input"]["dtype"],
                          fix="Build with --quantize int8 for a microcontroller")
    vector = quantize_input(smp.features[None], io["input"])
    run = run_tflite(model_bytes, vector, runtime="tflm")
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


@dataclass
class _Memory:
    """The RAM main.cc sets aside: the tensor arena and, for DECODE outputs, a separate decompression memory."""

    arena: int
    basis: str                   # where the arena figure comes from (a sentence)
    short: str
    decompression: int           # bytes of separate decompression memory (0: none, decoded tensors in the arena)
    arena_without: int | None    # TFLM's arena use without that memory, when there is one


def _size_memory(info: BuildInfo, prof: Profile, sites: list[DecodeSite], t: _Run) -> _Memory:
    """Arena (and decompression memory) for main.cc, proven in TFLM in a child process."""
    decompression = decompression_memory_bytes(sites, prof.alt_decompression_bytes)
    tflm_used = t.run.arena_bytes
    if decompression:
        tflm_used = int(measured_arena(info.model_bytes, alt_decompression_bytes=decompression)["total"])
    size, basis, short = arena_size(info.model_bytes, prof, tflm_used, decompression_bytes=decompression)
    _prove_arena(info.model_bytes, size, decompression)
    return _Memory(size, basis, short, decompression, t.run.arena_bytes if decompression else None)


def _size_npu_memory(info: BuildInfo, prof: Profile, dep: EthosUDeploy) -> _Memory:
    """A Vela-compiled file's arena: the estimator's plan plus the margin, not proven (TFLM here has no NPU).

    The plan must hold Vela's scratch (the NPU's feature maps, at the file's
    offline-planned offsets): a plan smaller than that would be an estimator
    that ignores the offline plan, and the arena would fail on the board.
    """
    estimated = _estimated_arena(info.model_bytes, prof, 0)
    planned, basis = estimated
    if planned is None or planned < dep.compiled.arena_bytes:
        raise DeployError("Cannot size the tensor arena for the Ethos-U model", where=str(info.path),
                          expected=f"an arena plan holding Vela's scratch of {dep.compiled.arena_bytes:,} bytes",
                          received=basis, fix="This is a bug in edgesparse's arena estimate; please report it")
    size, basis, short = arena_size(info.model_bytes, prof, None, estimated=estimated)
    basis += (f" (it holds Vela's NPU scratch, {dep.compiled.arena_bytes:,} bytes at the offsets of the file's offline "
              "memory plan; not run in TFLM here, which cannot run the ethos-u op)")
    return _Memory(size, basis, short, 0, None)


def _decompression_blocks(prof: Profile, mem: _Memory) -> dict[str, str]:
    """main.cc's decompression memory and its hand-over to the interpreter (empty without one)."""
    if not mem.decompression:
        return {"DECODE_INCLUDE": "", "DECOMPRESSION_MEMORY": "", "SET_DECOMPRESSION_MEMORY": ""}
    comment = (f"Separate decompression memory (profile {prof.name}: runtime.alt_decompression_bytes = "
               f"{prof.alt_decompression_bytes}). DECODE writes the decoded tensors here instead of the tensor "
               "arena; TFLM resets it in every DECODE's Prepare, so it needs only the largest DECODE's outputs "
               f"({mem.decompression} bytes, 16-byte aligned). A decoded tensor that does not fit goes to the arena. "
               "If the device's separate RAM is not the default data region, place this array there with a "
               "section attribute and your linker script.")
    return {
        "DECODE_INCLUDE": '#include "tensorflow/lite/micro/micro_context.h"\n',
        "DECOMPRESSION_MEMORY": "\n" + "\n".join("// " + line for line in textwrap.wrap(comment, 96)) + "\n"
        f"constexpr int kDecompressionMemorySize = {mem.decompression};\n"
        "alignas(16) uint8_t g_decompression_memory[kDecompressionMemorySize];\n"
        "const tflite::MicroContext::AlternateMemoryRegion kDecompressionRegions[] = {\n"
        "    {g_decompression_memory, sizeof(g_decompression_memory)}};\n",
        "SET_DECOMPRESSION_MEMORY":
        "  // Only before AllocateTensors (the interpreter's init state); needs " + TFLM_ALT_MEMORY_SINCE.split(" (")[0]
        + " or later.\n"
        "  if (interpreter.SetDecompressionMemory(kDecompressionRegions, 1) != kTfLiteOk) {\n"
        '    MicroPrintf("SetDecompressionMemory failed");\n'
        "    return 1;\n"
        "  }\n",
    }


def _ops_comment(ops: list[str]) -> str:
    """main.cc's comment above the resolver: which ops, and the custom ones among them."""
    custom = ([f"DECODE, TFLM's custom op {DECODE_OP} that expands compressed weights"] if DECODE_OP in ops else []) + (
        [f"{ETHOS_U_OP}, the custom op that runs Vela's command stream on the NPU"] if ETHOS_U_OP in ops else [])
    text = (f"Exactly the {len(ops)} ops this model uses (read from its flatbuffer"
            + ("; " + " and ".join(custom) + (", counts as one)." if len(custom) == 1 else ", count as one each).")
               if custom else ")."))
    return "\n".join("// " + line for line in textwrap.wrap(text, 96))


def _main_cc(info: BuildInfo, prof: Profile, ops: list[str], t: _Run, mem: _Memory,
             dep: EthosUDeploy | None) -> str:
    """main.cc: the resolver with exactly the model's ops, the arena, the test vector and the expected label."""
    out_io = t.io["output"]
    q_best = (int(np.round(t.scores[t.best] / out_io["scale"] + out_io["zero_point"])) if out_io["scale"]
              else t.scores[t.best])
    _, out_field = _CTYPES.get(out_io["dtype"], ("float", "f"))
    dequantize = (f"(output->data.{out_field}[best] - ({out_io['zero_point']})) * {out_io['scale']!r}f"
                  if out_field != "f" else "output->data.f[best]")
    return fill_template(template("mcu", "main.cc"), {
        "NAME": info.name,
        "EXPECTED_COMMENT": "\n".join("// " + line for line in textwrap.wrap(
            "Runs the model once on a test vector from the validation data (test_vector.cc) and prints the label. "
            + ("The expected result, from the TFLM Python interpreter on the build machine, "
               if dep is None else f"The expected result, from the plain int8 model ({REFERENCE_FILE}) in the TFLM "
               "Python interpreter on the build machine (the NPU run is not verified there), ")
            + f'is "{info.labels[t.best]}" (int8 score {q_best}).', 80)),
        "ARENA_COMMENT": "\n".join("// " + line for line in textwrap.wrap("Tensor arena: " + mem.basis + ".", 96)),
        "ARENA_SIZE": mem.arena, "NUM_OPS": len(ops),
        "OPS_COMMENT": _ops_comment(ops),
        "REGISTER_OPS": "\n".join(f"  if (resolver.{resolver_method(op)}() != kTfLiteOk) return kTfLiteError;"
                                  for op in ops),
        "LABELS": ", ".join(json.dumps(label) for label in info.labels), "NUM_LABELS": len(info.labels),
        "EXPECTED_INDEX": t.best, "OUTPUT_FIELD": out_field, "DEQUANTIZE_BEST": dequantize,
        **_decompression_blocks(prof, mem), **main_cc_blocks(dep, prof)})


def _decode_notes(sites: list[DecodeSite], mem: _Memory) -> str:
    """README bullets on the compressed tensors and where they are decoded to (empty for a plain model)."""
    if not sites:
        return ""
    methods = ", ".join(sorted({site.info.method for site in sites}))
    elements = sum(site.info.elements for site in sites)
    notes = (f"* Compressed: {len(sites)} constant tensors are stored encoded ({methods}) and expanded by DECODE "
             f"right before the op that reads them, on every invoke ({elements:,} elements decoded per invoke). "
             "The decoded copy lives in RAM while it is used.\n")
    if mem.decompression:
        notes += (f"* Decompression memory: {mem.decompression:,} bytes (`g_decompression_memory`, handed to the "
                  "interpreter with `SetDecompressionMemory`) hold the decoded tensors; with it TFLM's arena "
                  f"use here drops from {mem.arena_without or 0:,} to the figure below.\n")
    else:
        notes += "* Decoded tensors live in the tensor arena (the profile names no separate decompression memory).\n"
    return notes


def _readme(info: BuildInfo, prof: Profile, ops: list[str], t: _Run, mem: _Memory, sites: list[DecodeSite],
            compiled: McuCompile, dep: EthosUDeploy | None) -> str:
    core = compiled.core
    flash = (f"{compiled.flash_bytes:,} bytes (arm-none-eabi-size of model_data.o, {core})"
             if compiled.flash_bytes is not None else f"not compiled here: {compiled.skipped}")
    checked = (f"`model_data.cc` compiles for {core}, and `g_model` read back from the object "
               f"(`arm-none-eabi-objcopy -O binary -j .rodata.g_model`) equals `model.tflite` byte for byte, "
               f"{compiled.alignment}-byte aligned." if compiled.bytes_match
               else f"`model_data.cc` was not compiled here ({compiled.skipped}).")
    version = tflm_requirement(bool(sites), bool(mem.decompression))
    if sites:
        version += (". Libraries that bundle a TFLM snapshot (Arduino libraries, X-CUBE-AI, the nRF Connect SDK "
                    "module) may predate it: they need `tensorflow/lite/micro/kernels/decode.cc`")
    if dep is not None:
        version += ("; `AddEthosU()` has been in tflite-micro since its first commit (2021), and the library must be "
                    "built with `CO_PROCESSOR=ethos_u` (see above)")
    tflm_arena = (f"{mem.arena_without:,} bytes without the decompression memory" if mem.decompression
                  else f"{t.run.arena_bytes:,} bytes" if t.run.arena_bytes else "n/a")
    alt = f" with {mem.decompression:,} bytes of decompression memory" if mem.decompression else ""
    return fill_template(template("mcu", "README.md"), {
        "NAME": info.name, "PROFILE": prof.name, "CORE": core, "FLAGS": " ".join(compiled.flags) or "(none)",
        "OPS": ", ".join(ops), "DECODE_NOTES": _decode_notes(sites, mem), "ARENA_SIZE": f"{mem.arena:,}",
        "ARENA_SOURCE": mem.basis, "LABEL": info.labels[t.best], "FLASH": flash,
        "MODEL_BYTES": f"{len(info.model_bytes):,}",
        "TFLM_ARENA": (tflm_arena if dep is None else
                       f"no arena for `model.tflite`, which it cannot run here (the plain int8 model used "
                       f"{tflm_arena})"),
        "TFLM_VERSION": version, "TFLM_WHEEL": t.run.interpreter, "COMPILE_CHECKED": checked,
        "RUN_CHECKED": ("the model runs in the TFLM Python interpreter with this\ntest vector and in a tensor arena "
                        f"of exactly `kTensorArenaSize`{alt};"),
        **readme_blocks(dep, prof, core, mem.arena)})


def write_mcu(staging: Path, info: BuildInfo, smp: Sample, *, profile: str | None, progress: Progress) -> Bundle:
    """Write the TFLM project into `staging`, run its test vector in TFLM here, compile model_data.cc.

    For a Vela-compiled model on an Ethos-U profile the test vector runs through the plain int8 model the build
    verified (shipped as REFERENCE_FILE), and the bundle says that the NPU run is not verified.
    """
    prof = mcu_profile(info, profile)
    dep = ethos_u_deploy(info, prof)
    ops = _tflm_ops(info, dep is not None)
    sites = decode_sites(info.model_bytes)
    progress("stage", {"name": "tflm", "description": "Running the test vector in TFLite Micro"
                       + (" (the plain int8 model; TFLM here cannot run the NPU op)" if dep else "")})
    t = _run_test_vector(dep.reference_bytes if dep else info.model_bytes, smp)
    mem = _size_npu_memory(info, prof, dep) if dep else _size_memory(info, prof, sites, t)
    files = {**_model_files(info), **_vector_files(info, smp, t), "main.cc": _main_cc(info, prof, ops, t, mem, dep)}
    for file_name, text in files.items():
        atomic_write_text(staging / file_name, text)
    atomic_write_bytes(staging / "model.tflite", info.model_bytes)
    if dep:
        atomic_write_bytes(staging / REFERENCE_FILE, dep.reference_bytes)
    atomic_write_text(staging / "labels.txt", "\n".join(info.labels) + "\n")

    core = prof.core or "unknown"
    progress("stage", {"name": "compile", "description": f"Compiling model_data.cc for {core}"})
    compiled = compile_model_data(staging, core, expected=info.model_bytes)
    expected = {"label": info.labels[t.best], "index": t.best, "score": float(t.scores[t.best]),
                "scores": [float(s) for s in t.scores], "interpreter": t.run.interpreter,
                "test_vector_sha256": hashlib.sha256(t.vector.tobytes()).hexdigest()}
    if dep:
        expected.update(model=REFERENCE_FILE, npu_verified=False, note=NPU_NOT_VERIFIED)
    write_json(staging / "expected.json", expected)
    atomic_write_text(staging / "README.md", _readme(info, prof, ops, t, mem, sites, compiled, dep))
    notes = [mem.short]
    if sites:
        notes.append(f"DECODE registered ({len(sites)} compressed tensors): needs tflite-micro "
                     f"{(TFLM_ALT_MEMORY_SINCE if mem.decompression else TFLM_DECODE_SINCE).split(' (')[0]} or later")
    if mem.decompression:
        notes.append(f"decompression memory {mem.decompression:,} B (arena without it: {mem.arena_without or 0:,} B)")
    notes += bundle_notes(dep, prof, core)
    notes += [compiled.skipped] if compiled.skipped else []
    return Bundle(path=staging, target="mcu", kind=info.kind, files=[], test_input="test_vector.cc",
                  expected=expected, mcu=compiled, arena_bytes=mem.arena, notes=notes)


_MODEL_SECTION = ".rodata.g_model"


def compile_model_data(project_dir: Path, core: str, *, expected: bytes | None = None) -> McuCompile:
    """Compile model_data.cc for `core` with arm-none-eabi-g++; flash size from arm-none-eabi-size.

    -fdata-sections puts g_model in its own .rodata.g_model section, so its bytes
    and alignment can be read back from the object. With `expected` (the .tflite),
    the section is extracted with arm-none-eabi-objcopy and must equal it byte for
    byte: the README says so only because it was checked.
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
                      rodata_bytes=sections.get(_MODEL_SECTION), alignment=_section_alignment(obj, _MODEL_SECTION),
                      bytes_match=None if expected is None else _check_model_section(obj, expected))


def _check_model_section(obj: Path, expected: bytes) -> bool:
    """g_model's bytes as compiled (objcopy -O binary -j .rodata.g_model) equal the .tflite; else DeployError."""
    objcopy = shutil.which("arm-none-eabi-objcopy")
    if objcopy is None:
        raise DeployError("arm-none-eabi-objcopy is missing beside arm-none-eabi-g++", where=str(obj),
                          fix="Install binutils-arm-none-eabi (Debian)")
    blob = obj.with_suffix(".bin")
    try:
        proc = subprocess.run([objcopy, "-O", "binary", "-j", _MODEL_SECTION, str(obj), str(blob)],
                              capture_output=True, text=True, timeout=60)
        compiled = blob.read_bytes() if proc.returncode == 0 and blob.is_file() else b""
    finally:
        blob.unlink(missing_ok=True)
    if compiled != expected:
        raise DeployError("The compiled model array differs from model.tflite", where=f"{obj} ({_MODEL_SECTION})",
                          expected=f"{len(expected):,} bytes equal to model.tflite",
                          received=f"{len(compiled):,} bytes" + ("" if proc.returncode == 0 else
                                                                f": objcopy failed: {proc.stderr.strip()}"),
                          fix="This is a bug in edgesparse's generator; please report it")
    return True


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
