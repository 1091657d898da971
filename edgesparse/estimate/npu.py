"""Latency, energy, flash and RAM of a model on an Arm Ethos-U device, priced from Vela's compilation of it.

Why its own module: on an Ethos-U microcontroller the NPU's time comes from Vela's performance model
(cycles at the profile's NPU clock; Vela compiled with a system configuration generated from the
profile's [npu] table), not from the CPU cost model; only the ops Vela leaves to the CPU, and the
CPU's per-inference and per-op dispatch overheads around the NPU, are priced by `estimate.latency`
at the CPU clock. The rest reuses the existing owners: energy and battery life through
`estimate.energy` (NPU time at [npu] active_mw plus CPU time at [power] active_mw), flash through
`estimate.memory.estimate_flash` on the compiled file (weights and command stream as Vela placed
them, plus the runtime's code and, when the profile gives it, kernel_code_bytes "ETHOS-U" for the
Ethos-U driver and kernel), RAM through TFLM's arena plan of the compiled file (Vela's own plan of
its scratch area, OfflineMemoryAllocation, plus the CPU ops' tensors and TFLM's persistent RAM).
The budget verdict is the check's (`estimate.check.check_model` calls `npu_estimate`).

Raises `ProfileError` (a profile without an [npu] table), `DataError` (an impossible rate, battery
or sleep power: estimate.energy) and `ModelError` (an unreadable int8 model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgesparse.errors import ProfileError
from edgesparse.estimate.energy import EnergyEstimate, estimate_energy
from edgesparse.estimate.latency import (
    CoefficientUse,
    LatencyCoefficients,
    LatencyEstimate,
    OpLatency,
    latency_coefficients,
    op_features,
    price_ops,
)
from edgesparse.estimate.memory import FlashEstimate, RamEstimate, estimate_flash, estimate_ram
from edgesparse.profiles import Profile
from edgesparse.profiles.profile import NpuConfig
from edgesparse.runtime.vela import LATENCY_BASIS, NpuOp, VelaCompilation
from edgesparse.tflite.ethos_u import ethos_u_ops
from edgesparse.tflite.graph import Graph

__all__ = ["ETHOS_U_KERNEL", "LATENCY_BASIS", "NpuEstimate", "driver_code_notes", "npu_estimate"]

#: The compiled file's custom op as `estimate.ops.op_type` names it: the key of [runtime] kernel_code_bytes
#: that holds the Ethos-U driver and its TFLM kernel.
ETHOS_U_KERNEL = "ETHOS-U"


@dataclass
class NpuEstimate:
    """One model on one Ethos-U profile: Vela's figures priced for the device, with what each rests on."""

    memory_mode: str
    npu_clock_mhz: float          # [npu] clock_mhz: the clock Vela's cycles are priced at
    cpu_clock_mhz: float | None
    npu_ms: float                 # total_cycles at the NPU clock
    cpu_ms: float | None          # CPU-fallback ops + CPU overheads (estimate.latency); None: cannot be priced
    latency: LatencyEstimate
    energy: EnergyEstimate
    flash: FlashEstimate
    ram: RamEstimate
    sram_limit_bytes: int         # [npu] sram_bytes: what Vela's SRAM use is checked against
    int8_model_bytes: int | None
    compilation: VelaCompilation = field(repr=False)   # Vela's own figures: read through it, not copied here
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # unpriced CPU ops and the CPU fallback

    @property
    def accelerator(self) -> str:
        return self.compilation.accelerator

    @property
    def npu_cycles(self) -> int:
        """Vela: the NPU's compute cycles."""
        return self.compilation.npu_cycles

    @property
    def total_cycles(self) -> int:
        """Vela: compute and memory access overlapped (what the latency uses)."""
        return self.compilation.total_cycles

    @property
    def placement(self) -> tuple[NpuOp, ...]:
        return self.compilation.ops

    @property
    def vela_warnings(self) -> list[str]:
        """Vela's own warnings as the check lists them (verbatim under "vela_warnings" in `to_dict`)."""
        return [f"Vela: {w}" for w in self.compilation.warnings]

    @property
    def latency_ms(self) -> float | None:
        return self.latency.latency_ms

    @property
    def energy_mj(self) -> float | None:
        return self.energy.energy_mj

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the check's and report.json's "npu" figures (no model bytes)."""
        c = self.compilation
        cpu = [op for op in self.placement if op.placement == "cpu"]
        return {
            "accelerator": self.accelerator, "memory_mode": self.memory_mode, "compiler": f"Vela {c.vela_version}",
            "npu_clock_mhz": self.npu_clock_mhz, "cpu_clock_mhz": self.cpu_clock_mhz,
            "system_config": c.system_config,
            "system_config_basis": "generated from the profile's [npu] table (runtime.vela.vela_system_config), "
                                   "not Vela's defaults",
            "ops": [op.as_dict() for op in self.placement], "npu_ops": len(self.placement) - len(cpu),
            "cpu_ops": len(cpu),
            "npu_cycles": c.npu_cycles, "total_cycles": c.total_cycles, "npu_ms": round(self.npu_ms, 6),
            "cpu_ms": None if self.cpu_ms is None else round(self.cpu_ms, 6),
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 6),
            "latency_basis": self.latency.basis, "latency_basis_detail": self.latency.summary,
            "energy_mj": None if self.energy_mj is None else round(self.energy_mj, 6),
            "energy_basis": self.energy.basis, "battery_hours": _round(self.energy.battery_hours, 3),
            "rate_per_s": self.energy.rate_per_s,
            "sram_bytes": c.sram_bytes, "sram_limit_bytes": self.sram_limit_bytes, "arena_bytes": c.arena_bytes,
            "vela_flash_bytes": c.flash_bytes, "command_stream_bytes": c.command_stream_bytes,
            "compiled_model_bytes": len(c.model), "int8_model_bytes": self.int8_model_bytes,
            "encoded_weight_bytes": c.encoded_weight_bytes, "raw_weight_bytes": c.raw_weight_bytes,
            "weight_compression": round(c.weight_compression, 4),
            "flash": self.flash.to_dict(), "ram": self.ram.to_dict(),
            "vela_warnings": list(c.warnings), "notes": list(self.notes), "warnings": list(self.warnings),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _require_npu(profile: Profile) -> NpuConfig:
    if profile.npu is None:
        raise ProfileError("Not an Ethos-U profile", where=profile.name,
                           expected="runtime.name tflm+ethos-u with an [npu] table",
                           received=f"runtime.name {profile.runtime_name!r}",
                           fix="Pass an Ethos-U profile, or check the model with `edgesparse check`")
    return profile.npu


@dataclass
class _CpuSide:
    """The CPU's share of one inference: the fallback ops and the dispatch overheads around the NPU."""

    us: float | None
    rows: list[OpLatency]
    uses: list[CoefficientUse]
    basis: str              # fitted | transferred | assumption | none ("" when there is no CPU time)
    notes: list[str]


