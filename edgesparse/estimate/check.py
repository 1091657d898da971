"""The check: every estimate of one model on one profile, and its verdict against the profile's budgets.

Why apart from the estimates: memory, latency and energy each answer one
question; the check puts them together the way `edgesparse check`, `build`'s
report and `battery` need them, with every assumption listed and a budget
that cannot be estimated reported as unknown (neither passed nor failed).
Raises `ModelError` (a missing, unreadable or empty model), `ProfileError`
(an unknown or invalid profile) and `DataError` (an impossible rate, battery
capacity, sleep power or thread count).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse.builddir import BASELINES
from edgesparse.errors import ModelError
from edgesparse.estimate.decoding import DecodeWork, decode_work
from edgesparse.estimate.energy import EnergyEstimate, estimate_energy, format_rate
from edgesparse.estimate.latency import LatencyEstimate, estimate_latency
from edgesparse.estimate.memory import FlashEstimate, RamEstimate, estimate_flash, estimate_ram
from edgesparse.estimate.npu import NpuEstimate, driver_code_notes, npu_estimate
from edgesparse.estimate.ops import op_type
from edgesparse.profiles import Profile, load_profile
from edgesparse.runtime.vela import VelaCompilation, compile_for_ethos_u
from edgesparse.tflite.ethos_u import EthosUModel, describe_ethos_u, is_ethos_u_model
from edgesparse.tflite.graph import Graph, load_graph

__all__ = [
    "COMPILED_NOT_ESTIMATED",
    "NPU_SRAM_BUDGET",
    "SCHEMA_VERSION",
    "BudgetCheck",
    "CheckResult",
    "battery_comparison",
    "check_model",
    "iter_budget_keys",
    "load_graph_any",
]

SCHEMA_VERSION = 1
# What `check` cannot know about a Vela-compiled file, and where to find it instead.
COMPILED_NOT_ESTIMATED = (
    "latency and energy are unknown: the NPU command stream is not re-estimated here (Vela's performance model "
    "runs when Vela compiles, and the file does not record the accelerator configuration it was compiled for); "
    "see the build's report.json \"npu\" section, or check the plain int8 .tflite Vela compiled (an Ethos-U "
    f"build keeps it as {BASELINES['pruned_int8']})")

@dataclass
class BudgetCheck:
    """One budget: ok is True (the value is within its limit), False (a known value exceeds it) or None
    (unknown: the value cannot be estimated on this profile, so the budget is neither passed nor failed)."""

    name: str
    limit: float
    value: float | None
    ok: bool | None
    unit: str
    kind: str  # "max" | "min"

    @property
    def status(self) -> str:
        """'pass', 'FAIL' or 'unknown'."""
        return "unknown" if self.ok is None else ("pass" if self.ok else "FAIL")

    @property
    def margin(self) -> float | None:
        if self.value is None:
            return None
        return (self.limit - self.value) if self.kind == "max" else (self.value - self.limit)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit": self.limit, "value": self.value, "ok": self.ok,
                "status": self.status, "unit": self.unit, "kind": self.kind,
                "margin": None if self.margin is None else round(self.margin, 6)}


_BUDGETS = {  # key in [budget] -> (estimate attribute, unit, kind)
    "flash_bytes": ("flash_bytes", "B", "max"),
    "ram_bytes": ("ram_bytes", "B", "max"),
    "latency_ms": ("latency_ms", "ms", "max"),
    "energy_mj": ("energy_mj", "mJ", "max"),
    "battery_hours": ("battery_hours", "h", "min"),
    "battery_days": ("battery_days", "d", "min"),
}
# Not a [budget] key: an Ethos-U profile's [npu] sram_bytes, the SRAM Vela's arena (or cache) may use.
NPU_SRAM_BUDGET = "npu_sram_bytes"


@dataclass
class CheckResult:
    """Everything `edgesparse check` knows about one model on one profile."""

    profile: str
    profile_path: str
    profile_sha256: str
    runtime: str
    model: str | None
    model_size: int
    flash: FlashEstimate
    ram: RamEstimate
    latency: LatencyEstimate
    energy: EnergyEstimate
    budgets: list[BudgetCheck]
    assumptions: list[str]
    warnings: list[str]
    decode: DecodeWork = field(default_factory=DecodeWork)
    npu: NpuEstimate | None = None          # an Ethos-U profile: the estimate from Vela's compilation
    ethos_u: EthosUModel | None = None      # the model is already Vela-compiled: what its file says

    @property
    def fits(self) -> bool:
        """False only when a known value exceeds its budget; unknown budgets do not fail (see `complete`)."""
        return not any(b.ok is False for b in self.budgets)

    @property
    def complete(self) -> bool:
        """True when every budget could be checked (no unknown value)."""
        return all(b.ok is not None for b in self.budgets)

    @property
    def unknown_budgets(self) -> list[str]:
        return [b.name for b in self.budgets if b.ok is None]

    @property
    def flash_bytes(self) -> int:
        return self.flash.total_bytes

    @property
    def ram_bytes(self) -> int:
        return self.ram.total_bytes

    @property
    def latency_ms(self) -> float | None:
        return self.latency.latency_ms

    @property
    def energy_mj(self) -> float | None:
        return self.energy.energy_mj

    @property
    def battery_hours(self) -> float | None:
        return self.energy.battery_hours

    @property
    def battery_days(self) -> float | None:
        return self.energy.battery_days

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "profile": self.profile, "profile_path": self.profile_path, "profile_sha256": self.profile_sha256,
            "runtime": self.runtime, "model": self.model, "model_size": self.model_size,
            "fits": self.fits, "complete": self.complete, "unknown_budgets": self.unknown_budgets,
            "flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 4),
            "energy_mj": None if self.energy_mj is None else round(self.energy_mj, 6),
            "battery_hours": None if self.battery_hours is None else round(self.battery_hours, 3),
            "basis": {"flash": self.flash.basis, "ram": self.ram.basis, "latency": self.latency.basis,
                      "energy": self.energy.basis},
            "latency_basis": self.latency.basis, "latency_basis_detail": self.latency.summary,
            "budgets": [b.to_dict() for b in self.budgets],
            "flash": self.flash.to_dict(), "ram": self.ram.to_dict(), "latency": self.latency.to_dict(),
            "energy": self.energy.to_dict(),
            "ops": [o.to_dict() for o in self.latency.ops],
            "assumptions": list(self.assumptions), "warnings": list(self.warnings),
            "decode": self._decode_dict(),
            "npu": self.npu_dict(),
        }

    def npu_dict(self) -> dict[str, Any] | None:
        """The Ethos-U figures: the NPU estimate, or what a Vela-compiled file says (None: neither)."""
        if self.npu is not None:
            return self.npu.to_dict()
        if self.ethos_u is not None:
            return {"compiled_file": True, **self.ethos_u.as_dict(), "not_estimated": COMPILED_NOT_ESTIMATED}
        return None

    def _decode_dict(self) -> dict[str, Any] | None:
        """TFLM DECODE in one place: the decoded tensors, the RAM and time they cost (None: no DECODE)."""
        if not self.decode:
            return None
        lat = self.latency.decode or {}
        ram = self.ram.decode or {}
        return {**self.decode.to_dict(), "decode_ms": lat.get("decode_ms"), "decode_us": lat.get("decode_us"),
                "latency_coefficients": lat.get("coefficients", []),
                "arena_decoded_bytes": ram.get("arena_decoded_bytes"),
                "persistent_bytes": ram.get("persistent_bytes"),
                "alt_decompression": self.ram.alt_decompression}



def iter_budget_keys() -> Iterable[str]:
    """The budget names the check knows, in display order ([budget] keys, then the NPU's SRAM)."""
    return iter((*_BUDGETS, NPU_SRAM_BUDGET))


def _check_budgets(profile: Profile, values: Mapping[str, float | None]) -> list[BudgetCheck]:
    out = []
    for key, limit in profile.budget.items():
        if key not in _BUDGETS or limit is None or isinstance(limit, bool):
            continue
        attr, unit, kind = _BUDGETS[key]
        value = values.get(attr)
        ok: bool | None
        if value is None:
            ok = None  # unknown: an estimate that cannot be made neither passes nor fails its budget
        else:
            ok = value <= limit if kind == "max" else value >= limit
        out.append(BudgetCheck(key, float(limit), None if value is None else float(value), ok, unit, kind))
    return out


def load_graph_any(model: bytes | str | Path) -> tuple[Graph, bytes, str | None]:
    """(graph, model bytes, path or None) from bytes or a path; ModelError (naming the path) on anything
    unreadable: a missing file, a directory, a corrupt flatbuffer."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        return load_graph(data), data, None
    graph = load_graph(Path(model))
    return graph, graph.data, str(model)


def check_model(model_bytes_or_path: bytes | str | Path, profile: Profile | str, *,
                rate: str | float | None = None, battery_mah: float | None = None, sleep_mw: float | None = None,
                threads: int | None = None, compilation: VelaCompilation | None = None) -> CheckResult:
    """Estimate flash, RAM, latency, energy and battery of a .tflite on a profile, and check its budgets.

    On an Ethos-U profile a plain int8 model is priced from Vela's compilation of it (`compilation`, or
    compiled here: MissingDependency naming edgesparse[npu] without Vela); a file Vela already compiled is
    described from the file alone, its latency and energy unknown (see `_check_compiled`).
    """
    prof = profile if isinstance(profile, Profile) else load_profile(str(profile))
    graph, data, path = load_graph_any(model_bytes_or_path)
    if not graph.ops:
        raise ModelError("The model has no operators", where=path or "<bytes>",
                         expected="a .tflite with at least one op", received="an empty graph")
    if is_ethos_u_model(graph):
        return _check_compiled(graph, data, path, prof, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw)
    if prof.npu is not None:
        return _check_npu(graph, path, prof, compilation, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw)
    if compilation is not None:
        raise ValueError(f"a Vela compilation was given for {prof.name}, which has no [npu] table")
    decode = decode_work(graph)  # validates every DECODE's ancillary data: ModelError before any estimate
    # latency and energy first: they refuse an impossible thread count, battery or sleep power
    # before the RAM estimate loads the model into LiteRT
    latency = estimate_latency(graph, prof, threads=threads, decode=decode)
    energy = estimate_energy(latency.latency_ms, prof, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw,
                             latency_basis=latency.basis)
    flash = estimate_flash(graph, prof, model_size=len(data))
    ram = estimate_ram(graph, prof, model_bytes=data, decode=decode)
    values = _values(flash, ram, latency, energy)
    budgets = _check_budgets(prof, values)
    warnings = list(latency.warnings) + _unknown_warning(budgets)
    if prof.runtime == "tflm" and any(op_type(op) == "DENSIFY" for op in graph.ops):
        warnings.append("TFLM cannot run DENSIFY (sparse weights): this file will not load on the device; "
                        "build a dense int8 flatbuffer for TFLM targets")
    if decode and prof.runtime != "tflm":
        warnings.append(f"{prof.runtime} has no DECODE kernel (a TFLite Micro custom op): this compressed file "
                        "runs only on TFLite Micro profiles")
    alt = ram.alt_decompression
    if alt is not None and alt["tensors_in_arena"]:
        warnings.append(f"alternate decompression memory: {alt['needed_bytes']} B needed, the profile has "
                        f"{alt['available_bytes']} B; TFLM decodes {', '.join(alt['tensors_in_arena'])} into "
                        "the arena instead (counted in ram_bytes)")
    return CheckResult(profile=prof.name, profile_path=str(prof.path), profile_sha256=prof.sha256,
                       runtime=prof.runtime, model=path, model_size=len(data), flash=flash, ram=ram,
                       latency=latency, energy=energy, budgets=budgets,
                       assumptions=_assumptions(graph, flash, ram, latency, energy), warnings=warnings,
                       decode=decode)


def _unknown_warning(budgets: list[BudgetCheck], why: str = "no estimate on this profile") -> list[str]:
    unknown = [b.name for b in budgets if b.ok is None]
    if not unknown:
        return []
    return ["incomplete check: budget(s) " + ", ".join(unknown) + f" unknown ({why}); they neither pass nor "
            "fail, so `fits` covers only the known budgets"]


def _npu_sram_budget(npu: Any, used: int) -> BudgetCheck:
    """Vela's SRAM use (the arena in SRAM, or its cache in Dedicated_Sram) against [npu] sram_bytes."""
    limit = float(npu.sram_bytes)
    return BudgetCheck(NPU_SRAM_BUDGET, limit, float(used), used <= limit, "B", "max")


