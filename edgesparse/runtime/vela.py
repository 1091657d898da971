"""Compiling an int8 .tflite for an Arm Ethos-U NPU with Vela, and what Vela says about it.

Why its own module: Vela (`ethos-u-vela`, the extra edgesparse[npu]) is the only compiler for
Ethos-U; its system configuration is generated here from a profile's [npu] table (not Vela's
defaults, which warn they "may be invalid or non-optimal"), and its outputs (the compiled
file, the summary CSV, per-op placement and the reasons for CPU fallback) are read here once.
Vela runs in a child process with a timeout, in a temporary directory.

Raises: `MissingDependency` (Vela absent), `ConversionError` (Vela failed or timed out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgesparse.profiles.profile import NpuConfig

__all__ = [
    "VELA_EXTRA",
    "NpuOp",
    "VelaCompilation",
    "compile_for_ethos_u",
    "require_vela",
    "vela_system_config",
    "vela_version",
]

VELA_EXTRA = "edgesparse[npu]"


@dataclass(frozen=True)
class NpuOp:
    """One operator of the int8 input model and where Vela placed it."""

    index: int          # operator index in the input model's main subgraph
    op_type: str        # builtin name, e.g. "CONV_2D"
    placement: str      # "npu" | "cpu"
    reason: str         # Vela's own words for a CPU fallback; "" on the NPU


@dataclass(frozen=True)
class VelaCompilation:
    """A Vela compilation: the compiled file and Vela's figures for it."""

    model: bytes
    accelerator: str
    system_config: str
    vela_version: str
    ops: tuple[NpuOp, ...]
    npu_cycles: int
    total_cycles: int
    sram_bytes: int
    flash_bytes: int
    encoded_weight_bytes: int
    raw_weight_bytes: int
    arena_bytes: int
    warnings: tuple[str, ...]

    def latency_ms(self, clock_mhz: float) -> float:
        """Vela's total cycle estimate at an NPU clock."""
        return self.total_cycles / (clock_mhz * 1e3)

    @property
    def npu_op_count(self) -> int:
        return sum(1 for op in self.ops if op.placement == "npu")

    @property
    def cpu_ops(self) -> tuple[NpuOp, ...]:
        return tuple(op for op in self.ops if op.placement == "cpu")

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def vela_version() -> str | None:
    raise NotImplementedError


def require_vela() -> str:
    raise NotImplementedError


def vela_system_config(npu: NpuConfig) -> str:
    raise NotImplementedError


def compile_for_ethos_u(model: bytes, npu: NpuConfig, *, timeout: float = 300.0) -> VelaCompilation:
    raise NotImplementedError