def _cpu_side(compilation: VelaCompilation, profile: Profile, coefs: LatencyCoefficients | None, int8: Graph | None,
              custom_ops: int) -> _CpuSide:
    """Price the ops Vela left to the CPU (by their index in the int8 model) and the CPU overheads."""
    cpu_index = {op.index for op in compilation.cpu_ops}
    if coefs is None or not coefs.macs_per_cycle:
        if cpu_index:
            return _CpuSide(None, [], [], "none", [f"{profile.name} has no [latency] coefficients: the "
                                                   f"{len(cpu_index)} CPU op(s) cannot be priced"])
        return _CpuSide(0.0, [], [], "", ["the profile has no [latency] table: the CPU's per-inference and "
                                          "per-op dispatch overhead around the NPU is not counted"])
    if cpu_index and int8 is None:
        return _CpuSide(None, [], [], "none", ["the int8 model Vela compiled was not given: its CPU op(s) "
                                               "cannot be priced"])
    features = [f for f in op_features(int8, profile) if f.index in cpu_index] if int8 is not None else []
    priced = price_ops(features, coefs, 1, profile.cores)
    parts: dict[str, float] = {}
    rows, unpriced = [], []
    for f, (us, used, op_parts) in zip(features, priced):
        if f.macs_used and not used:
            unpriced.append(f.op)
        for path, value in op_parts.items():
            parts[path] = parts.get(path, 0.0) + value
        rows.append(OpLatency(f.index, f.op, f.kind, f.dtype, f.macs, f.macs_used, f.bytes_moved, us, 0.0, used,
                              f.kernel + " (CPU fallback)", "CPU: " + _reason(compilation, f.index)))
    dispatch = coefs.overhead_us_per_op * custom_ops
    if dispatch > 0:
        parts["overhead_us_per_op"] = parts.get("overhead_us_per_op", 0.0) + dispatch
        rows.append(OpLatency(-1, f"{ETHOS_U_KERNEL} dispatch", "overhead", "int8", 0, 0, 0, dispatch, 0.0, "",
                              f"TFLM invoking {custom_ops} ethos-u op(s) on the CPU", ""))
    if coefs.fixed_overhead_us > 0:
        parts["fixed_overhead_us"] = coefs.fixed_overhead_us
    notes = [f"CPU dispatch of {custom_ops} ethos-u op(s) priced at the profile's overhead_us_per_op"
             ] if dispatch else []
    uses = [CoefficientUse(path, coefs.basis_of(path), coefs.source_of(path), us, 0.0)
            for path, us in parts.items() if us > 0]
    if unpriced:
        notes.append(f"no latency estimate: {profile.name} has no coefficient for the CPU op(s) "
                     + ", ".join(sorted(set(unpriced))))
        return _CpuSide(None, rows, uses, "none", notes)
    return _CpuSide(sum(parts.values()), rows, uses, _weakest_basis(uses), notes)


