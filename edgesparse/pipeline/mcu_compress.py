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

Graph overhead (`tflite.strip.strip_overhead`: tensor names, repeated
per-channel zero points, unread bias quantization, ...) is stripped from the
int8 artifact before compression, so each tensor's saving is measured on the
file as it will be, and again after it (the two tensors each DECODE adds carry
names too); the dense int8 baseline is stripped the same way, so the ratio
against it is fair. Stripping keeps every tensor in place, so the report names
tensors as the converter did. The stripped file is proven bitwise identical to
the converter's in TFLM, as the compressed one is to the stripped one.

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
from edgesparse.runtime.tflm_decode import DecodeVerification, measured_arena, verify_compressed
from edgesparse.runtime.verify import quantize_input
from edgesparse.tflite.decode_compress import CompressionPlan, TensorChoice, choose_compression
from edgesparse.tflite.graph import io_quantization, load_graph
from edgesparse.tflite.strip import StripResult, strip_overhead

__all__ = [
    "RANDOM_SAMPLES",
    "VALIDATION_SAMPLES",
    "McuCompression",
    "add_estimate",
    "compress_for_mcu",
    "model_inputs",
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
    """Float inputs as the model's input 0 takes them (runtime.verify.quantize_input, the verification's rule)."""
    q = io_quantization(model_bytes)["input"]
    return quantize_input(x, q["dtype"], q["scale"], q["zero_point"])


def _items(result: StripResult, when: str) -> list[dict[str, Any]]:
    return [{"what": item.what, "saved_bytes": item.saved_bytes, "detail": item.detail, "when": when}
            for item in result.items]


def _tensor_names(model_bytes: bytes) -> list[str]:
    """Subgraph 0's tensor names by index (stripping keeps every tensor where it was, so these name them after)."""
    return [t.name for t in load_graph(model_bytes).subgraphs[0].tensors]


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


def _name(choice: TensorChoice, names: list[str]) -> str:
    return names[choice.index] if choice.index < len(names) and names[choice.index] else choice.name


@dataclass
class _Fitted:
    plan: CompressionPlan
    kept: dict[int, str]          # tensor index -> why the RAM budget sent it back to dense
    arena: dict[str, int]         # the plan's arena as TFLM records it (with the alt memory); {} if none compressed


def _fit_ram(model: bytes, mode: str, budget: _Budget, names: list[str]) -> _Fitted:
    """choose_compression, then the largest decoded tensors back to dense until the measured arena fits."""
    kept: dict[int, str] = {}
    plan = choose_compression(model, mode)
    while plan.compressed:
        arena = measured_arena(plan.model, alt_decompression_bytes=budget.alt)
        why = budget.over(plan, int(arena["total"]))
        if why is None:
            return _Fitted(plan, kept, arena)
        largest = max(plan.compressed, key=lambda t: (t.dense_bytes, -t.index))
        kept[largest.index] = f"'{_name(largest, names)}' ({largest.dense_bytes:,} B decoded) kept dense: {why}"
        plan = choose_compression(model, mode, keep_dense=list(kept))
    return _Fitted(plan, kept, {})


def _tensor_entry(choice: TensorChoice, fitted: _Fitted, alt: int, names: list[str]) -> dict[str, Any]:
    compressed = choice.method != "dense"
    return {"name": _name(choice, names), "shape": list(choice.shape), "dtype": choice.dtype,
            "method": choice.method, "dense_bytes": choice.dense_bytes,
            "encoded_bytes": choice.payload_bytes if compressed else None,
            "saved_bytes": choice.file_saving if compressed else None,
            "arena_added_bytes": choice.dense_bytes if compressed and not alt else 0,
            "decoded_elements": int(np.prod(choice.shape)) if compressed else 0,
            "reason": f"kept dense for RAM: {fitted.kept[choice.index]}" if choice.index in fitted.kept
            else choice.reason}


def _section(mode: str, fitted: _Fitted | None, model: bytes, *, uncompressed: bytes, dense_int8: bytes,
             overhead: dict[str, Any], arenas: dict[str, Any], budget: _Budget, names: list[str],
             verification: dict[str, Any] | None) -> dict[str, Any]:
    """report.json's "compression" (/work/scratch/compression_section.md's agreed shape)."""
    plan = fitted.plan if fitted is not None else None
    compressed = plan.compressed if plan is not None else []
    kept = fitted.kept if fitted is not None else {}
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
                  "compressed_measured_head_bytes": arenas.get("compressed_head"),
                  "added_bytes": measured - measured_dense if measured is not None and measured_dense else None},
        "alt_decompression": {"available_bytes": budget.alt,
                              "needed_bytes": plan.largest_decoded_bytes if plan is not None and budget.alt else 0},
        "decoded_elements_per_invoke": sum(int(np.prod(t.shape)) for t in compressed),
        "decode_ms": None, "decode_basis": None,
        "ram_budget": {"limit_bytes": budget.limit,
                       "kept_dense_for_ram": [names[i] if i < len(names) and names[i] else f"tensor {i}"
                                              for i in kept],
                       "reason": "; ".join(kept.values()) if kept else None},
        "tensors": [_tensor_entry(t, fitted, budget.alt, names) for t in plan.tensors]
        if plan is not None and fitted is not None else [],
        "verification": verification,
    }