def _values(flash: FlashEstimate, ram: RamEstimate, latency: LatencyEstimate,
            energy: EnergyEstimate) -> dict[str, float | None]:
    return {"flash_bytes": flash.total_bytes, "ram_bytes": ram.total_bytes, "latency_ms": latency.latency_ms,
            "energy_mj": energy.energy_mj, "battery_hours": energy.battery_hours, "battery_days": energy.battery_days}


def _check_npu(graph: Graph, path: str | None, prof: Profile, compilation: VelaCompilation | None, *,
               rate: str | float | None, battery_mah: float | None, sleep_mw: float | None) -> CheckResult:
    """A plain int8 model on an Ethos-U profile: Vela compiles it (unless given), estimate.npu prices it."""
    assert prof.npu is not None
    compiled = compilation if compilation is not None else compile_for_ethos_u(graph.data, prof.npu)
    est = npu_estimate(compiled, prof, int8_model=graph, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw)
    budgets = _check_budgets(prof, _values(est.flash, est.ram, est.latency, est.energy))
    budgets.append(_npu_sram_budget(prof.npu, compiled.sram_bytes))
    warnings = list(est.warnings) + est.vela_warnings + _unknown_warning(budgets)
    assumptions = list(est.notes) + _estimate_notes(est.flash, est.ram, est.energy)
    return CheckResult(profile=prof.name, profile_path=str(prof.path), profile_sha256=prof.sha256,
                       runtime=prof.runtime_name, model=path, model_size=len(compiled.model), flash=est.flash,
                       ram=est.ram, latency=est.latency, energy=est.energy, budgets=budgets,
                       assumptions=assumptions, warnings=warnings, npu=est)


