"""Flash, RAM, latency, energy and battery life of a .tflite on a device profile, and the check against budgets.

Import from here: `from edgesparse.estimate import check_model, estimate_latency, ...`.
The modules, split the way Arm Vela splits live ranges and allocation from its
performance model: `memory` (tensor lifetimes, the greedy planner, TFLM and
LiteRT RAM, flash), `decoding` (what TFLite Micro's DECODE ops cost: where
each decoded tensor lives, the state they keep, elements decoded per invoke;
read by `memory` and `latency` alike), `latency` (op features, coefficients,
pricing), `energy` (rates, energy per inference, battery life), `npu` (an Arm Ethos-U device: Vela's
cycles at the NPU clock, the CPU-fallback ops, energy, flash and arena of the compiled file),
`check` (budgets, `check_model`,
`battery_comparison`), `ops` (how all of them read a graph's ops and tensors)
and `calibrate` (fitting a profile's [latency] table to measurements; import it
as `edgesparse.estimate.calibrate`). Every figure says what it rests on; see
docs/estimation.md. Imports no TensorFlow: `check` runs on a Raspberry Pi
without it. Raises `ModelError`, `ProfileError` and `DataError` (see each module).
"""

from __future__ import annotations

from edgesparse.estimate.check import (
    COMPILED_NOT_ESTIMATED,
    NPU_SRAM_BUDGET,
    SCHEMA_VERSION,
    BudgetCheck,
    CheckResult,
    battery_comparison,
    check_model,
    iter_budget_keys,
    load_graph_any,
)
from edgesparse.estimate.energy import EnergyEstimate, energy_and_battery, estimate_energy, format_rate, parse_rate
from edgesparse.estimate.latency import (
    XNNPACK_BUILTIN_INT8,
    XNNPACK_DISPATCH_MIN_WORK,
    CoefficientUse,
    LatencyCoefficients,
    LatencyEstimate,
    OpCost,
    OpLatency,
    coefficient_basis,
    estimate_latency,
    latency_coefficients,
    op_features,
    predict_ops_us,
    price_ops,
    thread_factor,
    xnnpack_channel_tile,
)
from edgesparse.estimate.memory import (
    TFLM_HOST64,
    TFLM_MCU32,
    Buffer,
    FlashEstimate,
    MemoryPlan,
    RamEstimate,
    TflmLayout,
    align_up,
    cmsis_nn_scratch_bytes,
    estimate_flash,
    estimate_ram,
    litert_ram,
    offline_offsets,
    plan_greedy,
    tensor_lifetimes,
    tflm_ram,
)
from edgesparse.estimate.npu import NpuEstimate, npu_estimate
from edgesparse.estimate.ops import op_type, tensor_nbytes

__all__ = [
    "COMPILED_NOT_ESTIMATED",
    "NPU_SRAM_BUDGET",
    "SCHEMA_VERSION",
    "TFLM_HOST64",
    "TFLM_MCU32",
    "XNNPACK_BUILTIN_INT8",
    "XNNPACK_DISPATCH_MIN_WORK",
    "BudgetCheck",
    "Buffer",
    "CheckResult",
    "CoefficientUse",
    "EnergyEstimate",
    "FlashEstimate",
    "LatencyCoefficients",
    "LatencyEstimate",
    "MemoryPlan",
    "NpuEstimate",
    "OpCost",
    "OpLatency",
    "RamEstimate",
    "TflmLayout",
    "align_up",
    "battery_comparison",
    "check_model",
    "cmsis_nn_scratch_bytes",
    "coefficient_basis",
    "energy_and_battery",
    "estimate_energy",
    "estimate_flash",
    "estimate_latency",
    "estimate_ram",
    "format_rate",
    "iter_budget_keys",
    "latency_coefficients",
    "litert_ram",
    "load_graph_any",
    "npu_estimate",
    "offline_offsets",
    "op_features",
    "op_type",
    "parse_rate",
    "plan_greedy",
    "predict_ops_us",
    "price_ops",
    "tensor_lifetimes",
    "tensor_nbytes",
    "thread_factor",
    "tflm_ram",
    "xnnpack_channel_tile",
]
