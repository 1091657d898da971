"""Sweep runtime families: which profiles share one artifact, and which build options each family takes.

Why its own module: the grouping rule (runtime, sparse layouts, and one family per Ethos-U profile because Vela
compiles per accelerator configuration) decides what the sweep builds, what it checks with which options and
what it records as not buildable; `sweep.py` plans and runs, this says what goes together.
Raises DataError (exit 2) for --mcu-compression or --cluster without a family they apply to.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgesparse.errors import DataError
from edgesparse.pipeline import build as pipeline_build
from edgesparse.pipeline.build import BuildOptions
from edgesparse.pipeline.build_checks import check_options

__all__ = ["Family", "check_family_options", "families", "family_options", "unbuildable_reason"]


@dataclass
class Family:
    """Profiles that load the same artifact; built once, for `build_profile`."""

    key: str
    runtime: str
    profiles: list[Any]

    @property
    def build_profile(self):
        return self.profiles[0]

    @property
    def name(self) -> str:
        return self.build_profile.name

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "runtime": self.runtime, "build_profile": self.name,
                "profiles": [p.name for p in self.profiles]}


def families(profiles: Sequence[Any]) -> list[Family]:
    """Group profiles by what decides the artifact: runtime and the sparse layouts its kernels read.

    An Ethos-U profile (profile.npu) is a family of its own: Vela compiles the artifact for one accelerator
    configuration (accelerator, memory mode, SRAM, clocks), so it is built per profile.
    """
    out: dict[str, Family] = {}
    for p in profiles:
        key = json.dumps([p.runtime, bool(p.sparse_weights), p.block_sparsity, p.block_sparsity_int8,
                          None if p.npu is None else p.name])
        out.setdefault(key, Family(key, p.runtime, [])).profiles.append(p)
    return list(out.values())


def family_options(base: BuildOptions, family: Family) -> BuildOptions:
    """The build options of one family: DECODE compression exists only for plain TFLite Micro, clustering for
    TFLite Micro and Ethos-U (Vela's encoding shrinks with few distinct values too)."""
    if family.runtime != "tflm":
        return dataclasses.replace(base, mcu_compression=None, cluster=None)
    if family.build_profile.npu is not None:
        return dataclasses.replace(base, mcu_compression=None)
    return base


def check_family_options(base: BuildOptions, fams: Sequence[Family]) -> None:
    """--mcu-compression and --cluster checked for the families they apply to before any build (refused when none
    does): DECODE for plain TFLM families, clustering for TFLM and Ethos-U ones."""
    tflm = [f for f in fams if f.runtime == "tflm"]
    decode = [f for f in tflm if f.build_profile.npu is None]
    if base.mcu_compression not in (None, "off") and not decode:
        raise DataError("--mcu-compression applies only to TFLite Micro profiles without an NPU",
                        where="--mcu-compression",
                        expected="at least one --profile whose runtime is tflm (an Ethos-U profile's weights are "
                                 "compressed by Vela instead)", received=", ".join(f.name for f in fams))
    if base.cluster is not None and not tflm:
        raise DataError("--cluster applies only to TFLite Micro and Ethos-U profiles", where="--cluster",
                        expected="at least one --profile whose runtime is tflm or tflm+ethos-u (a microcontroller)",
                        received=", ".join(f.name for f in fams))
    for fam in tflm:
        options = family_options(base, fam)
        check_options(tensorboard=None, min_agreement=base.min_agreement, epochs=base.epochs,
                      batch_size=base.batch_size, min_params=base.min_params, runtime=fam.build_profile.runtime_name,
                      mcu_compression=options.mcu_compression, cluster=options.cluster)


def unbuildable_reason(family: Family, quantize: str, granularity: str = "auto") -> str | None:
    """Why `family` cannot run a `quantize` artifact, or None."""
    if family.runtime == "tflm" and quantize in ("dynamic", "float16"):
        return f"TFLite Micro has no {quantize} kernels (int8 or float32 only)"
    if granularity == "block" and pipeline_build.block_shape(family.build_profile, quantize) is None:
        return f"--granularity block: {family.name}'s runtime reads no block-sparse {quantize} weights"
    return None
