"""Compiling an int8 .tflite for an Arm Ethos-U NPU with Vela, and what Vela says about it.

Why its own module: Vela (`ethos-u-vela`, the extra edgesparse[npu]) is the only compiler for
Ethos-U. Its system configuration is generated here from a profile's [npu] table rather than
taken from Vela's defaults (which warn they "may be invalid or non-optimal"), and its outputs are
read here once: the compiled file, the summary CSV (cycles, SRAM, encoded weights), the echo of
`--verbose-config` (proof Vela read our configuration as meant), and the warnings that give its
reason for each operator left to the CPU. Vela runs in a child process (`python -m ethosu.vela`
of this interpreter) with a timeout, in a temporary directory that is removed afterwards.

Vela 5.2 compiles with its C++ core ("regor"), which reads the .ini text itself (including
`<Memory>_max_reads/_max_writes`); the Python side parses the same file for `--verbose-config`
and the summary CSV. Units (architecture_features.py): core_clock in Hz; clock_scale a fraction
of the core clock; burst_length in bytes; latencies in core cycles; arena_cache_size in bytes.

Raises: `MissingDependency` (Vela absent), `ConversionError` (Vela failed, timed out, or echoed a
configuration other than ours), `ProfileError` (an [npu] table Vela cannot express).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

from edgesparse.errors import ConversionError, MissingDependency, ProfileError
from edgesparse.tflite.ethos_u import describe_ethos_u, ethos_u_ops
from edgesparse.tflite.graph import Graph, load_graph

__all__ = [
    "LATENCY_BASIS",
    "MEMORY_MODE_NAME",
    "VELA_MEMORY_KEYS",
    "NpuConfig",
    "SYSTEM_CONFIG_NAME",
    "VELA_EXTRA",
    "NpuOp",
    "VelaCompilation",
    "compile_for_ethos_u",
    "require_vela",
    "vela_system_config",
    "vela_version",
]

VELA_EXTRA = "edgesparse[npu]"
SYSTEM_CONFIG_NAME = "edgesparse"   # [System_Config.edgesparse]
MEMORY_MODE_NAME = "edgesparse"     # [Memory_Mode.edgesparse]
LATENCY_BASIS = "Vela performance model"
_DIST = "ethos-u-vela"
# Vela's per-memory .ini keys (<Memory>_<key>), in the order Arm's vela.ini writes them; the profile schema's
# NPU_MEMORY_KEYS must equal this (tests/runtime/test_vela.py checks it: runtime/ cannot import profiles/).
VELA_MEMORY_KEYS = ("clock_scale", "burst_length", "read_latency", "write_latency", "max_reads", "max_writes")
_INT_KEYS = frozenset(VELA_MEMORY_KEYS) - {"clock_scale"}   # Vela parses these with int()
# Memory mode -> (const_mem_area, arena_mem_area, cache_mem_area), as Arm's config_files/Arm/vela.ini.
_MEMORY_PORTS = {
    "Sram_Only": ("Axi0", "Axi0", "Axi0"),
    "Shared_Sram": ("Axi1", "Axi0", "Axi0"),
    "Dedicated_Sram": ("Axi1", "Axi1", "Axi0"),
}


class NpuConfig(Protocol):
    """What Vela needs of a profile's [npu] table: `edgesparse.profiles.NpuConfig` has these fields
    (a Protocol because runtime/ may not import profiles/, its sibling layer)."""

    @property
    def accelerator(self) -> str: ...
    @property
    def clock_mhz(self) -> float: ...
    @property
    def memory_mode(self) -> str: ...
    @property
    def axi0(self) -> str: ...
    @property
    def axi1(self) -> str: ...
    @property
    def axi0_memory(self) -> Mapping[str, float]: ...
    @property
    def axi1_memory(self) -> Mapping[str, float]: ...
    @property
    def sram_bytes(self) -> int: ...
    @property
    def arena_cache_bytes(self) -> int | None: ...


@dataclass(frozen=True)
class NpuOp:
    """One operator of the int8 input model and where Vela placed it."""

    index: int          # operator index in the input model's main subgraph
    op_type: str        # builtin name, e.g. "CONV_2D"
    placement: str      # "npu" | "cpu"
    reason: str         # Vela's own words for a CPU fallback; "" on the NPU

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op_type": self.op_type, "placement": self.placement, "reason": self.reason}


@dataclass(frozen=True)
class VelaCompilation:
    """A Vela compilation: the compiled file and Vela's figures for it.

    Cycles are Vela's performance model of the NPU part (CPU ops are not estimated by Vela).
    `encoded_weight_bytes` is Vela's "NPU Encoded Weights Size": the compressed weight streams
    only; the per-channel scales and biases (10 bytes a channel) are in `flash_bytes` with them.
    """

    model: bytes = field(repr=False)
    graph: Graph = field(repr=False, compare=False)   # `model` parsed once here, so pricing it needs no re-parse
    accelerator: str
    system_config: str
    vela_version: str
    ops: tuple[NpuOp, ...]
    npu_cycles: int                 # Vela: cycles_npu (the NPU's compute)
    total_cycles: int               # Vela: cycles_total (compute and memory access overlapped)
    sram_bytes: int                 # Vela: SRAM used (the arena in SRAM, or the cache in Dedicated_Sram)
    flash_bytes: int                # compiled file: read-only tensor + command streams (what lives in flash)
    encoded_weight_bytes: int       # Vela: NPU encoded weights (weights only, see above)
    raw_weight_bytes: int           # input model: int8 bytes of the NPU ops' weight tensors
    arena_bytes: int                # compiled file: scratch + scratch_fast tensors
    warnings: tuple[str, ...]       # Vela's warnings, verbatim
    clock_mhz: float = 0.0          # the NPU clock the configuration used
    vela_original_weight_bytes: int = 0     # Vela: "Original Weights Size" (compare raw_weight_bytes)
    vela_config: Mapping[str, str] = field(default_factory=dict)   # what --verbose-config echoed
    command_stream_bytes: int = 0   # compiled file: the NPU command streams

    def latency_ms(self, clock_mhz: float) -> float:
        """Vela's total cycle estimate at an NPU clock."""
        return self.total_cycles / (clock_mhz * 1e3)

    @property
    def npu_op_count(self) -> int:
        return sum(1 for op in self.ops if op.placement == "npu")

    @property
    def cpu_ops(self) -> tuple[NpuOp, ...]:
        return tuple(op for op in self.ops if op.placement == "cpu")

    @property
    def weight_compression(self) -> float:
        """raw int8 weights / Vela's encoding (1.0 when there are none)."""
        return self.raw_weight_bytes / self.encoded_weight_bytes if self.encoded_weight_bytes else 1.0


