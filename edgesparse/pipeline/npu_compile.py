"""The build's "npu" stage for Arm Ethos-U profiles: the verified int8 model compiled with Vela, dense beside it.

Why a stage of its own: on an Ethos-U microcontroller the file flashed is not
the converter's int8 model but Vela's compilation of it (an `ethos-u` custom op
holding the NPU command stream and the encoded weights, plus the ops Vela left
to the CPU). That file cannot run on this machine, so the build verifies the
plain int8 model in TFLite Micro first (accuracy, agreement, test accuracy, as
on every TFLM profile), then compiles exactly that model here, and keeps it
beside the compiled one (`baselines/pruned_int8.tflite`). The dense int8
baseline (the model before pruning) is compiled for the same profile, so the
report shows what pruning and clustering did to Vela's encoded weights and
cycle estimate, dense against pruned. Vela itself runs in `runtime.vela`; its
figures are priced for the profile by `estimate.npu` and laid out by
`report.npu`.

`require_compiler` is the check before any work: an Ethos-U profile without
Vela installed is refused (MissingDependency, exit 2, naming edgesparse[npu])
before the data is loaded or anything is trained.

Raises: `MissingDependency` (no Vela), `ConversionError` (Vela failed on the
model, with Vela's words).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgesparse._types import Progress, no_progress
from edgesparse.builddir import ARTIFACT, BASELINES
from edgesparse.estimate import check_model
from edgesparse.estimate.npu import npu_estimate
from edgesparse.profiles.profile import Profile
from edgesparse.report.npu import NOT_VERIFIED, npu_section
from edgesparse.runtime.vela import VelaCompilation, compile_for_ethos_u, require_vela
from edgesparse.tflite.graph import load_graph

__all__ = [
    "NpuBuild",
    "NpuEstimates",
    "compile_for_profile",
    "estimate",
    "note",
    "require_compiler",
    "verification_scope",
    "verified_text",
]


@dataclass
class NpuBuild:
    """The Vela-compiled artifact, the plain int8 model it was compiled from, and both compilations."""

    model: bytes = field(repr=False)        # model.tflite: Vela's output for the profile's NPU
    plain_int8: bytes = field(repr=False)   # baselines/pruned_int8.tflite: the int8 model TFLM verified
    compilation: VelaCompilation            # of plain_int8
    dense: VelaCompilation | None           # of the dense int8 baseline (None when the build has none)


@dataclass
class NpuEstimates:
    """An Ethos-U build's report.json "check" and "npu", and what the user must hear about the compilation."""

    check: dict[str, Any]
    section: dict[str, Any]
    warnings: list[str]     # the CPU fallback and Vela's warnings, worded by the estimate (check.warnings has them)


def require_compiler(profile: Profile) -> str | None:
    """Vela's version for an Ethos-U profile (MissingDependency naming edgesparse[npu] without it); None otherwise."""
    if profile.npu is None:
        return None
    return require_vela()


def compile_for_profile(plain_int8: bytes, dense_int8: bytes, profile: Profile) -> NpuBuild:
    """Vela compiles the verified int8 model and the dense int8 baseline for `profile`'s NPU.

    What Vela said (its warnings, the ops it left to the CPU) is worded by the estimate (`estimate`), once.
    """
    npu = profile.npu
    if npu is None:
        raise ValueError(f"{profile.name} has no [npu] table: compile_for_profile is for Ethos-U profiles")
    compilation = compile_for_ethos_u(plain_int8, npu)
    dense = compile_for_ethos_u(dense_int8, npu) if dense_int8 else None
    return NpuBuild(model=compilation.model, plain_int8=plain_int8, compilation=compilation, dense=dense)


def verified_text(interpreter: str) -> str:
    """What the build did verify on an Ethos-U profile, and what it did not, in one sentence for report.json."""
    return (f"verified: {BASELINES['pruned_int8']} (the int8 model Vela compiled, before compilation) in "
            f"{interpreter}: accuracy, top-1 agreement with the pruned Keras model and the test accuracy are "
            f"its figures. {NOT_VERIFIED}; that the NPU computes what TFLM computed rests on Vela and the NPU, and "
            f"{ARTIFACT}'s cycles, SRAM and flash figures are Vela's estimates")


def verification_scope(interpreter: str) -> dict[str, str | bool]:
    """report.json verification's extra keys on an Ethos-U build: which file was run, and what was not."""
    return {"model_file": BASELINES["pruned_int8"], "npu_command_stream_verified": False,
            "not_verified": NOT_VERIFIED, "scope": verified_text(interpreter)}


def estimate(npu: NpuBuild, dense_int8: bytes, profile: Profile, interpreter: str,
             progress: Progress | None = None) -> NpuEstimates:
    """report.json's "check" (the NPU estimate of the compiled model against the profile's budgets) and "npu"
    (Vela's figures priced for the profile, pruned against dense, with what was verified).

    The CPU fallback and Vela's warnings are reported as they happen (`progress`) and returned for the build's
    last lines; report.json keeps them once, in the check's warnings.
    """
    progress = progress or no_progress
    result = check_model(npu.plain_int8, profile, compilation=npu.compilation)
    assert result.npu is not None   # an Ethos-U profile's check is the NPU estimate
    dense = (npu_estimate(npu.dense, profile, int8_model=load_graph(dense_int8)) if npu.dense is not None
             else None)
    warnings = result.npu.warnings + result.npu.vela_warnings
    for warning in warnings:
        progress("warning", {"message": warning})
    return NpuEstimates(result.to_dict(), npu_section(result.npu, dense=dense, verified=verified_text(interpreter)),
                        warnings)


def note(npu: NpuBuild, profile: Profile) -> str:
    """conversion.notes' line for what Vela did."""
    c = npu.compilation
    return (f"Vela {c.vela_version} compiled the int8 model for {profile.name}'s {c.accelerator}: {c.npu_op_count} "
            f"op(s) on the NPU, {len(c.cpu_ops)} on the CPU; encoded weights {c.encoded_weight_bytes:,} B from "
            f"{c.raw_weight_bytes:,} B of int8 weights; {ARTIFACT} is Vela's file, the plain int8 model is "
            f"{BASELINES['pruned_int8']}")
