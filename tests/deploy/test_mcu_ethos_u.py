"""`deploy --target mcu` for Arm Ethos-U profiles: a Vela-compiled model.tflite as a TFLite Micro project.

Real Vela (runtime.vela.compile_for_ethos_u, for the shipped profiles' own [npu]) compiles tiny int8 models
written by tests/support/npu.py (no TensorFlow): one Vela places whole, one with an L2_NORMALIZATION Vela
leaves to the CPU. The build directory is what `edgesparse build` writes for these profiles: model.tflite
is Vela's file, baselines/pruned_int8.tflite the plain int8 model, named by report.json's
verification.model_file. The real arm-none-eabi-g++ compiles the model array for the profile's core.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from support.builds import make_build_dir
from support.npu import int8_model, tiny_npu_model
from support.tflm_stubs import syntax_check_against_stubs

from edgesparse import deploy
from edgesparse.builddir import BASELINES, REPORT_JSON
from edgesparse.deploy import DeployError, make_bundle
from edgesparse.deploy.mcu_ethos_u import ETHOS_U_DRIVER, REFERENCE_FILE
from edgesparse.estimate import check_model
from edgesparse.profiles import load_profile
from edgesparse.report.npu import NOT_VERIFIED
from edgesparse.runtime.vela import compile_for_ethos_u
from edgesparse.runtime.verify import run_tflite
from edgesparse.tflite.ethos_u import describe_ethos_u
from edgesparse.tflite.graph import load_graph, op_types

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None,
                               reason="needs gcc-arm-none-eabi and binutils-arm-none-eabi (make system-deps)")

_CLASSES = ["a", "b", "c", "d"]
# Corstone-300's NPU base (TFLM's cortex_m_corstone_300/system_setup.cc); only for syntax checks here.
_NPU_BASE = "EDGESPARSE_NPU_BASE_ADDRESS=0x48102000"
_FALLBACK_LAYERS = (("conv", 8, 3, 1, "SAME"), ("unary", "L2_NORMALIZATION"), ("fc", 4))


def _sample(n: int = 4):
    rng = np.random.default_rng(3)
    return rng.normal(0, 0.4, size=(n, 8, 8, 4)).astype(np.float32), np.arange(n) % len(_CLASSES)


@pytest.fixture(scope="module")
def corstone_models():
    """{'all_npu' | 'fallback': (plain int8, Vela's file)} for corstone_300's Ethos-U55-128."""
    npu = load_profile("corstone_300").npu
    plain = {"all_npu": tiny_npu_model(), "fallback": int8_model(_FALLBACK_LAYERS)}
    return {name: (data, compile_for_ethos_u(data, npu).model) for name, data in plain.items()}


def _ethos_u_build(path, plain: bytes, compiled: bytes, profile: str, *, keep_plain: bool = True,
                   accelerator: str | None = None):
    """A build directory as `edgesparse build` writes it for an Ethos-U profile (report.json's npu section names
    the accelerator Vela compiled for: `accelerator`, else the profile's)."""
    build = make_build_dir(path, compiled, name="tiny", input_shape=(8, 8, 4), num_classes=len(_CLASSES),
                           profile=profile, runtime="tflm+ethos-u", device_class="mcu", labels=_CLASSES,
                           sample=_sample())
    report = json.loads((build / REPORT_JSON).read_text())
    report["npu"] = {"accelerator": accelerator or load_profile(profile).npu.accelerator}
    (build / REPORT_JSON).write_text(json.dumps(report))
    if keep_plain:
        (build / BASELINES["pruned_int8"]).parent.mkdir(exist_ok=True)
        (build / BASELINES["pruned_int8"]).write_bytes(plain)
        report = json.loads((build / REPORT_JSON).read_text())
        report["verification"]["model_file"] = BASELINES["pruned_int8"]
        report["files"][BASELINES["pruned_int8"]] = {"bytes": len(plain), "sha256": hashlib.sha256(plain).hexdigest()}
        (build / REPORT_JSON).write_text(json.dumps(report))
    return build


@pytest.fixture(scope="module")
def fallback_bundle(corstone_models, tmp_path_factory):
    """(bundle, plain, compiled): the model with a CPU op, deployed for corstone_300."""
    plain, compiled = corstone_models["fallback"]
    root = tmp_path_factory.mktemp("ethos_u")
    build = _ethos_u_build(root / "build", plain, compiled, "corstone_300")
    return make_bundle(build, "mcu", root / "mcu"), plain, compiled


def test_project_registers_the_npu_op_and_the_cpu_ops_vela_left(fallback_bundle):
    bundle, _, compiled = fallback_bundle
    ops = op_types(compiled)
    assert ops[0] == "ethos-u" and "L2_NORMALIZATION" in ops                    # Vela left it to the CPU
    main_cc = (bundle.path / "main.cc").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", main_cc)
    assert registered == ["AddEthosU", "AddL2Normalization"] == [deploy.resolver_method(op) for op in ops]
    assert f"MicroMutableOpResolver<{len(ops)}>" in main_cc
    # a library built without CO_PROCESSOR=ethos_u registers nothing for AddEthosU(): main.cc checks first
    assert main_cc.index("tflite::Register_ETHOSU() == nullptr") < main_cc.index("resolver.AddEthosU()")
    init = " ".join(main_cc.split())
    assert "ethosu_init(&g_npu_driver, reinterpret_cast<void*>(EDGESPARSE_NPU_BASE_ADDRESS), nullptr, 0," in init
    assert main_cc.index("ethosu_init(") < main_cc.index("static tflite::MicroInterpreter interpreter(")
    assert "g_npu_fast_memory" not in main_cc                                  # Shared_Sram: no separate fast memory
    assert any("AddEthosU() registered" in note and "CPU ops: L2_NORMALIZATION" in note for note in bundle.notes)


def test_readme_names_the_driver_its_initialisation_and_the_tflm_build_flags(fallback_bundle):
    bundle, _, compiled = fallback_bundle
    readme = (bundle.path / "README.md").read_text()
    described = describe_ethos_u(load_graph(compiled))
    assert ETHOS_U_DRIVER in readme and "ARM-software/ethos-u-core-driver" in readme
    assert "`ethosu_init(&driver, base_address, fast_memory, fast_memory_size, secure_enable, privilege_enable)`" \
        in readme and "ethosu_irq_handler(&driver)" in readme
    assert ("TARGET=cortex_m_generic TARGET_ARCH=cortex-m55 CO_PROCESSOR=ethos_u ETHOSU_ARCH=u55 "
            "OPTIMIZED_KERNEL_DIR=cmsis_nn microlite") in readme
    assert "16-byte aligned" in readme
    assert f"{described.arena_bytes:,} bytes at the offsets of the file's" in readme   # the scratch Vela asked for
    assert "ops left to the CPU: L2_NORMALIZATION" in readme
    assert "Ethos-U55 NPU (ethos-u55-128)" in readme


def test_test_vector_expectation_comes_from_the_plain_int8_model_and_says_so(fallback_bundle):
    bundle, plain, _ = fallback_bundle
    expected = json.loads((bundle.path / "expected.json").read_text())
    values = re.search(r"g_test_vector\[\d+\] = \{(.*?)\};", (bundle.path / "test_vector.cc").read_text(), re.S)
    vector = np.array([int(v) for v in re.findall(r"-?\d+", values.group(1))], np.int8).reshape(1, 8, 8, 4)
    scores = np.asarray(run_tflite(plain, vector, runtime="tflm").outputs).reshape(-1)
    assert expected["index"] == int(np.argmax(scores)) and expected["scores"] == pytest.approx(scores.tolist())
    assert expected["model"] == REFERENCE_FILE and expected["npu_verified"] is False
    assert (bundle.path / REFERENCE_FILE).read_bytes() == plain
    readme = (bundle.path / "README.md").read_text()
    assert "**The NPU run is not verified**" in readme
    assert "expected label come from it, not from the NPU" in readme.replace("\n", " ")
    assert any(note.startswith(NOT_VERIFIED) and "expected output comes from that plain int8 model" in note
               for note in bundle.notes)
    assert expected["note"].startswith(NOT_VERIFIED)
    header = " ".join((bundle.path / "main.cc").read_text().split("#include")[0].replace("//", " ").split())
    assert f"from the plain int8 model ({REFERENCE_FILE}) in the TFLM Python interpreter" in header
    assert "(the NPU run is not verified there)" in header


def test_arena_is_the_plan_that_holds_velas_scratch_plus_the_margin(fallback_bundle):
    bundle, _, compiled = fallback_bundle
    prof = load_profile("corstone_300")
    ram = check_model(compiled, prof).ram
    planned = ram.total_bytes - ram.breakdown.get("runtime_persistent_ram", 0)
    scratch = describe_ethos_u(load_graph(compiled)).arena_bytes
    assert planned >= scratch > 0
    size = int(re.search(r"kTensorArenaSize = (\d+);", (bundle.path / "main.cc").read_text()).group(1))
    assert size == bundle.arena_bytes and size % 16 == 0
    assert planned + deploy.ARENA_MARGIN_MIN_BYTES <= size
    assert size <= planned + max(deploy.ARENA_MARGIN_MIN_BYTES, planned * deploy.ARENA_MARGIN_FRACTION) + 16


@needs_arm
def test_model_array_compiles_for_cortex_m55_with_its_size_reported(fallback_bundle, tmp_path):
    bundle, _, compiled = fallback_bundle
    assert bundle.mcu.core == "cortex-m55" and "-mcpu=cortex-m55" in bundle.mcu.flags
    assert bundle.mcu.flash_bytes == len(compiled) + 4                       # g_model + g_model_len
    assert bundle.mcu.bytes_match is True and bundle.mcu.alignment == 16
    obj = bundle.path / bundle.mcu.object_file
    attributes = subprocess.run(["arm-none-eabi-readelf", "-A", str(obj)], capture_output=True, text=True,
                                check=True).stdout
    assert "Tag_CPU_arch: v8.1-M.mainline" in attributes and "Tag_MVE_arch: MVE Integer and FP" in attributes
    blob = tmp_path / "g_model.bin"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".rodata.g_model", str(obj), str(blob)], check=True)
    assert blob.read_bytes() == compiled
    assert f"{bundle.mcu.flash_bytes:,} bytes (arm-none-eabi-size of model_data.o, cortex-m55)" in \
        (bundle.path / "README.md").read_text()


@needs_arm
def test_main_cc_is_well_formed_with_and_without_the_npu_driver(fallback_bundle, tmp_path):
    bundle, _, _ = fallback_bundle
    syntax_check_against_stubs(bundle.path, tmp_path / "stubs", cpu="cortex-m55")
    syntax_check_against_stubs(bundle.path, tmp_path / "stubs", cpu="cortex-m55",
                               defines=(_NPU_BASE,))


@needs_arm
def test_dedicated_sram_u65_gets_its_fast_memory(tmp_path):
    """imx93_m33 (Ethos-U65-256, Dedicated_Sram): Vela's separate fast scratch goes to ethosu_init, from SRAM."""
    prof = load_profile("imx93_m33")
    plain = tiny_npu_model()
    compiled = compile_for_ethos_u(plain, prof.npu).model
    fast = describe_ethos_u(load_graph(compiled)).scratch_fast_bytes
    assert fast > 0
    bundle = make_bundle(_ethos_u_build(tmp_path / "build", plain, compiled, "imx93_m33"), "mcu", tmp_path / "mcu")
    main_cc = (bundle.path / "main.cc").read_text()
    assert f"alignas(16) uint8_t g_npu_fast_memory[{fast}];" in main_cc
    assert "g_npu_fast_memory, sizeof(g_npu_fast_memory)" in main_cc
    readme = (bundle.path / "README.md").read_text()
    assert "ETHOSU_ARCH=u65" in readme and "TARGET_ARCH=cortex-m33" in readme and "Dedicated_Sram" in readme
    assert bundle.mcu.core == "cortex-m33" and bundle.mcu.flash_bytes == len(compiled) + 4
    syntax_check_against_stubs(bundle.path, tmp_path / "stubs", cpu="cortex-m33",
                               defines=(_NPU_BASE,))


def test_compiled_model_is_refused_for_a_profile_without_an_npu(corstone_models, tmp_path):
    plain, compiled = corstone_models["all_npu"]
    build = _ethos_u_build(tmp_path / "build", plain, compiled, "corstone_300")
    with pytest.raises(DeployError) as info:
        make_bundle(build, "mcu", tmp_path / "mcu", profile="nrf52840")
    assert "Ethos-U NPU" in str(info.value) and "nrf52840" in str(info.value)
    assert not (tmp_path / "mcu").exists()


def test_compiled_model_is_refused_for_another_accelerator(corstone_models, tmp_path):
    plain, compiled = corstone_models["all_npu"]
    build = _ethos_u_build(tmp_path / "build", plain, compiled, "corstone_300")          # ethos-u55-128
    with pytest.raises(DeployError) as info:
        make_bundle(build, "mcu", tmp_path / "mcu", profile="alif_e7_hp")               # ethos-u55-256
    assert "ethos-u55-128" in str(info.value) and "ethos-u55-256" in str(info.value)
    # the accelerator is report.json's (what Vela compiled for), not re-read from the build's profile
    recorded = _ethos_u_build(tmp_path / "other", plain, compiled, "corstone_300", accelerator="ethos-u55-64")
    with pytest.raises(DeployError, match="ethos-u55-64"):
        make_bundle(recorded, "mcu", tmp_path / "mcu2")


def test_a_build_without_the_plain_int8_model_is_refused(corstone_models, tmp_path):
    plain, compiled = corstone_models["all_npu"]
    build = _ethos_u_build(tmp_path / "build", plain, compiled, "corstone_300", keep_plain=False)
    with pytest.raises(DeployError) as info:
        make_bundle(build, "mcu", tmp_path / "mcu")
    assert "no plain int8 model" in str(info.value) and "ethos-u" in str(info.value)


def test_a_plain_model_on_an_ethos_u_profile_runs_on_the_cpu_and_says_so(corstone_models, tmp_path):
    plain, _ = corstone_models["all_npu"]
    build = _ethos_u_build(tmp_path / "build", plain, plain, "corstone_300", keep_plain=False)
    bundle = make_bundle(build, "mcu", tmp_path / "mcu")
    main_cc = (bundle.path / "main.cc").read_text()
    assert "AddEthosU" not in main_cc and "ethosu" not in main_cc
    assert any("not Vela-compiled" in note for note in bundle.notes)
