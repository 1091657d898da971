"""The device-profile schema: every table and key, its type, range, unit and meaning.

Why one declarative table: validation, `profiles show`, the docs' key list
(docs/profiles.md) and the writer all follow from `SCHEMA`, so adding a key
(e.g. a latency coefficient) is one `Key` in the right `Table`. Units are in
the key names (`_bytes`, `_mhz`, `_mw`, `_mah`, `_v`, `_ms`, `_us`).

Also the rule that reads a core name (`cortex-m4`, `xtensa-lx7`) from the
free-text `device.cpu`, so no module keys cores by profile name.
Raises nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALL",
    "CLASSES",
    "INTERPRETER_OF",
    "KERNELS",
    "KIND_NAMES",
    "NAME_PATTERN",
    "NPU_ACCELERATORS",
    "NPU_MEMORIES",
    "NPU_MEMORY_KEYS",
    "NPU_MEMORY_MODES",
    "NPU_RUNTIMES",
    "NUMERIC_KINDS",
    "RUNTIME_FOR_CLASS",
    "SCHEMA",
    "SCHEMA_VERSIONS",
    "SIMD",
    "SOURCES",
    "Key",
    "Table",
    "core_from_cpu",
    "schema_keys",
]

SCHEMA_VERSIONS = (1,)
CLASSES = ("phone", "sbc", "mcu", "host")
ALL = CLASSES


@dataclass(frozen=True)
class Key:
    """One key of the schema.

    kind: "int" | "number" | "bool" | "str" | "int_list" | "str_list" | "number_map"
    required: True/False, or the device classes for which it is required.
    only_for: the device classes that may use it (None: all).
    positive: must be > 0; minimum: must be >= minimum.
    choices: allowed values of a str (or of each item of a str_list).
    length: allowed lengths of a list.
    sourced: whether a number here needs a [sources] entry.
    """

    kind: str
    doc: str
    required: bool | tuple[str, ...] = False
    only_for: tuple[str, ...] | None = None
    positive: bool = False
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    length: tuple[int, ...] | None = None
    sourced: bool = True

    def required_for(self, device_class: str | None) -> bool:
        """Whether a profile of `device_class` must have this key."""
        if isinstance(self.required, bool):
            return self.required
        return device_class in self.required


@dataclass(frozen=True)
class Table:
    """One TOML table. `fitted_by` names a bool key: when it is true and `fit_source`
    is filled in, the table's numbers take their source from `fit_source`."""

    doc: str
    keys: dict[str, Key]
    required: tuple[str, ...] = ALL
    fitted_by: str | None = None

    def is_fitted(self, values: Mapping[str, Any]) -> bool:
        """Whether `values` (this table in a profile) was fitted, so its numbers need no [sources] entries."""
        return (self.fitted_by is not None and values.get(self.fitted_by) is True
                and bool(str(values.get("fit_source", "")).strip()))


SIMD = ("none", "neon", "dotprod", "i8mm", "fp16", "dsp", "helium", "pie",
        "sse4", "avx2", "avx512", "avx512_vnni")
KERNELS = {"litert": ("xnnpack", "builtin"), "tflm": ("cmsis-nn", "esp-nn", "reference")}
RUNTIME_FOR_CLASS = {"phone": "litert", "sbc": "litert", "host": "litert", "mcu": "tflm"}
# runtime.name -> the interpreter that runs the model's CPU side (and verifies it here). An Ethos-U
# microcontroller runs TFLM with the NPU's custom operator; its [npu] table says how Vela compiles for it.
INTERPRETER_OF = {"litert": "litert", "tflm": "tflm", "tflm+ethos-u": "tflm"}
NPU_RUNTIMES = ("tflm+ethos-u",)  # runtime names that need an [npu] table
# Vela's --accelerator-config values for the Ethos-U55 and U65 (Vela 5.2 also knows U85, not profiled yet).
NPU_ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256",
                    "ethos-u65-256", "ethos-u65-512")
NPU_MEMORY_MODES = ("Sram_Only", "Shared_Sram", "Dedicated_Sram")  # Vela's [Memory_Mode.*] sections
NPU_MEMORIES = ("Sram", "OnChipFlash", "OffChipFlash", "Dram")  # Vela's memory areas (AXI port targets)
NPU_MEMORY_KEYS = ("clock_scale", "burst_length", "read_latency", "write_latency", "max_reads", "max_writes")

