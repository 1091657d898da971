"""The build's DECODE compression stage for TFLite Micro profiles: smaller flash, within the profile's RAM.

Why a stage of its own: on a microcontroller pruning only pays once the zeros
leave the file, and the DECODE op that makes that possible costs arena RAM (the
largest decoded tensor, live from its DECODE to its consumer) that the
profile's budget may not have. `tflite.decode_compress` decides per tensor by
file size alone and `runtime.tflm_decode` proves a file in TFLM; this module
adds the profile's side of the trade: the compressed model's arena, as TFLM
records it after an invoke, plus the profile's persistent runtime RAM, must
fit `[budget] ram_bytes`. When it does not, the largest decoded tensors go back
to dense one at a time (each one re-measured) until it fits or nothing is
compressed. A profile with a separate decompression memory
(`runtime.alt_decompression_bytes`) measures with it, and its decoded tensors
must fit there instead.

Graph-overhead stripping (`strip_graph_overhead`) runs on the int8 artifact
and on the dense int8 baseline before compression, so the ratio against the
dense int8 file is fair.

What it returns is the compressed file, the uncompressed one (written as
`baselines/pruned_int8.tflite`), and report.json's "compression" section;
`add_estimate` fills the estimator's figures once `check` has run on the file.

Raises: `VerificationError` (exit 3) when the compressed file is not bitwise
the model it replaces in TFLM, a bug; `MissingDependency` without tflite-micro.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse._types import Progress, no_progress
from edgesparse.profiles.profile import Profile
from edgesparse.runtime.tflm_decode import measured_arena, verify_compressed
from edgesparse.tflite.decode_compress import CompressionPlan, TensorChoice, choose_compression
from edgesparse.tflite.graph import io_quantization

__all__ = [
    "RANDOM_SAMPLES",
    "VALIDATION_SAMPLES",
    "McuCompression",
    "add_estimate",
    "compress_for_mcu",
    "model_inputs",
    "strip_graph_overhead",
]

# Validation inputs compared bit for bit between the compressed and uncompressed files (the first ones), and
# random inputs over the input type's whole range on top: enough to reach every kernel path, cheap in TFLM.
VALIDATION_SAMPLES = 256
RANDOM_SAMPLES = 64


@dataclass
class McuCompression:
    """The file to flash, the file before DECODE, the dense int8 baseline as written, and the report section."""

    model: bytes = field(repr=False)            # model.tflite: compressed where it pays and fits the RAM budget
    uncompressed: bytes = field(repr=False)     # baselines/pruned_int8.tflite: the same model without DECODE
    dense_int8: bytes = field(repr=False)       # baselines/dense_int8.tflite, stripped like the artifact
    section: dict[str, Any]                     # report.json's "compression"
    warnings: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return bool(self.section.get("applied"))


def model_inputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Float inputs as the model's input 0 takes them: quantized with its scale and zero point when integer."""
    q = io_quantization(model_bytes)["input"]
    dtype = np.dtype(q["dtype"])
    if dtype.kind == "f" or not q["scale"]:
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    scaled = np.round(np.asarray(x, np.float64) / q["scale"]) + q["zero_point"]
    return np.clip(scaled, info.min, info.max).astype(dtype)


def strip_graph_overhead(model_bytes: bytes, runtime: str) -> tuple[bytes, list[dict[str, Any]], int]:
    """The one call site for graph-overhead stripping: (model, items removed, bytes saved).

    Not yet wired: edgesparse/tflite/strip.py (`strip_overhead`) has not
    landed, so the model is returned as it is and the section says so.
    """
    return model_bytes, [], 0