# ----------------------------------------------------------------------------- installation


def vela_version() -> str | None:
    """The installed ethos-u-vela version, None when `ethosu.vela` cannot be imported here."""
    try:
        if importlib.util.find_spec("ethosu.vela") is None:
            return None
    except ImportError:   # the parent package `ethosu` is missing or broken
        return None
    try:
        return version(_DIST)
    except PackageNotFoundError:
        return None


def require_vela() -> str:
    """The Vela version; MissingDependency (exit 2) naming the extra when Vela is absent."""
    found = vela_version()
    if found is None:
        raise MissingDependency(
            "Arm's Vela compiler is not installed; Ethos-U profiles compile with it", where="ethosu.vela",
            expected=f"{_DIST} 5.2 (the extra {VELA_EXTRA})", received="not importable",
            fix=f"pip install '{VELA_EXTRA}' (or `make install`), or use a profile without an NPU")
    return found


# ----------------------------------------------------------------------------- system configuration


def vela_system_config(npu: NpuConfig) -> str:
    """The Vela .ini text ([System_Config.edgesparse], [Memory_Mode.edgesparse]) for a profile's [npu]."""
    lines = [f"; generated by edgesparse from the profile's [npu] table ({npu.accelerator})",
             f"[System_Config.{SYSTEM_CONFIG_NAME}]",
             f"core_clock={_number(npu.clock_mhz * 1e6)}",
             f"axi0_port={npu.axi0}",
             f"axi1_port={npu.axi1}"]
    memories = [(npu.axi0, npu.axi0_memory)]
    if npu.axi1 != npu.axi0:
        memories.append((npu.axi1, npu.axi1_memory))
    elif dict(npu.axi1_memory) != dict(npu.axi0_memory):
        raise ProfileError("The [npu] table puts one memory on both AXI ports with two sets of figures",
                           where=f"npu.axi0 = npu.axi1 = {npu.axi0}",
                           expected="axi0_memory and axi1_memory equal when both ports reach the same memory",
                           received=f"{dict(npu.axi0_memory)} and {dict(npu.axi1_memory)}",
                           fix="Give both ports the same figures (Vela keeps one set per memory)")
    for memory, figures in memories:
        if figures.get("clock_scale", 1) <= 0:
            raise ProfileError("An NPU memory's clock_scale must be above 0 (Vela divides by its bandwidth)",
                               where=f"npu: {memory}", expected="clock_scale > 0 (a fraction of the NPU clock)",
                               received=figures.get("clock_scale"), fix="Set the memory's clock ratio")
        for key in VELA_MEMORY_KEYS:
            if key in figures:
                value = figures[key]
                lines.append(f"{memory}_{key}={int(value) if key in _INT_KEYS else _number(value)}")
    const, arena, cache = _MEMORY_PORTS[npu.memory_mode]
    lines += ["", f"[Memory_Mode.{MEMORY_MODE_NAME}]",
              f"; {npu.memory_mode}",
              f"const_mem_area={const}",
              f"arena_mem_area={arena}",
              f"cache_mem_area={cache}",
              f"arena_cache_size={_arena_cache_size(npu)}"]
    return "\n".join(lines) + "\n"