def _reason(compilation: VelaCompilation, index: int) -> str:
    return next((op.reason for op in compilation.cpu_ops if op.index == index), "") or "placed on the CPU by Vela"


def _weakest_basis(uses: list[CoefficientUse]) -> str:
    """The CPU part's basis: its least trustworthy coefficient's ('' when nothing is priced)."""
    bases = {u.basis for u in uses}
    for basis in ("assumption", "transferred", "fitted"):
        if basis in bases:
            return basis
    return "assumption" if bases else ""


def _latency(compilation: VelaCompilation, profile: Profile, npu: NpuConfig, int8: Graph | None,
             cpu: _CpuSide) -> LatencyEstimate:
    """NPU time (Vela) + CPU time (estimate.latency) as one LatencyEstimate, with a row for the NPU's part."""
    npu_us = compilation.latency_ms(npu.clock_mhz) * 1000.0
    total_us = None if cpu.us is None else npu_us + cpu.us

    def share(us: float) -> float:
        return us / total_us if total_us else 0.0

    clock_assumed = profile.is_assumption("npu.clock_mhz")
    source = (f"Vela {compilation.vela_version}: {compilation.total_cycles:,} cycles ({compilation.accelerator}) at "
              f"the profile's {npu.clock_mhz:g} MHz NPU clock" + (" (an assumption)" if clock_assumed else ""))
    uses = [CoefficientUse("vela.cycles_total", LATENCY_BASIS, source, npu_us, share(npu_us))]
    uses += [CoefficientUse(u.coefficient, u.basis, u.source, u.us, share(u.us)) for u in cpu.uses]
    on_npu = [op for op in compilation.ops if op.placement == "npu"]
    macs = _npu_macs(int8, {op.index for op in on_npu})
    npu_row = OpLatency(on_npu[0].index if on_npu else -1, ETHOS_U_KERNEL, "npu", "int8", macs, macs, 0, npu_us,
                        share(npu_us), "vela.cycles_total",
                        f"{compilation.accelerator} @ {npu.clock_mhz:g} MHz: {len(on_npu)} op(s) in "
                        f"{len(set(op.op_type for op in on_npu))} type(s)", "")
    rows = [npu_row] + [OpLatency(r.index, r.op, r.kind, r.dtype, r.macs, r.macs_used, r.bytes_moved,
                                  r.predicted_us, share(r.predicted_us), r.coefficient, r.kernel, r.flag)
                        for r in cpu.rows]
    basis = LATENCY_BASIS
    if cpu.us is None:
        basis = "none"
    elif cpu.us > 0 and cpu.basis in ("transferred", "assumption"):
        basis = f"{LATENCY_BASIS}+{cpu.basis}"
    if clock_assumed and basis != "none" and "assumption" not in basis:
        basis += "+assumption"
    summary = f"{LATENCY_BASIS} ({share(npu_us):.0%} of the time: {source})"
    if cpu.us:
        summary += (f"; CPU {cpu.us:.1f} us ({share(cpu.us):.0%}: " + ", ".join(u.coefficient for u in cpu.uses)
                    + f", {cpu.basis})")
    warnings = [] if cpu.us is not None else [n for n in cpu.notes if n.startswith("no latency") or
                                              "cannot be priced" in n]
    fixed = next((u.us for u in cpu.uses if u.coefficient == "fixed_overhead_us"), 0.0)
    return LatencyEstimate(None if total_us is None else total_us / 1000.0, basis, summary, 1, rows, fixed,
                           warnings, coefficients=uses, summary=summary if total_us is not None else
                           "incomplete: " + "; ".join(warnings))


def _npu_macs(int8: Graph | None, indices: set[int]) -> int:
    if int8 is None:
        return 0
    return sum(int(getattr(op, "macs", 0) or 0) for i, op in enumerate(int8.ops) if i in indices)