def _check_compiled(graph: Graph, data: bytes, path: str | None, prof: Profile, *, rate: str | float | None,
                    battery_mah: float | None, sleep_mw: float | None) -> CheckResult:
    """A file Vela already compiled: what the file says (flash, the arena, the CPU ops), without TF or Vela.

    Its latency and energy are unknown: the command stream is not re-estimated (COMPILED_NOT_ESTIMATED).
    """
    ethos = describe_ethos_u(graph)
    cpu = ", ".join(ethos.cpu_ops) or "none"
    latency = LatencyEstimate(None, "none", "not estimated: a Vela-compiled file", 1, [], 0.0, [],
                              summary="not estimated: a Vela-compiled file")
    energy = estimate_energy(None, prof, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw, latency_basis="none")
    flash = estimate_flash(graph, prof, model_size=len(data))
    if prof.npu is not None:
        flash.notes += driver_code_notes(prof)
    ram = estimate_ram(graph, prof, model_bytes=data)
    budgets = _check_budgets(prof, _values(flash, ram, latency, energy))
    warnings = [f"a Vela-compiled file ({ethos.npu_ops} ethos-u op(s); CPU ops: {cpu}): {COMPILED_NOT_ESTIMATED}"]
    if prof.npu is None:
        warnings.append(f"this file runs only with an Arm Ethos-U NPU (the ethos-u custom op): {prof.name} has "
                        "none, so it will not run there; check the plain int8 .tflite on this profile instead")
    else:
        used = ethos.scratch_fast_bytes or ethos.arena_bytes
        budgets.append(_npu_sram_budget(prof.npu, used))
        warnings.append("the file does not record the accelerator it was compiled for: it must have been "
                        f"compiled for {prof.npu.accelerator} ({prof.name}'s [npu] accelerator) to run there")
    warnings += _unknown_warning(budgets, "not estimated for a Vela-compiled file")
    return CheckResult(profile=prof.name, profile_path=str(prof.path), profile_sha256=prof.sha256,
                       runtime=prof.runtime_name, model=path, model_size=len(data), flash=flash, ram=ram,
                       latency=latency, energy=energy, budgets=budgets,
                       assumptions=_estimate_notes(flash, ram, energy), warnings=warnings, ethos_u=ethos)