@dataclass
class _Budget:
    """The profile's RAM side of the trade."""

    limit: int | None          # [budget] ram_bytes
    persistent: int            # [runtime] persistent_ram_bytes, beside the arena
    alt: int                   # [runtime] alt_decompression_bytes, 0 = decoded tensors live in the arena

    def over(self, plan: CompressionPlan, arena: int) -> str | None:
        """Why this plan does not fit the profile, or None."""
        if self.alt and plan.largest_decoded_bytes > self.alt:
            return (f"the largest decoded tensor ({plan.largest_decoded_bytes:,} B) does not fit the "
                    f"{self.alt:,} B decompression memory (runtime.alt_decompression_bytes)")
        if self.limit is not None and arena + self.persistent > self.limit:
            return (f"the arena TFLM records with DECODE ({arena:,} B) plus persistent runtime RAM "
                    f"({self.persistent:,} B) exceeds the RAM budget ({self.limit:,} B)")
        return None


def _fit_ram(model: bytes, mode: str, budget: _Budget) -> tuple[CompressionPlan, dict[str, Any], dict[str, int]]:
    """choose_compression, then the largest decoded tensors back to dense until the measured arena fits."""
    kept: list[TensorChoice] = []
    reasons: list[str] = []
    plan = choose_compression(model, mode)
    while True:
        arena = measured_arena(plan.model, alt_decompression_bytes=budget.alt) if plan.compressed else {}
        why = budget.over(plan, int(arena.get("total", 0))) if plan.compressed else None
        if why is None:
            break
        largest = max(plan.compressed, key=lambda t: (t.dense_bytes, -t.index))
        kept.append(largest)
        reasons.append(f"'{largest.name}' ({largest.dense_bytes:,} B decoded) kept dense: {why}")
        plan = choose_compression(model, mode, keep_dense=[t.index for t in kept])
    ram_budget = {"limit_bytes": budget.limit, "kept_dense_for_ram": [t.name for t in kept],
                  "reason": "; ".join(reasons) if reasons else None}
    return plan, ram_budget, arena


def _tensor_entry(choice: TensorChoice, kept_reason: dict[int, str],
                  alt: int) -> dict[str, Any]:
    compressed = choice.method != "dense"
    return {"name": choice.name, "shape": list(choice.shape), "dtype": choice.dtype, "method": choice.method,
            "dense_bytes": choice.dense_bytes, "encoded_bytes": choice.payload_bytes if compressed else None,
            "saved_bytes": choice.file_saving if compressed else 0,
            "arena_added_bytes": choice.dense_bytes if compressed and not alt else 0,
            "decoded_elements": int(np.prod(choice.shape)) if compressed else 0,
            "reason": kept_reason.get(choice.index, choice.reason)}


def _section(mode: str, plan: CompressionPlan | None, *, uncompressed: bytes, dense_int8: bytes,
             overhead: dict[str, Any], arenas: dict[str, int | None], budget: _Budget,
             ram_budget: dict[str, Any], verification: dict[str, Any] | None) -> dict[str, Any]:
    model = plan.model if plan is not None else uncompressed
    compressed = plan.compressed if plan is not None else []
    kept = set(ram_budget["kept_dense_for_ram"])
    kept_reason = {t.index: f"kept dense for RAM: {ram_budget['reason']}" for t in (plan.tensors if plan else [])
                   if t.name in kept and t.method == "dense"}
    measured_dense, measured = arenas.get("uncompressed"), arenas.get("compressed")
    return {
        "mode": mode, "applied": bool(compressed), "cluster": None,
        "uncompressed_bytes": len(uncompressed), "compressed_bytes": len(model),
        "saved_bytes": len(uncompressed) - len(model),
        "dense_int8_bytes": len(dense_int8) if dense_int8 else None,
        "ratio_vs_dense_int8": round(len(dense_int8) / len(model), 3) if dense_int8 else None,
        "overhead": overhead,
        "arena": {"uncompressed_measured_bytes": measured_dense, "compressed_measured_bytes": measured,
                  "compressed_estimated_bytes": None,
                  "added_bytes": measured - measured_dense if measured is not None and measured_dense else None},
        "alt_decompression": {"available_bytes": budget.alt,
                              "needed_bytes": plan.largest_decoded_bytes if plan is not None and budget.alt else 0},
        "decoded_elements_per_invoke": sum(int(np.prod(t.shape)) for t in compressed),
        "decode_ms": None, "decode_basis": None,
        "ram_budget": ram_budget,
        "tensors": [_tensor_entry(t, kept_reason, budget.alt) for t in (plan.tensors if plan else [])],
        "verification": verification,
    }