def _energy(profile: Profile, npu: NpuConfig, npu_ms: float, cpu_ms: float | None, latency: LatencyEstimate, *,
            rate: str | float | None, battery_mah: float | None, sleep_mw: float | None) -> EnergyEstimate:
    """NPU time at [npu] active_mw plus CPU time at [power] active_mw, as one time-weighted active power."""
    cpu_mw = profile.table("power").get("active_mw")
    keys: tuple[str, ...] = ("npu.active_mw",)
    active: float | None = npu.active_mw
    note = f"energy per inference: NPU {npu_ms:.4g} ms x {npu.active_mw:g} mW ([npu] active_mw)"
    if cpu_ms:
        keys += ("power.active_mw",)
        if cpu_mw is None:
            active = None
        else:
            active = (npu_ms * npu.active_mw + cpu_ms * float(cpu_mw)) / (npu_ms + cpu_ms)
            note += f" + CPU {cpu_ms:.4g} ms x {float(cpu_mw):g} mW ([power] active_mw)"
    latency_ms = latency.latency_ms
    energy = estimate_energy(latency_ms, profile, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw,
                             latency_basis=latency.basis, active_mw=active, active_keys=keys)
    if energy.energy_mj is not None:
        energy.notes.insert(0, note)
    return energy


def driver_code_notes(profile: Profile) -> list[str]:
    """Where the Ethos-U driver's code is in the flash figure, when the profile does not price it on its own."""
    per_op = profile.kernel_code_bytes
    if ETHOS_U_KERNEL in per_op:
        return []
    if "default" in per_op:
        return [f"the Ethos-U driver and kernel are counted at the profile's default kernel_code_bytes "
                f"({int(per_op['default']):,} B): the profile gives no kernel_code_bytes \"{ETHOS_U_KERNEL}\""]
    if "ethos" in str(profile.source("runtime.code_bytes") or "").lower():
        return ["the Ethos-U driver and kernel are in [runtime] code_bytes (its source says so)"]
    return [f"the Ethos-U driver and kernel code are not counted: the profile gives no [runtime] "
            f"kernel_code_bytes \"{ETHOS_U_KERNEL}\" and its code_bytes source does not name them"]


def npu_estimate(compilation: VelaCompilation, profile: Profile, *, int8_model: Graph | None,
                 rate: str | float | None = None, battery_mah: float | None = None,
                 sleep_mw: float | None = None) -> NpuEstimate:
    """Vela's compilation of a model priced on an Ethos-U profile: latency, energy, battery, flash, RAM.

    `int8_model` is the plain int8 file Vela compiled, parsed (callers have it parsed already): it prices the
    ops Vela left to the CPU (by their index); without it a model with CPU ops gets no latency (None), never a
    guess. The compiled file is read from `compilation.graph`, parsed once when Vela wrote it.
    """
    npu = _require_npu(profile)
    compiled = compilation.graph
    coefs = latency_coefficients(profile)
    cpu = _cpu_side(compilation, profile, coefs, int8_model, len(ethos_u_ops(compiled)))
    latency = _latency(compilation, profile, npu, int8_model, cpu)
    npu_ms = compilation.latency_ms(npu.clock_mhz)
    cpu_ms = None if cpu.us is None else cpu.us / 1000.0
    energy = _energy(profile, npu, npu_ms, cpu_ms, latency, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw)
    flash = estimate_flash(compiled, profile, model_size=len(compilation.model))
    flash.notes += driver_code_notes(profile)
    ram = estimate_ram(compiled, profile, model_bytes=compilation.model)
    ram.notes.append(f"the arena holds Vela's scratch area ({compilation.arena_bytes:,} B, SRAM used "
                     f"{compilation.sram_bytes:,} B) at the offsets Vela planned, with the CPU ops' tensors")
    notes = [f"latency: {LATENCY_BASIS}: Vela's cycle estimate, not measured on the device", *cpu.notes]
    if profile.is_assumption("npu.clock_mhz"):
        notes.append("latency: the NPU clock ([npu] clock_mhz) is an assumption")
    warnings = list(latency.warnings)
    if compilation.cpu_ops:
        warnings.append(f"{len(compilation.cpu_ops)} op(s) fall back to the CPU: " + "; ".join(
            f"op {op.index} {op.op_type} ({op.reason or 'no reason given'})" for op in compilation.cpu_ops))
    return NpuEstimate(
        memory_mode=npu.memory_mode, npu_clock_mhz=npu.clock_mhz,
        cpu_clock_mhz=coefs.clock_mhz if coefs is not None else profile.clock_mhz, npu_ms=npu_ms, cpu_ms=cpu_ms,
        latency=latency, energy=energy, flash=flash, ram=ram, sram_limit_bytes=npu.sram_bytes,
        int8_model_bytes=None if int8_model is None else int8_model.file_bytes,
        compilation=compilation, notes=notes, warnings=warnings)