def _arena_cache_size(npu: NpuConfig) -> int:
    """Dedicated_Sram: the SRAM cache (arena_cache_bytes, else all of sram_bytes); otherwise the SRAM the
    arena may use, which Vela's Performance strategy plans into."""
    if npu.memory_mode == "Dedicated_Sram" and npu.arena_cache_bytes:
        return int(npu.arena_cache_bytes)
    return int(npu.sram_bytes)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ----------------------------------------------------------------------------- compilation


def compile_for_ethos_u(model: bytes, npu: NpuConfig, *, timeout: float = 300.0) -> VelaCompilation:
    """Compile an int8 .tflite with Vela for the profile's NPU; Vela's figures and per-op placement."""
    version_found = require_vela()
    source = load_graph(bytes(model))
    config = vela_system_config(npu)
    with tempfile.TemporaryDirectory(prefix="edgesparse-vela-") as tmp:
        work = Path(tmp)
        (work / "model.tflite").write_bytes(model)
        (work / "edgesparse.ini").write_text(config)
        stdout = _run_vela(work, npu.accelerator, timeout)
        compiled_path = work / "out" / "model_vela.tflite"
        summary_path = work / "out" / f"model_summary_{SYSTEM_CONFIG_NAME}.csv"
        if not compiled_path.is_file() or not summary_path.is_file():
            raise ConversionError("Vela finished without writing its compiled model and summary",
                                  where=str(work / "out"), received=_tail(stdout),
                                  fix=f"Report this with the model; Vela {version_found} printed the above")
        compiled = compiled_path.read_bytes()
        summary = _read_summary(summary_path.read_text())
    echo = _config_echo(stdout)
    _check_echo(echo, npu)
    graph = load_graph(compiled)
    described = describe_ethos_u(graph)
    warnings = _warnings(stdout)
    ops = _placement(source, graph, warnings)
    return VelaCompilation(
        model=compiled, graph=graph, accelerator=npu.accelerator, system_config=config, vela_version=version_found,
        ops=ops, npu_cycles=_int(summary, "cycles_npu"), total_cycles=_int(summary, "cycles_total"),
        sram_bytes=round(float(summary.get("sram_memory_used", 0)) * 1024),
        flash_bytes=described.flash_bytes,
        encoded_weight_bytes=_int(summary, "total_npu_encoded_weights"),
        raw_weight_bytes=_raw_weight_bytes(source, ops),
        arena_bytes=described.arena_bytes, warnings=tuple(block for _, _, block in warnings),
        clock_mhz=float(npu.clock_mhz), vela_original_weight_bytes=_int(summary, "total_original_weights"),
        vela_config=echo, command_stream_bytes=described.command_stream_bytes)


def _run_vela(work: Path, accelerator: str, timeout: float) -> str:
    """Run Vela's CLI of this interpreter in `work`; its stdout (stderr appended). ConversionError on failure."""
    command = [sys.executable, "-m", "ethosu.vela", "model.tflite", "--output-dir", "out",
               "--config", str(work / "edgesparse.ini"), "--system-config", SYSTEM_CONFIG_NAME,
               "--memory-mode", MEMORY_MODE_NAME, "--accelerator-config", accelerator, "--verbose-config"]
    try:
        done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise ConversionError("Vela did not finish compiling for the Ethos-U", where="vela",
                              expected=f"a compiled model within {timeout:g} s", received="a timeout",
                              fix="Try a smaller model, or raise the timeout") from None
    output = done.stdout + ("\n" + done.stderr if done.stderr else "")
    if done.returncode != 0:
        raise ConversionError(f"Vela could not compile the model for {accelerator}", where="vela",
                              received=_failure(output),
                              fix="Vela's message names the operator or option at fault; change the model "
                                  "or the profile's [npu] table")
    return output


_ERROR_LINE = re.compile(r"(?i)\berror\b|^\w*(Error|Exception)\b")