def compress_for_mcu(artifact: bytes, profile: Profile, mode: str, samples: np.ndarray | None, *,
                     dense_int8: bytes = b"", random_samples: int = RANDOM_SAMPLES,
                     progress: Progress | None = None) -> McuCompression:
    """The int8 artifact compressed with DECODE as `mode` allows and the profile's RAM fits, proven in TFLM.

    `samples`: validation inputs as floats (quantized here for the model's
    input); the first VALIDATION_SAMPLES and `random_samples` random inputs
    must give bitwise identical outputs in TFLM. `dense_int8` is stripped the
    same way as the artifact, for a fair ratio.
    """
    progress = progress or no_progress
    uncompressed, items, saved = strip_graph_overhead(artifact, profile.runtime)
    dense, _, dense_saved = strip_graph_overhead(dense_int8, profile.runtime) if dense_int8 else (b"", [], 0)
    overhead = {"saved_bytes": saved, "items": items, "dense_int8_saved_bytes": dense_saved,
                "note": None if items or saved else "graph-overhead stripping is not wired yet (tflite/strip.py)"}
    budget = _Budget(profile.budget.get("ram_bytes"), profile.persistent_ram_bytes, profile.alt_decompression_bytes)
    no_ram = {"limit_bytes": budget.limit, "kept_dense_for_ram": [], "reason": None}
    if mode == "off":
        section = _section(mode, None, uncompressed=uncompressed, dense_int8=dense, overhead=overhead, arenas={},
                           budget=budget, ram_budget=no_ram, verification=None)
        return McuCompression(uncompressed, uncompressed, dense, section)
    plan, ram_budget, arena = _fit_ram(uncompressed, mode, budget)
    warnings = []
    if ram_budget["kept_dense_for_ram"]:
        warnings.append(f"DECODE compression on {profile.name}: {len(ram_budget['kept_dense_for_ram'])} tensor(s) "
                        f"kept dense to fit RAM: {ram_budget['reason']}")
        progress("warning", {"message": warnings[-1]})
    verification = None
    arenas: dict[str, int | None] = {}
    if plan.compressed:
        x = model_inputs(uncompressed, np.asarray(samples)[:VALIDATION_SAMPLES]) if samples is not None else None
        proof = verify_compressed(uncompressed, plan.model, x, random_samples=random_samples)
        arenas = {"uncompressed": proof.arena_dense.get("total"),
                  "compressed": int(arena["total"]) if arena else proof.arena_compressed.get("total")}
        verification = {
            "interpreter": "TFLite Micro", "bitwise_identical": True,
            "samples": proof.samples - random_samples, "random_samples": random_samples,
            "decoded_tensors_equal": proof.decoded_tensors,
            "accuracy": "the build's accuracy figures are those of this file: its outputs are bitwise identical to "
                        "the uncompressed int8 file's (baselines/pruned_int8.tflite) on every input compared",
        }
    section = _section(mode, plan, uncompressed=uncompressed, dense_int8=dense, overhead=overhead, arenas=arenas,
                       budget=budget, ram_budget=ram_budget, verification=verification)
    return McuCompression(plan.model, uncompressed, dense, section, warnings)


def add_estimate(section: dict[str, Any] | None, check: dict[str, Any] | None) -> None:
    """The estimator's figures for the compressed file (from `check_model(...).to_dict()`), beside the measured."""
    if not section or not check:
        return
    ram = check.get("ram") or {}
    if ram.get("total_bytes") is not None:
        persistent = int((ram.get("breakdown") or {}).get("runtime_persistent_ram", 0))
        section["arena"]["compressed_estimated_bytes"] = int(ram["total_bytes"]) - persistent
    latency = check.get("latency") or {}
    section["decode_ms"] = latency.get("decode_ms")
    section["decode_basis"] = latency.get("decode_basis")