SCHEMA: dict[str, Table] = {
    "": Table("Top-level keys.", {
        "schema_version": Key("int", "Version of this schema; 1.", required=True, sourced=False),
        "name": Key("str", "Profile name: lower case, digits, '_' (the file name without .toml).",
                    required=True),
        "description": Key("str", "One line: the board, its SoC and cores.", required=True),
    }),
    "device": Table("What the device is.", {
        "class": Key("str", "Device class.", required=True, choices=CLASSES),
        "cpu": Key("str", "Core type inference runs on, e.g. 'Cortex-A72' (Profile.core reads the core from it).",
                   required=True),
        "board": Key("str", "Board or product the numbers were read for."),
        "core_layout": Key("str", "Clusters of a big.LITTLE SoC, e.g. '1x A76 @2.84 + 3x A76 @2.42'."),
        "cores": Key("int", "CPU cores.", required=True, positive=True),
        "clock_mhz": Key("number", "Max clock of the cores inference runs on.", required=True, positive=True),
        "ram_bytes": Key("int", "RAM (SRAM on an MCU) the model may share.", required=True, positive=True),
        "flash_bytes": Key("int", "Flash holding code and the model (MCU).", required=("mcu",),
                           only_for=("mcu",), positive=True),
        "storage_bytes": Key("int", "Storage holding the .tflite (phone, SBC, host).",
                             required=("phone", "sbc", "host"), only_for=("phone", "sbc", "host"),
                             positive=True),
        "simd": Key("str_list", "SIMD/DSP features the kernels can use; ['none'] if none.",
                    required=True, choices=SIMD),
        "fpu": Key("str", "Floating-point unit: none, sp (single), dp (double).",
                   choices=("none", "sp", "dp")),
    }),
    "runtime": Table("Which interpreter runs the model and what it can exploit.", {
        "name": Key("str", "litert (phones, SBCs, host), tflm (MCUs) or tflm+ethos-u (MCUs with an Arm "
                    "Ethos-U NPU: TFLM runs the Vela-compiled model; needs an [npu] table).", required=True,
                    choices=tuple(INTERPRETER_OF)),
        "kernels": Key("str", "Kernel library.", required=True,
                       choices=tuple(k for ks in KERNELS.values() for k in ks)),
        "version": Key("str", "Runtime version the numbers refer to."),
        "int8": Key("bool", "Runs full-int8 models.", required=True),
        "fp16": Key("bool", "Runs models with float16 weights.", required=True),
        "sparse_weights": Key("bool", "Can load sparse tensors (DENSIFY).", required=True),
        "block_sparsity": Key("int_list", "Block shape the float sparse FULLY_CONNECTED kernel "
                              "exploits, [] for none.", required=True, length=(0, 2), positive=True),
        "block_sparsity_int8": Key("int_list", "Block shape the int8 sparse FULLY_CONNECTED kernel "
                                   "exploits, [] for none.", length=(0, 2), positive=True),
        "threads": Key("int", "Threads the interpreter uses.", required=True, positive=True),
        "code_bytes": Key("int", "The runtime's own code (flash/storage).", required=True, minimum=0),
        "persistent_ram_bytes": Key("int", "Runtime RAM beyond the tensor arena.", required=True,
                                    minimum=0),
        "alt_decompression_bytes": Key("int", "TFLM only: a separate memory for DECODE outputs "
                                        "(MicroInterpreter alt_decompression_memory_size), 0 for none.",
                                        minimum=0),
        "kernel_code_bytes": Key("number_map", "Per-op kernel code added to code_bytes for the op "
                                 "types a model uses (builtin op name or 'default').", minimum=0),
    }),
    "npu": Table("The Arm Ethos-U NPU and the memories it sees, as Vela's system configuration needs them "
                 "(runtime.name tflm+ethos-u only).", {
        "accelerator": Key("str", "Vela --accelerator-config, e.g. ethos-u55-128 (MACs per cycle).",
                           required=True, choices=NPU_ACCELERATORS),
        "clock_mhz": Key("number", "NPU core clock (Vela core_clock).", required=True, positive=True),
        "memory_mode": Key("str", "Vela memory mode: Sram_Only, Shared_Sram (arena in SRAM, weights on AXI1) "
                           "or Dedicated_Sram (U65: arena in DRAM, SRAM as its cache).", required=True,
                           choices=NPU_MEMORY_MODES),
        "axi0": Key("str", "Memory on the NPU's AXI0 port (Vela axi0_port), usually Sram.", required=True,
                    choices=NPU_MEMORIES),
        "axi1": Key("str", "Memory on AXI1 (Vela axi1_port): where the weights live, e.g. OffChipFlash, "
                    "OnChipFlash (MRAM) or Dram.", required=True, choices=NPU_MEMORIES),
        "axi0_memory": Key("number_map", "Vela's characteristics of the AXI0 memory: clock_scale (of the NPU "
                           "clock), burst_length (bytes), read_latency, write_latency (cycles), max_reads, "
                           "max_writes.", required=True, minimum=0),
        "axi1_memory": Key("number_map", "The same for the AXI1 memory.", required=True, minimum=0),
        "sram_bytes": Key("int", "SRAM the NPU's tensor arena may use (the arena budget Vela plans into).",
                          required=True, positive=True),
        "arena_cache_bytes": Key("int", "Dedicated_Sram only: SRAM Vela uses as the arena's cache "
                                 "(Vela arena_cache_size).", positive=True),
        "active_mw": Key("number", "Power at the supply while the NPU runs an inference (NPU, its memories "
                         "and the CPU waiting on it).", required=True, positive=True),
    }, required=()),
    "budget": Table("What a model may use on this device (a policy, not a fact).", {
        "flash_bytes": Key("int", "Model + runtime code.", required=True, positive=True),
        "ram_bytes": Key("int", "Peak arena + runtime persistent RAM.", required=True, positive=True),
        "latency_ms": Key("number", "One inference.", required=True, positive=True),
        "energy_mj": Key("number", "One inference.", positive=True),
    }),
    "power": Table("Power by state, at the supply.", {
        "supply_v": Key("number", "Voltage the currents were converted at.", positive=True),
        "active_mw": Key("number", "While running inference.", required=True, positive=True),
        "idle_mw": Key("number", "Awake, waiting.", required=True, minimum=0),
        "sleep_mw": Key("number", "Lowest state that keeps the model ready.", required=True, minimum=0),
    }, required=("phone", "sbc", "mcu")),
    "battery": Table("A typical battery for battery-life estimates.", {
        "kind": Key("str", "e.g. 'CR2032 coin cell'."),
        "capacity_mah": Key("number", "Capacity.", required=True, positive=True),
        "voltage_v": Key("number", "Nominal voltage.", required=True, positive=True),
        "inferences_per_hour": Key("number", "Default rate.", required=True, positive=True),
        "rest_state": Key("str", "Power state between inferences.", required=True,
                          choices=("idle", "sleep")),
    }, required=("phone", "sbc", "mcu")),
    # Owned by the estimator: add coefficients here as Keys.
    "latency": Table("Latency-model coefficients (defined and fitted by estimate.py).", {
        "fitted": Key("bool", "Whether the coefficients were fitted to measurements.", required=True),
        "fit_source": Key("str", "What they were fitted to ('' until fitted).", required=True),
        "fit_rows": Key("str_list", "The measurement rows used for the fit."),
        "macs_per_cycle": Key("number_map", "Per dtype/op class, e.g. conv_int8, fc_int8.",
                              positive=True),
        "clock_mhz": Key("number", "Clock the coefficients assume (default: device.clock_mhz).",
                         positive=True),
        "bytes_per_cycle": Key("number", "Memory traffic per cycle.", positive=True),
        "elementwise_per_cycle": Key("number", "Elementwise/pooling/reduction element ops per cycle.",
                                     positive=True),
        "fit_threads": Key("int", "Thread count the coefficients were fitted at.", positive=True),
        "parallel_efficiency": Key("number", "Speed-up per extra thread (0: thread count ignored).",
                                   minimum=0),
        "overhead_us_per_op": Key("number", "Per-op dispatch cost.", minimum=0),
        "fixed_overhead_us": Key("number", "Per-inference fixed cost.", minimum=0),
        "basis": Key("str", "What the table rests on: fitted (to this device's rows), fitted+transferred "
                     "(some coefficients from another device), transferred, assumption.",
                     choices=("fitted", "fitted+transferred", "transferred", "assumption")),
        "transferred_from": Key("str", "Profile the MAC coefficients were transferred from."),
        "transfer_factor": Key("number", "Cycles this device needs per cycle of the source device for the "
                               "same MACs: macs_per_cycle = source's / transfer_factor.", positive=True),
        "overhead_from": Key("str", "Profile the per-op and per-inference overhead were transferred from."),
        "overhead_factor": Key("number", "Time ratio of the overhead: overhead_us = source's x overhead_factor.",
                               positive=True),
        "notes": Key("str", "Free text."),
    }, fitted_by="fitted"),
}
SOURCES = "sources"  # the table mapping "table.key" -> where the value comes from
KIND_NAMES = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
              "int_list": "a list of integers", "str_list": "a list of strings",
              "number_map": "a table of numbers"}

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")  # a profile's name (and file stem)
NUMERIC_KINDS = ("int", "number", "int_list", "number_map")  # kinds whose values need a [sources] entry


def schema_keys() -> list[str]:
    """Every key of the schema as 'table.key' (top-level keys bare), in schema order."""
    return [f"{t}.{k}" if t else k for t, table in SCHEMA.items() for k in table.keys]


_CORE_RE = re.compile(r"(cortex)-?([amr]\d+)(\+|plus)?|(xtensa)-?(lx\d+)")


def core_from_cpu(cpu: str) -> str | None:
    """The core a `device.cpu` text names, as compilers spell it: 'Cortex-M4F' -> 'cortex-m4' (the F is the
    FPU, which `device.fpu` states), 'Cortex-M0+' -> 'cortex-m0plus', 'Xtensa LX7' -> 'xtensa-lx7',
    'Cortex-A72' -> 'cortex-a72'; None when it names no Arm Cortex or Xtensa core (e.g. an x86 host)."""
    match = _CORE_RE.search(cpu.lower().replace(" ", ""))
    if match is None:
        return None
    if match.group(1):
        return f"cortex-{match.group(2)}" + ("plus" if match.group(3) else "")
    return f"xtensa-{match.group(5)}"
