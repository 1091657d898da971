"""What TFLite Micro's DECODE ops cost a model on the device: where decoded tensors live and what runs per invoke.

Why its own module: the memory plan (decoded tensors in the arena or in the
alternate decompression memory, DECODE's persistent state) and the latency
model (elements decoded on every invoke) read the same facts, and both must
agree on which DECODE outputs exist. The facts come from one parse of the
ancillary data, `tflite.decode.decode_sites`, which refuses a corrupt DECODE
with a ModelError before anything trusts its lengths.

The placement rule mimics kernels/decode.cc: each DECODE's Prepare resets the
alternate memory to its start, then gives each of its outputs the next
16-byte-aligned slice that fits; an output that does not fit stays in the
arena, planned like any other tensor (TFLM does not fail). Raises `ModelError`
for a corrupt DECODE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgesparse.tflite.decode import DecodeSite, decode_sites
from edgesparse.tflite.ir import Graph
from edgesparse.tflite.schema import DECODE_OPS

__all__ = [
    "ARENA_ALIGNMENT",
    "AltPlacement",
    "DecodeWork",
    "decode_work",
]

ARENA_ALIGNMENT = 16  # MicroArenaBufferAlignment(): every persistent buffer and alt-memory slice


def _align(value: int) -> int:
    return -(-int(value) // ARENA_ALIGNMENT) * ARENA_ALIGNMENT


@dataclass(frozen=True)
class AltPlacement:
    """Which decoded tensors TFLM puts in the alternate decompression memory, and how much it needs."""

    available_bytes: int
    needed_bytes: int               # to hold every DECODE output (the largest DECODE op's outputs)
    used_bytes: int                 # the most any DECODE op uses of it
    in_alt: frozenset[int]          # decoded tensors placed there (subgraph 0 tensor indices)
    in_arena: tuple[str, ...]       # decoded tensors that did not fit: planned in the arena

    def to_dict(self) -> dict[str, Any]:
        return {"available_bytes": self.available_bytes, "needed_bytes": self.needed_bytes,
                "used_bytes": self.used_bytes, "tensors_in_alt": len(self.in_alt),
                "tensors_in_arena": list(self.in_arena), "fits": self.needed_bytes <= self.available_bytes}


@dataclass(frozen=True)
class DecodeWork:
    """The DECODE outputs of a model's main subgraph (the one TFLM plans and runs), in op order."""

    sites: tuple[DecodeSite, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sites)

    @property
    def op_count(self) -> int:
        return len({s.op for s in self.sites})

    @property
    def elements(self) -> int:
        """Elements decoded on every invoke."""
        return sum(s.info.elements for s in self.sites)

    def elements_by_op(self) -> dict[int, dict[str, int]]:
        """DECODE op index -> {decode type: elements it decodes per invoke}."""
        out: dict[int, dict[str, int]] = {}
        for s in self.sites:
            per = out.setdefault(s.op, {})
            per[s.info.method] = per.get(s.info.method, 0) + s.info.elements
        return out

    def elements_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sites:
            out[s.info.method] = out.get(s.info.method, 0) + s.info.elements
        return out

    @property
    def decoded_bytes(self) -> int:
        return sum(s.info.decoded_bytes for s in self.sites)

    @property
    def largest_decoded_bytes(self) -> int:
        return max((s.info.decoded_bytes for s in self.sites), default=0)

    def persistent_bytes(self, pointer_bytes: int, state_bytes: int) -> int:
        """The arena tail DECODE adds beyond its node and eval tensors (decode.cc, decode_state_prune.cc).

        Per DECODE op: its array of DecodeState pointers; per output: the DecodeState object and, for
        per-channel non-zero int8 zero points (PRUNING), their copy; each a 16-byte-aligned persistent buffer.
        """
        outputs: dict[int, int] = {}
        total = 0
        for s in self.sites:
            outputs[s.op] = outputs.get(s.op, 0) + 1
            total += _align(state_bytes) + (_align(s.info.zero_point_channels) if s.info.zero_point_channels else 0)
        return total + sum(_align(n * pointer_bytes) for n in outputs.values())

    def alt_placement(self, available_bytes: int) -> AltPlacement:
        """Where each decoded tensor goes when the device has `available_bytes` of alternate memory."""
        in_alt: set[int] = set()
        in_arena: list[str] = []
        needed = used = 0
        by_op: dict[int, list[DecodeSite]] = {}
        for s in self.sites:
            by_op.setdefault(s.op, []).append(s)
        for sites in by_op.values():
            offset = need = 0  # every DECODE's Prepare starts from the memory's start
            for s in sites:
                size = s.info.decoded_bytes
                need = _align(need) + size
                if _align(offset) + size <= available_bytes:
                    offset = _align(offset) + size
                    in_alt.add(s.output)
                else:
                    in_arena.append(s.name)
            needed, used = max(needed, need), max(used, offset)
        return AltPlacement(int(available_bytes), needed, used, frozenset(in_alt), tuple(in_arena))

    def to_dict(self) -> dict[str, Any]:
        return {"ops": self.op_count, "tensors": len(self.sites), "elements_per_invoke": self.elements,
                "elements_by_type": self.elements_by_type(), "decoded_bytes": self.decoded_bytes,
                "largest_decoded_bytes": self.largest_decoded_bytes,
                "decoded_tensors": [{"name": s.name, "op": s.op, "type": s.info.method,
                                     "elements": s.info.elements, "bytes": s.info.decoded_bytes,
                                     "bit_width": s.info.bit_width, "values": s.info.value_count}
                                    for s in self.sites]}


def decode_work(graph: Any) -> DecodeWork:
    """The validated DECODE outputs of a parsed graph's main subgraph; none for a graph without DECODE.

    Stand-in graphs (anything but `tflite.graph.Graph`) have no file to read ancillary data from: none.
    Raises ModelError for a corrupt DECODE.
    """
    if isinstance(graph, DecodeWork):
        return graph
    if not isinstance(graph, Graph) or not any(not op.builtin and op.opcode in DECODE_OPS for op in graph.ops):
        return DecodeWork()
    return DecodeWork(tuple(s for s in decode_sites(graph) if s.subgraph == 0))
