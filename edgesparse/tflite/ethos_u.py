"""What a Vela-compiled .tflite holds, read without TensorFlow or Vela.

Why: `check` must describe a file compiled for an Arm Ethos-U NPU on a machine without Vela:
the `ethos-u` custom op(s) carrying the NPU command stream, the constant tensor of encoded
weights they read (flash), the scratch tensors TFLM's arena must give the NPU, and the ops
left to the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgesparse.tflite.ir import Graph

__all__ = ["ETHOS_U_OP", "EthosUModel", "describe_ethos_u", "is_ethos_u_model"]

ETHOS_U_OP = "ethos-u"


@dataclass(frozen=True)
class EthosUModel:
    """The NPU side of a Vela-compiled file."""

    npu_ops: int
    cpu_ops: tuple[str, ...]
    command_stream_bytes: int
    weight_bytes: int
    arena_bytes: int

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def is_ethos_u_model(graph: Graph) -> bool:
    raise NotImplementedError


def describe_ethos_u(graph: Graph) -> EthosUModel:
    raise NotImplementedError
