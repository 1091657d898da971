"""Vela 5.2 (the edgesparse[npu] extra) on tiny int8 models built without TensorFlow: the generated system
configuration as Vela reads it, per-op placement with Vela's reasons, weight encoding, errors."""

import dataclasses
import subprocess
import sys
import textwrap

import pytest
from support import REPO
from support.npu import (
    TEST_NPU,
    compiled_fallback,
    compiled_tiny,
    env_without_vela,
    fallback_npu_model,
    npu_profile,
    tiny_npu_model,
)

from edgesparse.errors import ConversionError, MissingDependency, ProfileError
from edgesparse.profiles.schema import NPU_MEMORY_KEYS
from edgesparse.runtime.vela import (
    VELA_EXTRA,
    VELA_MEMORY_KEYS,
    compile_for_ethos_u,
    require_vela,
    vela_system_config,
    vela_version,
)
from edgesparse.tflite.graph import load_graph

pytestmark = pytest.mark.skipif(vela_version() is None, reason=f"Vela is not installed ({VELA_EXTRA})")

# Vela's --verbose-config names: <Memory>_clock_scales (plural) and the other figures as written; max_reads and
# max_writes are read by Vela's C++ core only, so they are checked in the .ini text instead.
_ECHOED = {"clock_scale": "clock_scales", "burst_length": "burst_length", "read_latency": "read_latency",
           "write_latency": "write_latency"}


def _expected_echo(npu):
    expected = {"core_clock": str(npu.clock_mhz * 1e6), "axi0_port": npu.axi0, "axi1_port": npu.axi1}
    for memory, figures in ((npu.axi0, npu.axi0_memory), (npu.axi1, npu.axi1_memory)):
        for key, echoed in _ECHOED.items():
            value = figures[key]
            expected[f"{memory}_{echoed}"] = str(float(value)) if key == "clock_scale" else str(int(value))
    return expected


def test_the_generated_vela_config_matches_the_profile():
    profile = npu_profile()
    npu = profile.npu
    compilation = compiled_tiny()
    assert compilation.system_config == vela_system_config(npu)
    echo = compilation.vela_config
    for key, value in _expected_echo(npu).items():
        assert echo[key] == value, key
    assert (echo["const_mem_area"], echo["arena_mem_area"], echo["cache_mem_area"]) == ("Axi1", "Axi0", "Axi0")
    assert echo["arena_cache_size"] == f"{npu.sram_bytes} from Configuration file"
    for memory, figures in ((npu.axi0, npu.axi0_memory), (npu.axi1, npu.axi1_memory)):
        for key in ("max_reads", "max_writes"):
            assert f"\n{memory}_{key}={int(figures[key])}\n" in compilation.system_config
    assert compilation.accelerator == npu.accelerator and compilation.clock_mhz == npu.clock_mhz
    assert not any("non-optimal" in w for w in compilation.warnings), compilation.warnings


def test_a_dedicated_sram_u65_config_puts_the_arena_on_axi1_with_the_sram_as_its_cache():
    npu = dataclasses.replace(
        TEST_NPU, accelerator="ethos-u65-256", memory_mode="Dedicated_Sram", axi1="Dram", clock_mhz=500.0,
        axi1_memory={"clock_scale": 0.46875, "burst_length": 128, "read_latency": 500, "write_latency": 250,
                     "max_reads": 12, "max_writes": 6},                  # Arm vela.ini Ethos_U65_Mid_End's DRAM
        arena_cache_bytes=262144)
    compilation = compile_for_ethos_u(tiny_npu_model(), npu)
    echo = compilation.vela_config
    for key, value in _expected_echo(npu).items():
        assert echo[key] == value, key
    assert (echo["const_mem_area"], echo["arena_mem_area"], echo["cache_mem_area"]) == ("Axi1", "Axi1", "Axi0")
    assert echo["arena_cache_size"] == "262144 from Configuration file"
    assert all(op.placement == "npu" for op in compilation.ops)


def test_a_tiny_conv_fc_model_runs_every_op_on_the_npu_with_figures_that_add_up():
    compilation = compiled_tiny()
    source = load_graph(tiny_npu_model())
    assert [op.op_type for op in compilation.ops] == [op.opcode for op in source.subgraphs[0].ops]
    assert [op.placement for op in compilation.ops] == ["npu"] * len(source.subgraphs[0].ops)
    assert compilation.cpu_ops == () and compilation.npu_op_count == len(compilation.ops)
    # conv 16x3x3x4 + depthwise 3x3x16 + FC 256x32 + FC 32x4 int8 weights, as our parser and Vela count them
    assert compilation.raw_weight_bytes == 576 + 144 + 8192 + 128 == compilation.vela_original_weight_bytes
    assert 0 < compilation.npu_cycles <= compilation.total_cycles
    assert compilation.latency_ms(400.0) == pytest.approx(compilation.total_cycles / 400e3)
    # random dense int8 weights do not compress; the flash tensor adds 10 bytes of scale+bias per channel
    assert compilation.raw_weight_bytes * 0.9 < compilation.encoded_weight_bytes
    assert compilation.flash_bytes > compilation.encoded_weight_bytes + 10 * (16 + 16 + 32 + 4)
    # the arena holds the 8x8x16 int8 conv output at least; Shared_Sram puts it in SRAM
    assert compilation.arena_bytes >= 8 * 8 * 16 and compilation.sram_bytes == compilation.arena_bytes


