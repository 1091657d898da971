"""Ethos-U device profiles: the [npu] table, its validation, and the shipped NPU profiles."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesparse.cli.commands import main
from edgesparse.profiles import NpuConfig, ProfileValidationError, available_profiles, load_profile

NPU_PROFILES = {"corstone_300": ("ethos-u55-128", "cortex-m55"), "alif_e7_hp": ("ethos-u55-256", "cortex-m55"),
                "alif_e7_he": ("ethos-u55-128", "cortex-m55"), "himax_we2": ("ethos-u55-64", "cortex-m55"),
                "imx93_m33": ("ethos-u65-256", "cortex-m33")}

SRAM_MEMORY = "{ clock_scale = 1.0, burst_length = 32, read_latency = 32, write_latency = 32, max_reads = 8, " \
              "max_writes = 8 }"
FLASH_MEMORY = "{ clock_scale = 0.5, burst_length = 128, read_latency = 64, write_latency = 0, max_reads = 2, " \
               "max_writes = 0 }"
# A small valid Ethos-U55 profile (Shared_Sram: arena in SRAM, weights in MRAM); each bad case edits its text.
NPU_BASE = '''
schema_version = 1
name = "npu"
description = "test board with an Ethos-U55"

[device]
class = "mcu"
cpu = "Cortex-M55"
cores = 1
clock_mhz = 160
ram_bytes = 2097152
flash_bytes = 2097152
simd = ["dsp", "helium"]

[runtime]
name = "tflm+ethos-u"
kernels = "cmsis-nn"
int8 = true
fp16 = false
sparse_weights = false
block_sparsity = []
threads = 1
code_bytes = 81920
persistent_ram_bytes = 4096

[npu]
accelerator = "ethos-u55-128"
clock_mhz = 160
memory_mode = "Shared_Sram"
axi0 = "Sram"
axi1 = "OnChipFlash"
axi0_memory = ''' + SRAM_MEMORY + '''
axi1_memory = ''' + FLASH_MEMORY + '''
sram_bytes = 1048576
active_mw = 40

[budget]
flash_bytes = 1048576
ram_bytes = 1048576
latency_ms = 100

[power]
active_mw = 30
idle_mw = 5
sleep_mw = 0.01

[battery]
capacity_mah = 1000
voltage_v = 3.7
inferences_per_hour = 3600
rest_state = "sleep"

[latency]
fitted = false
fit_source = ""

[sources]
"device.cores" = "datasheet"
"device.clock_mhz" = "datasheet"
"device.ram_bytes" = "datasheet"
"device.flash_bytes" = "datasheet"
"runtime.threads" = "TFLM is single-threaded"
"runtime.code_bytes" = "assumption: not measured"
"runtime.persistent_ram_bytes" = "assumption: not measured"
"npu.clock_mhz" = "datasheet"
"npu.axi0_memory" = "Vela vela.ini"
"npu.axi1_memory" = "Vela vela.ini"
"npu.sram_bytes" = "datasheet"
"npu.active_mw" = "assumption: guess"
"budget.flash_bytes" = "assumption: half of flash"
"budget.ram_bytes" = "assumption: half of RAM"
"budget.latency_ms" = "assumption: ten per second"
"power.active_mw" = "datasheet"
"power.idle_mw" = "datasheet"
"power.sleep_mw" = "datasheet"
"battery.capacity_mah" = "assumption: LiPo"
"battery.voltage_v" = "assumption: LiPo"
"battery.inferences_per_hour" = "assumption: one per second"
'''

U65_DEDICATED = [('accelerator = "ethos-u55-128"', 'accelerator = "ethos-u65-256"'),
                 ('memory_mode = "Shared_Sram"', 'memory_mode = "Dedicated_Sram"'),
                 ('axi1 = "OnChipFlash"', 'axi1 = "Dram"'),
                 ("max_writes = 0 }", "max_writes = 6 }"),
                 ("sram_bytes = 1048576\n", "sram_bytes = 1048576\narena_cache_bytes = 262144\n"),
                 ('"npu.sram_bytes" = "datasheet"\n',
                  '"npu.sram_bytes" = "datasheet"\n"npu.arena_cache_bytes" = "assumption: a quarter"\n')]
SRAM_ONLY = [('memory_mode = "Shared_Sram"', 'memory_mode = "Sram_Only"'), ('axi1 = "OnChipFlash"', 'axi1 = "Sram"'),
             ("axi1_memory = " + FLASH_MEMORY, "axi1_memory = " + SRAM_MEMORY)]


def _edit(text: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert old in text, f"test bug: {old!r} not in the profile"
        text = text.replace(old, new, 1)
    return text


def _load(tmp_path: Path, text: str):
    path = tmp_path / "npu.toml"
    path.write_text(text)
    return load_profile(str(path))


def _problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ProfileValidationError) as info:
        _load(tmp_path, text)
    return "\n".join(info.value.problems)


def test_npu_profile_is_read_as_tflm_with_an_npu(tmp_path):
    p = _load(tmp_path, NPU_BASE)
    assert (p.runtime, p.runtime_name, p.core, p.kernels) == ("tflm", "tflm+ethos-u", "cortex-m55", "cmsis-nn")
    assert isinstance(p.npu, NpuConfig) and (p.npu.macs_per_cycle, p.npu.product) == (128, "Ethos-U55")
    assert p.npu.axi1_memory["clock_scale"] == 0.5 and p.npu.arena_cache_bytes is None
    assert p.source("npu.axi0_memory.burst_length") == "Vela vela.ini"
    assert "npu.active_mw" in p.assumptions()


@pytest.mark.parametrize("edits", [U65_DEDICATED, SRAM_ONLY], ids=["u65_dedicated_sram", "sram_only"])
def test_other_valid_memory_modes(tmp_path, edits):
    npu = _load(tmp_path, _edit(NPU_BASE, *edits)).npu
    assert npu is not None and npu.memory_mode in ("Dedicated_Sram", "Sram_Only")
    assert npu.arena_cache_bytes == (262144 if npu.memory_mode == "Dedicated_Sram" else None)


BAD = [
    ("npu_runtime_without_table",
     [("[npu]\n", "[npux]\n")],
     ["npu: missing table; runtime.name 'tflm+ethos-u' needs it", "npux: unknown key or table; did you mean 'npu'?"]),
    ("table_without_npu_runtime", [('name = "tflm+ethos-u"', 'name = "tflm"')],
     ["npu: only for runtime.name 'tflm+ethos-u', received runtime.name 'tflm'"]),
    ("npu_on_an_sbc", [('class = "mcu"', 'class = "sbc"')],
     ["runtime.name: class 'sbc' runs 'litert' (tflm+ethos-u is for class 'mcu'), received 'tflm+ethos-u'"]),
    ("tflm_limits", [("threads = 1", "threads = 2"), ("sparse_weights = false", "sparse_weights = true")],
     ["runtime.threads: TFLM is single-threaded", "runtime.sparse_weights: TFLM cannot run DENSIFY"]),
    ("tflm_kernels", [('kernels = "cmsis-nn"', 'kernels = "xnnpack"')],
     ["runtime.kernels: tflm+ethos-u uses one of cmsis-nn, esp-nn, reference, received 'xnnpack'"]),
    ("accelerator_typo", [('"ethos-u55-128"', '"ethos-u55-129"')],
     ["npu.accelerator: expected one of ethos-u55-32", "did you mean 'ethos-u55-128'?"]),
    ("memory_key_typo", [("clock_scale = 0.5", "clock_scal = 0.5")],
     ["npu.axi1_memory.clock_scal: unknown key; expected one of clock_scale", "did you mean 'clock_scale'?",
      "npu.axi1_memory.clock_scale: missing; Vela would silently use its default"]),
    ("clock_scale_zero", [("clock_scale = 0.5", "clock_scale = 0")],
     ["npu.axi1_memory.clock_scale: expected a number > 0 and <= 1", "received 0"]),
    ("clock_scale_above_port", [("clock_scale = 1.0", "clock_scale = 1.5")],
     ["npu.axi0_memory.clock_scale: expected a number > 0 and <= 1", "received 1.5"]),
    ("negative_latency", [("read_latency = 64", "read_latency = -1")],
     ["npu.axi1_memory: entry 'read_latency': expected a non-negative number, received -1"]),
    ("fractional_latency", [("read_latency = 64", "read_latency = 64.5")],
     ["npu.axi1_memory.read_latency: expected a whole number (Vela reads it as an integer), received 64.5"]),
    ("burst_not_power_of_two", [("burst_length = 128", "burst_length = 96")],
     ["npu.axi1_memory.burst_length: expected a power of two", "received 96"]),
    ("no_reads", [("max_reads = 2", "max_reads = 0")],
     ["npu.axi1_memory.max_reads: the NPU reads from every memory it is given; expected at least 1"]),
    ("arena_not_writable", [("max_writes = 8", "max_writes = 0")],
     ["npu.axi0_memory.max_writes: the tensor arena is on axi0 (memory_mode Shared_Sram)"]),
    ("axi0_not_sram", [('axi0 = "Sram"', 'axi0 = "Dram"')],
     ["npu.axi0: Vela keeps the arena's cache", "expected 'Sram', received 'Dram'"]),
    ("dedicated_sram_on_u55", [('memory_mode = "Shared_Sram"', 'memory_mode = "Dedicated_Sram"')],
     ["npu.memory_mode: Dedicated_Sram (SRAM as a cache of a DRAM arena) is for the Ethos-U65",
      "npu.axi1: Dedicated_Sram puts the arena on AXI1, so expected 'Dram', received 'OnChipFlash'",
      "npu.arena_cache_bytes: missing; memory_mode Dedicated_Sram needs"]),
    ("arena_cache_outside_dedicated", [("sram_bytes = 1048576\n", "sram_bytes = 1048576\narena_cache_bytes = 4096\n")],
     ["npu.arena_cache_bytes: only for memory_mode Dedicated_Sram", "npu.arena_cache_bytes: no source"]),
    ("shared_sram_weights_in_sram", [('axi1 = "OnChipFlash"', 'axi1 = "Sram"')],
     ["npu.axi1: Shared_Sram reads the weights over AXI1 from flash or DRAM"]),
    ("sram_only_with_flash", [('memory_mode = "Shared_Sram"', 'memory_mode = "Sram_Only"')],
     ["npu.axi1: memory_mode Sram_Only keeps the weights in SRAM too", "received 'OnChipFlash'"]),
    ("sram_only_two_characteristics", [*SRAM_ONLY, ("read_latency = 32, write_latency = 32, max_reads = 8, "
                                                    "max_writes = 8 }\nsram", "read_latency = 16, write_latency = "
                                                    "32, max_reads = 8, max_writes = 8 }\nsram")],
     ["npu.axi1_memory: axi0 and axi1 are the same SRAM in Sram_Only"]),
    ("sram_above_ram", [("sram_bytes = 1048576", "sram_bytes = 4194304")],
     ["npu.sram_bytes: exceeds the device's RAM device.ram_bytes (2097152), received 4194304"]),
    ("cache_above_sram", [*U65_DEDICATED, ("arena_cache_bytes = 262144", "arena_cache_bytes = 2097152")],
     ["npu.arena_cache_bytes: the cache is in the NPU's SRAM, so expected at most npu.sram_bytes (1048576)"]),
    ("npu_power_below_idle", [("active_mw = 40", "active_mw = 1")],
     ["npu.active_mw: below power.idle_mw (5)"]),
    ("npu_numbers_need_sources", [('"npu.axi1_memory" = "Vela vela.ini"\n', "")],
     ["npu.axi1_memory.clock_scale: no source", "npu.axi1_memory.max_writes: no source"]),
    ("npu_key_missing", [("clock_mhz = 160\nmemory_mode", "memory_mode")],
     ["npu.clock_mhz: missing; expected a number (NPU core clock"]),
]


@pytest.mark.parametrize("edits, expected", [(e, x) for _, e, x in BAD], ids=[i for i, _, _ in BAD])
def test_bad_npu_profile_reports_every_problem(tmp_path, edits, expected):
    problems = _problems(tmp_path, _edit(NPU_BASE, *edits))
    for fragment in expected:
        assert fragment in problems, f"{fragment!r} not in:\n{problems}"


@pytest.mark.parametrize("name", sorted(NPU_PROFILES))
def test_shipped_ethos_u_profiles(name):
    p = load_profile(name)
    accelerator, core = NPU_PROFILES[name]
    assert name in available_profiles() and p.npu is not None
    assert (p.npu.accelerator, p.core, p.runtime, p.runtime_name) == (accelerator, core, "tflm", "tflm+ethos-u")
    assert p.npu.sram_bytes <= p.device["ram_bytes"] and p.npu.clock_mhz > 0
    # every number has a source (validated); a transferred CPU latency table says from where
    assert p.table("latency")["basis"] in ("transferred", "fitted+transferred", "assumption")
    assert p.get("latency.transferred_from") in available_profiles()


def test_cli_profiles_show_and_validate_an_ethos_u_profile():
    shown = CliRunner().invoke(main, ["profiles", "show", "alif_e7_hp"])
    assert shown.exit_code == 0, shown.output
    assert "npu: The Arm Ethos-U NPU" in shown.output and "ethos-u55-256" in shown.output
    assert "npu.clock_mhz" in shown.output  # listed among the assumptions
    files = [str(load_profile(n).path) for n in sorted(NPU_PROFILES)]
    checked = CliRunner().invoke(main, ["profiles", "validate", *files])
    assert checked.exit_code == 0, checked.output
    assert checked.output.count("ok ") == len(NPU_PROFILES)