def _failure(output: str) -> str:
    """Vela's own error lines (the last of a traceback when it raised), one line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln)]
    return "; ".join((errors or lines)[-2:]) or "no output"


def _tail(output: str) -> str:
    return "; ".join([ln.strip() for ln in output.splitlines() if ln.strip()][-3:]) or "no output"


def _read_summary(text: str) -> dict[str, str]:
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) < 2:
        raise ConversionError("Vela's summary CSV has no data row", where="vela summary",
                              received=text[:200], fix="Report this with the model")
    return dict(zip(rows[0], rows[1], strict=False))


def _int(summary: Mapping[str, str], key: str) -> int:
    try:
        return round(float(summary[key]))
    except (KeyError, ValueError):
        raise ConversionError("Vela's summary CSV lacks a figure edgesparse reads", where="vela summary",
                              expected=key, received=sorted(summary)[:20],
                              fix=f"Use {_DIST} 5.2 (the version {VELA_EXTRA} pins)") from None


# ----------------------------------------------------------------------------- what Vela printed

_ECHO = re.compile(r"^\s{3}(\w+) = (.+?)\s*$")


def _config_echo(stdout: str) -> dict[str, str]:
    """The key = value lines --verbose-config printed under System Configuration and Memory Mode."""
    echo: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("Architecture Settings"):
            break
        match = _ECHO.match(line)
        if match and match.group(1) not in ("original", "used"):   # the .ini's temporary path
            echo[match.group(1)] = match.group(2)
    return echo


def _check_echo(echo: Mapping[str, str], npu: NpuConfig) -> None:
    """Vela must have read our clock and ports; anything else means the .ini was misread."""
    expected = {"core_clock": str(float(npu.clock_mhz * 1e6)), "axi0_port": npu.axi0, "axi1_port": npu.axi1}
    if npu.memory_mode == "Sram_Only":   # Vela moves the constants to an OnChipFlash alias of the SRAM
        expected.pop("axi1_port")
    wrong = {k: echo.get(k) for k, v in expected.items() if echo.get(k) != v}
    if wrong:
        raise ConversionError("Vela did not read the generated system configuration as written",
                              where="vela --verbose-config", expected=str(expected), received=str(wrong),
                              fix="Report this with the profile")


_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\w+), ofm: '(.*)'$")


def _warnings(stdout: str) -> list[tuple[str, str, str]]:
    """Vela's warnings as (op type, output name, text); the op and name are "" outside the
    supported-operators ones. A warning runs to the next blank line."""
    found: list[tuple[str, str, str]] = []
    lines = stdout.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.startswith("Warning"):
            i += 1
            continue
        block = [line]
        i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(("Warning", "Info", "Network")):
            block.append(lines[i].rstrip())
            i += 1
        match = _WARNING.match(line)
        found.append((match.group(1), match.group(2), "\n".join(block)) if match else ("", "", "\n".join(block)))
    return found


def _reason(text: str) -> str:
    """A supported-operators warning's reason lines ("Reason: ..." and the constraint), one line."""
    body = text.splitlines()[1:]
    return "; ".join(ln.strip().removeprefix("Reason: ") for ln in body if ln.strip()) or text


# ----------------------------------------------------------------------------- placement and weights


def _placement(source: Graph, compiled: Graph, warnings: list[tuple[str, str, str]]) -> tuple[NpuOp, ...]:
    """Per input op: on the CPU when its output tensor is written by a builtin op of the compiled
    file (Vela copies CPU ops with their tensor names), on the NPU otherwise (absorbed into an
    ethos-u op, or removed, as a RESHAPE on the NPU is)."""
    main = compiled.subgraphs[0]
    npu_set = {id(op) for op in ethos_u_ops(compiled)}
    cpu_outputs = {main.tensors[t].name for op in main.ops if id(op) not in npu_set for t in op.outputs if t >= 0}
    sg = source.subgraphs[0]
    ops = []
    for op in sg.ops:
        names = [sg.tensors[t].name for t in op.outputs if t >= 0]
        on_cpu = any(name in cpu_outputs for name in names)
        reason = _reason_for(op.opcode, names, warnings) if on_cpu else ""
        ops.append(NpuOp(op.index, op.opcode, "cpu" if on_cpu else "npu", reason))
    return tuple(ops)


def _reason_for(op_type: str, names: list[str], warnings: list[tuple[str, str, str]]) -> str:
    """Vela's reason for this op: the warning on its output (or a name Vela derived from it, as
    regor's "<name>_act" for a split fused activation)."""
    for kind, ofm, text in warnings:
        if kind == op_type and any(ofm == n or ofm.startswith(n + "_") for n in names):
            return _reason(text)
    return "Vela left it on the CPU without a reason (it is not an NPU operator of this configuration)"


def _raw_weight_bytes(source: Graph, ops: tuple[NpuOp, ...]) -> int:
    """int8 bytes of the weight tensors of the ops placed on the NPU (each constant counted once)."""
    on_npu = {op.index for op in ops if op.placement == "npu"}
    sg = source.subgraphs[0]
    seen = {op.weight_source for op in sg.ops if op.index in on_npu and op.weight_source is not None}
    return sum(sg.tensors[t].nbytes for t in seen)
