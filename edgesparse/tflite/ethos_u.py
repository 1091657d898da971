"""What a Vela-compiled .tflite holds, read without TensorFlow or Vela.

Why: `check` must describe a file compiled for an Arm Ethos-U NPU on a machine without Vela, and
the build reads the same facts from the file Vela wrote (one reader for both). Vela replaces each
run of NPU-supported operators with one custom operator "ethos-u" whose inputs are, in order
(Vela's npu_serialisation.py / tflite_writer.py; TFLite Micro's kernels/ethos_u/ethosu.cc, which
passes inputs 1.. to the driver as base addresses):

    0  the command stream (uint8 constant: the NPU's register program, read from flash)
    1  the read-only tensor (uint8 constant, "read_only"/"_flash": encoded weights, scales and
       biases, constant feature maps and LUTs; one tensor shared by every ethos-u op of the file)
    2  the scratch tensor (uint8, no data: the NPU's feature maps, allocated in TFLM's arena at the
       offset of the file's "OfflineMemoryAllocation" metadata)
    3  the scratch_fast tensor (uint8, no data: the fast-SRAM area; the same tensor as scratch
       unless the memory mode gives the NPU a dedicated SRAM)
    4… the operator's feature-map inputs; its outputs are the feature-map outputs.

The other operators are TFLite builtins TFLM runs on the CPU. What the file cannot say: the
cycles (only Vela's performance model estimates them), and whether the command stream matches
the NPU configuration of a device (the file does not record the accelerator it was built for).

Raises nothing of its own: a graph without "ethos-u" ops is described as 0 NPU ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgesparse.tflite.ir import Graph, Op, Subgraph

__all__ = [
    "COMMAND_STREAM_INPUT",
    "ETHOS_U_OP",
    "FEATURE_MAP_INPUTS",
    "READ_ONLY_INPUT",
    "SCRATCH_INPUTS",
    "EthosUModel",
    "describe_ethos_u",
    "ethos_u_ops",
    "is_ethos_u_model",
]

ETHOS_U_OP = "ethos-u"
COMMAND_STREAM_INPUT = 0
READ_ONLY_INPUT = 1
SCRATCH_INPUTS = (2, 3)   # scratch, scratch_fast
FEATURE_MAP_INPUTS = 4    # first feature-map input


@dataclass(frozen=True)
class EthosUModel:
    """The NPU side of a Vela-compiled file, and the CPU ops around it."""

    npu_ops: int                    # ethos-u custom ops
    cpu_ops: tuple[str, ...]        # op types outside them, in execution order (run by TFLM on the CPU)
    command_stream_bytes: int       # all command streams (flash)
    weight_bytes: int               # the read-only tensor(s) the custom ops read (flash): encoded weights,
                                    # scales and biases, constant feature maps, LUTs
    arena_bytes: int                # scratch + scratch_fast tensors: what TFLM's arena must give the NPU
    scratch_bytes: int = 0          # the scratch tensor(s) alone (feature maps in the arena memory)
    scratch_fast_bytes: int = 0     # a separate scratch_fast tensor (dedicated SRAM), 0 when shared
    offline_planned: bool = False   # the file carries "OfflineMemoryAllocation" for TFLM's planner

    @property
    def flash_bytes(self) -> int:
        """What the NPU reads from flash: command streams plus the read-only tensor(s)."""
        return self.command_stream_bytes + self.weight_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "npu_ops": self.npu_ops,
            "cpu_ops": list(self.cpu_ops),
            "command_stream_bytes": self.command_stream_bytes,
            "weight_bytes": self.weight_bytes,
            "flash_bytes": self.flash_bytes,
            "arena_bytes": self.arena_bytes,
            "scratch_bytes": self.scratch_bytes,
            "scratch_fast_bytes": self.scratch_fast_bytes,
            "offline_planned": self.offline_planned,
            "not_known_from_file": ["NPU cycles and latency (Vela's performance model estimates them at "
                                    "compile time)", "the accelerator configuration the command stream was "
                                    "compiled for"],
        }


def ethos_u_ops(graph: Graph) -> list[Op]:
    """The ethos-u custom ops of the main subgraph, in execution order."""
    return [op for op in _main(graph).ops if _is_ethos_u(op)]


def is_ethos_u_model(graph: Graph) -> bool:
    """Whether the file was compiled by Vela: its main subgraph has at least one ethos-u custom op."""
    return bool(ethos_u_ops(graph))


def describe_ethos_u(graph: Graph) -> EthosUModel:
    """The NPU ops, the CPU ops, and the bytes of each role (each tensor counted once)."""
    sg = _main(graph)
    npu = [op for op in sg.ops if _is_ethos_u(op)]
    streams = _role_tensors(npu, (COMMAND_STREAM_INPUT,))
    read_only = _role_tensors(npu, (READ_ONLY_INPUT,))
    scratch = _role_tensors(npu, (SCRATCH_INPUTS[0],))
    fast = _role_tensors(npu, (SCRATCH_INPUTS[1],)) - scratch
    size = _tensor_bytes(sg)
    return EthosUModel(
        npu_ops=len(npu),
        cpu_ops=tuple(op.opcode for op in sg.ops if not _is_ethos_u(op)),
        command_stream_bytes=sum(size(t) for t in streams),
        weight_bytes=sum(size(t) for t in read_only),
        arena_bytes=sum(size(t) for t in scratch | fast),
        scratch_bytes=sum(size(t) for t in scratch),
        scratch_fast_bytes=sum(size(t) for t in fast),
        offline_planned="OfflineMemoryAllocation" in graph.metadata,
    )


def _main(graph: Graph) -> Subgraph:
    return graph.subgraphs[0]


def _is_ethos_u(op: Op) -> bool:
    return not op.builtin and op.opcode == ETHOS_U_OP


def _role_tensors(ops: list[Op], positions: tuple[int, ...]) -> set[int]:
    return {op.inputs[p] for op in ops for p in positions if p < len(op.inputs) and op.inputs[p] >= 0}


def _tensor_bytes(sg: Subgraph) -> Callable[[int], int]:
    """Bytes of a tensor: its data for a constant, its shape's bytes for an arena tensor."""
    def size(index: int) -> int:
        tensor = sg.tensors[index]
        return tensor.buffer_bytes if tensor.is_constant else tensor.nbytes
    return size