def _verification(proofs: list[DecodeVerification], random_samples: int, stripped: bool) -> dict[str, Any] | None:
    """What was compared in TFLM: the stripped file against the converter's, the compressed one against it."""
    if not proofs:
        return None
    compared = (["baselines/pruned_int8.tflite (overhead stripped) vs the converter's file"] if stripped else []) + (
        ["model.tflite (DECODE) vs baselines/pruned_int8.tflite"] if len(proofs) > int(stripped) else [])
    return {"interpreter": "TFLite Micro", "bitwise_identical": True, "compared": compared,
            "samples": proofs[-1].samples - random_samples, "random_samples": random_samples,
            "decoded_tensors_equal": proofs[-1].decoded_tensors,
            "alt_decompression_bytes": proofs[-1].alt_decompression_bytes,
            "alt_samples": proofs[-1].alt_samples, "alt_decoded_tensors_equal": proofs[-1].alt_decoded_tensors,
            "accuracy": "the build's accuracy figures are those of model.tflite, measured in TFLM; its outputs are "
                        "bitwise identical to the converter's int8 file's on every input compared, so they hold "
                        "for it too"}


def compress_for_mcu(artifact: bytes, profile: Profile, mode: str, samples: np.ndarray | None, *,
                     dense_int8: bytes = b"", random_samples: int = RANDOM_SAMPLES,
                     progress: Progress | None = None) -> McuCompression:
    """The int8 artifact stripped and compressed with DECODE as `mode` allows and the RAM fits, proven in TFLM.

    `samples`: validation inputs as floats (quantized here for the model's
    input); the first VALIDATION_SAMPLES and `random_samples` random inputs
    must give bitwise identical outputs in TFLM. `dense_int8` is stripped the
    same way as the artifact, for a fair ratio.
    """
    progress = progress or no_progress
    names = _tensor_names(artifact)
    stripped = strip_overhead(artifact, profile.runtime)
    uncompressed = stripped.model
    dense = strip_overhead(dense_int8, profile.runtime).model if dense_int8 else b""
    x = model_inputs(artifact, np.asarray(samples)[:VALIDATION_SAMPLES]) if samples is not None else None
    proofs = [verify_compressed(artifact, uncompressed, x, random_samples=random_samples)] \
        if uncompressed != artifact else []
    overhead = {"saved_bytes": stripped.saved_bytes, "items": _items(stripped, "before DECODE"),
                "dense_int8_saved_bytes": len(dense_int8) - len(dense)}
    budget = _Budget(profile.budget.get("ram_bytes"), profile.persistent_ram_bytes, profile.alt_decompression_bytes)
    fitted = _fit_ram(uncompressed, mode, budget, names) if mode != "off" else None
    model, warnings = uncompressed, []
    if fitted is not None and fitted.kept:
        warnings.append(f"DECODE compression on {profile.name}: {len(fitted.kept)} tensor(s) kept dense to fit "
                        f"RAM: {'; '.join(fitted.kept.values())}")
        progress("warning", {"message": warnings[-1]})
    arenas: dict[str, Any] = {"uncompressed": proofs[0].arena_compressed.get("total") if proofs else None}
    if fitted is not None and fitted.plan.compressed:
        after = strip_overhead(fitted.plan.model, profile.runtime)   # the names of the tensors DECODE added
        model = after.model
        overhead["items"] += _items(after, "after DECODE")
        overhead["after_decode_saved_bytes"] = after.saved_bytes
        proofs.append(verify_compressed(uncompressed, model, x, random_samples=random_samples,
                                        alt_decompression_bytes=budget.alt))
        recorded = proofs[-1].arena_compressed_alt if budget.alt else proofs[-1].arena_compressed
        arenas = {"uncompressed": proofs[-1].arena_dense.get("total"), "compressed": recorded.get("total"),
                  "compressed_head": recorded.get("head")}
    section = _section(mode, fitted, model, uncompressed=uncompressed, dense_int8=dense, overhead=overhead,
                       arenas=arenas, budget=budget, names=names,
                       verification=_verification(proofs, random_samples, stripped=uncompressed != artifact))
    return McuCompression(model, uncompressed, dense, section, warnings)


def add_estimate(section: dict[str, Any] | None, check: dict[str, Any] | None) -> None:
    """The estimator's figures for the compressed file (from `check_model(...).to_dict()`), beside the measured."""
    if not section or not check:
        return
    ram = check.get("ram") or {}
    if ram.get("total_bytes") is not None:
        persistent = int((ram.get("breakdown") or {}).get("runtime_persistent_ram", 0))
        section["arena"]["compressed_estimated_bytes"] = int(ram["total_bytes"]) - persistent
    if ram.get("planned_bytes") is not None:
        section["arena"]["compressed_estimated_head_bytes"] = int(ram["planned_bytes"])
    decode = check.get("decode") or {}
    section["decode_ms"] = decode.get("decode_ms")
    section["decode_basis"] = _decode_basis(decode.get("latency_coefficients") or [])


def _decode_basis(coefficients: list[dict[str, Any]]) -> str | None:
    """One basis line for the decode time: each decoder's coefficient with its source (assumptions say so)."""
    parts = [f"{c.get('type')}: {c.get('basis')} ({c.get('source')})" for c in coefficients]
    return "; ".join(parts) or None   # the basis words ("transferred", "assumption") mark it for is_assumption