def _estimate_notes(flash: FlashEstimate, ram: RamEstimate, energy: EnergyEstimate) -> list[str]:
    return [f"ram: {n}" for n in ram.notes] + [f"energy: {n}" for n in energy.notes] + \
        [f"flash: {n}" for n in flash.notes]


def _assumptions(graph: Any, flash: FlashEstimate, ram: RamEstimate, latency: LatencyEstimate,
                 energy: EnergyEstimate) -> list[str]:
    """Everything the estimates rest on that was not measured or fitted on the device, one line each."""
    out: list[str] = []
    if latency.basis in ("transferred", "fitted+transferred"):
        out.append(f"latency basis: {latency.basis}: {latency.summary}")
    elif latency.basis != "fitted":
        out.append(f"latency: {latency.basis} (coefficients not fitted to measurements)")
    if energy.basis in ("assumption", "none"):
        out.append(f"energy: {energy.basis}")
    out += _estimate_notes(flash, ram, energy)
    unanalyzed = [op_type(op) for op in graph.ops if getattr(op, "analyzed", True) is False]
    if unanalyzed:
        out.append("latency: MACs unknown for " + ", ".join(sorted(set(unanalyzed))) +
                   " (priced by bytes moved and per-op overhead only)")
    return out


def battery_comparison(variants: Mapping[str, bytes | str | Path], profile: Profile | str, *,
                       rate: str | float | None = None, battery_mah: float | None = None,
                       sleep_mw: float | None = None) -> list[dict[str, Any]]:
    """Energy per inference and battery life of several builds of one model on one profile.

    `edgesparse battery` passes the pruned artifact and its dense baselines, so the
    battery gain from pruning and quantization is visible side by side. It lives with
    the check (not in `energy`) because each row is a full check: its verdict and
    assumptions come with it.
    """
    rows = []
    for variant, model in variants.items():
        result = check_model(model, profile, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw)
        energy = result.energy
        rows.append({
            "variant": variant, "model_bytes": result.model_size, "latency_ms": result.latency_ms,
            "latency_basis": result.latency.basis, "energy_mj": result.energy_mj,
            "average_power_mw": energy.average_power_mw, "battery_hours": result.battery_hours,
            "battery_days": result.battery_days, "model_share": energy.model_share,
            "rate": None if energy.rate_per_s is None else format_rate(energy.rate_per_s),
            "battery_mah": energy.battery_mah, "sleep_mw": energy.sleep_mw, "active_mw": energy.active_mw,
            "energy_basis": energy.basis, "fits": result.fits, "assumptions": list(result.assumptions),
        })
    return rows