def test_eighty_percent_zeros_shrink_the_encoded_weights_and_the_flash():
    dense, sparse = compiled_tiny(0.0), compiled_tiny(0.8)
    assert sparse.raw_weight_bytes == dense.raw_weight_bytes
    assert sparse.encoded_weight_bytes < dense.encoded_weight_bytes / 2.5
    assert sparse.encoded_weight_bytes < sparse.raw_weight_bytes
    assert sparse.flash_bytes < dense.flash_bytes
    assert sparse.weight_compression > 2.5 > 1.0 > dense.weight_compression * 0.95
    assert sparse.total_cycles <= dense.total_cycles    # less to read from flash


def test_ops_vela_cannot_place_fall_back_to_the_cpu_with_velas_reason():
    compilation = compiled_fallback()
    placed = {op.op_type: op for op in compilation.ops}
    assert [op.op_type for op in compilation.cpu_ops] == ["DEPTHWISE_CONV_2D", "FLOOR"]
    assert "Kernel stride must be in the range (1,3)" in placed["DEPTHWISE_CONV_2D"].reason
    assert "stride: 4, 4" in placed["DEPTHWISE_CONV_2D"].reason
    assert placed["FLOOR"].reason == "Unsupported opType"
    assert placed["CONV_2D"].placement == placed["FULLY_CONNECTED"].placement == "npu"
    assert all(op.reason == "" for op in compilation.ops if op.placement == "npu")
    assert any("operator: FLOOR" in w for w in compilation.warnings)
    # the depthwise weights stay with the CPU op: raw bytes count the NPU ops' weights only
    assert compilation.raw_weight_bytes == 8 * 3 * 3 * 4 + 4 * 2 * 2 * 8 == compilation.vela_original_weight_bytes
    assert [op.placement for op in compilation.ops] == ["npu", "cpu", "cpu", "npu", "npu"]


def test_vela_failures_are_one_readable_conversion_error():
    with pytest.raises(ConversionError, match=r"Vela could not compile.*Received: KeyError: 'Flash'") as failed:
        compile_for_ethos_u(tiny_npu_model(), dataclasses.replace(TEST_NPU, axi1="Flash"))
    assert "Traceback" not in str(failed.value) and failed.value.exit_code == 2
    with pytest.raises(ConversionError, match=r"within 0\.01 s.*timeout"):
        compile_for_ethos_u(fallback_npu_model(), TEST_NPU, timeout=0.01)


def test_a_config_vela_would_misread_is_refused_before_vela_runs():
    with pytest.raises(ProfileError, match="clock_scale"):
        vela_system_config(dataclasses.replace(TEST_NPU, axi1_memory={**TEST_NPU.axi1_memory, "clock_scale": 0}))
    both_sram = dataclasses.replace(TEST_NPU, axi1="Sram", axi1_memory={**TEST_NPU.axi0_memory, "read_latency": 9})
    with pytest.raises(ProfileError, match="both AXI ports"):
        vela_system_config(both_sram)


_WITHOUT_VELA = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from support.npu import TEST_NPU, tiny_npu_model
    from edgesparse.runtime.vela import compile_for_ethos_u, vela_version
    assert vela_version() is None
    try:
        compile_for_ethos_u(tiny_npu_model(), TEST_NPU)
    except Exception as exc:
        print(type(exc).__name__, exc.exit_code, exc)
""")


def test_without_vela_importable_compiling_names_the_extra(tmp_path):
    """A child process where `ethosu` is shadowed by a package that fails to import, as when the extra is absent."""
    env = env_without_vela(tmp_path)
    done = subprocess.run([sys.executable, "-c", _WITHOUT_VELA.format(tests=str(REPO / "tests"))], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.startswith("MissingDependency 2 "), done.stdout + done.stderr
    assert VELA_EXTRA in done.stdout and "ethos-u-vela" in done.stdout


def test_require_vela_gives_the_installed_version():
    assert require_vela() == vela_version() == "5.2.0"
    assert issubclass(MissingDependency, Exception)


def test_velas_memory_keys_are_the_profile_schemas():
    assert tuple(NPU_MEMORY_KEYS) == VELA_MEMORY_KEYS
