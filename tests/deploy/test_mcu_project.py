"""The generated TFLite Micro project: model bytes in flash, ops, arena, test vector, per-core compiles.

No TFLM source tree is available on a fresh machine, so main.cc is syntax-checked
against small stand-in headers declaring the TFLM API it uses (tests/support/tflm_stubs.py: names
and signatures copied from tflite-micro at commit 90b983c). model_data.cc is really compiled
with arm-none-eabi-g++ for each profile's core.

A DECODE-compressed model (a pruned int8 Keras model through choose_compression)
checks what is particular to compressed builds: AddDecode() registered and
counted, the compiled array equal to the compressed .tflite, the arena TFLM
itself needs (proven in child processes), and a profile's separate decompression
memory handed to the interpreter.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from support.builds import KWS_LABELS, make_build_dir
from support.models import pruned_cnn_int8
from support.tflm_stubs import syntax_check_against_stubs

from edgesparse import deploy
from edgesparse.deploy import DeployError, make_bundle
from edgesparse.deploy import mcu as mcu_module
from edgesparse.profiles import load_profile
from edgesparse.runtime import verify
from edgesparse.runtime.tflm_decode import arena_fits, measured_arena
from edgesparse.tflite.decode import decode_sites
from edgesparse.tflite.decode_compress import choose_compression
from edgesparse.tflite.graph import io_quantization, op_types

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None,
                               reason="needs gcc-arm-none-eabi and binutils-arm-none-eabi (make system-deps)")

ARM_PROFILES = {"nrf52840": "cortex-m4", "stm32l4r5": "cortex-m4", "ek_ra6m4": "cortex-m33",
                "stm32h7a3": "cortex-m7", "rp2040": "cortex-m0plus", "corstone_300": "cortex-m55"}
# What the object's build attributes say for each core (arm-none-eabi-readelf -A).
ARCH = {"cortex-m4": ("v7E-M", "VFPv4-D16"), "cortex-m7": ("v7E-M", "FPv5/FP-D16"),
        "cortex-m33": ("v8-M.mainline", "FPv5/FP-D16"), "cortex-m0plus": ("v6S-M", None),
        "cortex-m55": ("v8.1-M.mainline", "FPv5/FP-D16 for ARMv8")}


@pytest.fixture()
def mcu_bundle(kws_build, tmp_path):
    build, _ = kws_build
    return make_bundle(build, "mcu", tmp_path / "kws-mcu"), build


@needs_arm
def test_compiled_model_bytes_equal_the_tflite_and_are_16_byte_aligned(mcu_bundle, tmp_path):
    bundle, build = mcu_bundle
    obj = bundle.path / bundle.mcu.object_file
    blob = tmp_path / "g_model.bin"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".rodata.g_model", str(obj), str(blob)],
                   check=True)
    assert blob.read_bytes() == (build / "model.tflite").read_bytes()
    sections = subprocess.run(["arm-none-eabi-readelf", "-S", "-W", str(obj)], capture_output=True, text=True,
                              check=True).stdout
    line = next(ln for ln in sections.splitlines() if ".rodata.g_model" in ln.split())
    assert line.split()[-1] == "16"                              # Al column
    assert bundle.mcu.alignment == 16
    symbols = subprocess.run(["arm-none-eabi-nm", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    size_hex = next(ln.split()[1] for ln in symbols.splitlines() if ln.endswith(" g_model"))
    assert int(size_hex, 16) == len((build / "model.tflite").read_bytes())
    assert "alignas(16) const unsigned char g_model[]" in (bundle.path / "model_data.cc").read_text()


@needs_arm
@pytest.mark.parametrize("profile,core", sorted(ARM_PROFILES.items()))
def test_model_data_compiles_for_each_profiles_core(kws_build, tmp_path, profile, core):
    build, _ = kws_build
    bundle = make_bundle(build, "mcu", tmp_path / profile, profile=profile)
    model_size = len((build / "model.tflite").read_bytes())
    assert bundle.mcu.core == core
    assert f"-mcpu={core}" in bundle.mcu.flags
    assert bundle.mcu.flash_bytes == model_size + 4                 # g_model + g_model_len, from arm-none-eabi-size
    attributes = subprocess.run(["arm-none-eabi-readelf", "-A", str(bundle.path / bundle.mcu.object_file)],
                                capture_output=True, text=True, check=True).stdout
    arch, fpu = ARCH[core]
    assert f"Tag_CPU_arch: {arch}\n" in attributes
    if fpu:
        assert f"Tag_FP_arch: {fpu}" in attributes
        assert "Tag_ABI_VFP_args: VFP registers" in attributes      # -mfloat-abi=hard
    else:
        assert "Tag_FP_arch" not in attributes                      # M0+: no FPU, soft float
    if core == "cortex-m55":
        assert "Tag_MVE_arch: MVE Integer and FP" in attributes     # Helium, as TFLM's cortex-m55 build
    readme = (bundle.path / "README.md").read_text()
    assert f"{bundle.mcu.flash_bytes:,} bytes (arm-none-eabi-size" in readme


def test_esp32s3_is_xtensa_and_says_so(kws_build, tmp_path):
    build, _ = kws_build
    bundle = make_bundle(build, "esp32s3", tmp_path / "esp")     # a profile name as the target
    assert bundle.mcu.flash_bytes is None and bundle.mcu.compiler is None
    assert "Xtensa" in bundle.mcu.skipped and "not arm-none-eabi" in bundle.mcu.skipped
    assert (bundle.path / "model_data.cc").is_file()
    assert "Xtensa" in (bundle.path / "README.md").read_text()


def test_resolver_registers_exactly_the_models_ops(mcu_bundle):
    bundle, build = mcu_bundle
    main_cc = (bundle.path / "main.cc").read_text()
    ops = op_types((build / "model.tflite").read_bytes())
    assert ops == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    registered = re.findall(r"resolver\.(Add\w+)\(\)", main_cc)
    assert registered == [deploy.resolver_method(op) for op in ops]
    assert f"MicroMutableOpResolver<{len(ops)}>" in main_cc


def test_resolver_method_names():
    cases = {"CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "FULLY_CONNECTED":
             "AddFullyConnected", "AVERAGE_POOL_2D": "AddAveragePool2D", "MAX_POOL_2D": "AddMaxPool2D",
             "RESHAPE": "AddReshape", "SOFTMAX": "AddSoftmax", "QUANTIZE": "AddQuantize", "RELU6": "AddRelu6",
             "L2_NORMALIZATION": "AddL2Normalization", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
             "PADV2": "AddPadV2", "ADD_N": "AddAddN", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
             "HARD_SWISH": "AddHardSwish", "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
             "TFLM_DECODE": "AddDecode"}
    for op, method in cases.items():
        assert deploy.resolver_method(op) == method


def _c_values(text: str, name: str) -> np.ndarray:
    body = re.search(name + r"\[\d+\] = \{(.*?)\};", text, re.S).group(1)
    return np.array([int(v) for v in re.findall(r"-?\d+", body)])


def test_test_vector_is_quantized_validation_data_and_gives_the_expected_label(mcu_bundle, tiny_models):
    bundle, build = mcu_bundle
    _, x, y = tiny_models["kws"]
    model = (build / "model.tflite").read_bytes()
    io = io_quantization(model)["input"]
    source = (bundle.path / "test_vector.cc").read_text()
    vector = _c_values(source, "g_test_vector").astype(np.int8)
    assert np.array_equal(vector, deploy.quantize_input(x[0], io).reshape(-1))    # x_val[0]
    # it is the build's sample.npz x[0], with its true label from y[0]
    assert f"sample.npz: x[0] (true label: {KWS_LABELS[int(y[0])]})." in source.splitlines()[0]
    run = verify.run_tflite(model, vector.reshape((1, *x.shape[1:])), runtime="tflm")
    best = int(np.argmax(np.asarray(run.outputs).reshape(-1)))
    expected = json.loads((bundle.path / "expected.json").read_text())
    assert expected["index"] == best
    assert f"kExpectedIndex = {best};" in (bundle.path / "main.cc").read_text()
    labels = (bundle.path / "labels.txt").read_text().split()
    assert f'"{labels[best]}"' in (bundle.path / "main.cc").read_text()


def test_arena_comes_from_the_plan_plus_margin(mcu_bundle):
    from edgesparse import estimate

    bundle, build = mcu_bundle
    model = (build / "model.tflite").read_bytes()
    ram = estimate.check_model(model, "nrf52840").ram
    planned = ram.total_bytes - ram.breakdown.get("runtime_persistent_ram", 0)
    used = verify.run_tflite(model, np.zeros((1, 49, 10, 1), np.int8), runtime="tflm").arena_bytes
    main_cc = (bundle.path / "main.cc").read_text()
    size = int(re.search(r"kTensorArenaSize = (\d+);", main_cc).group(1))
    assert size == bundle.arena_bytes and size % 16 == 0
    base = max(planned, used)
    assert size >= base + deploy.ARENA_MARGIN_MIN_BYTES
    assert size <= base + max(deploy.ARENA_MARGIN_MIN_BYTES, base * deploy.ARENA_MARGIN_FRACTION) + 16
    assert "estimator's TFLM plan" in main_cc and "alignas(16) uint8_t g_tensor_arena" in main_cc


@needs_arm
def test_main_cc_is_well_formed_against_the_tflm_api(mcu_bundle, tmp_path):
    bundle, _ = mcu_bundle
    syntax_check_against_stubs(bundle.path, tmp_path / "stubs")


def test_sparse_model_is_refused_with_the_fix(mcu_bundle, kws_build, tmp_path, monkeypatch):
    build, _ = kws_build
    monkeypatch.setattr(mcu_module, "op_types", lambda data: ["DENSIFY", "FULLY_CONNECTED"])
    with pytest.raises(DeployError) as info:
        make_bundle(build, "mcu", tmp_path / "sparse")
    assert "DENSIFY" in str(info.value) and "--profile nrf52840" in str(info.value)
    assert not (tmp_path / "sparse").exists()


def test_mcu_target_needs_a_microcontroller_profile(kws_build, tmp_path):
    build, _ = kws_build
    with pytest.raises(DeployError) as info:
        make_bundle(build, "mcu", tmp_path / "x", profile="rpi4")
    assert "microcontroller profile" in str(info.value) and "rpi4 (sbc)" in str(info.value)


# --------------------------------------------------------------------------- DECODE-compressed models

_CLASSES = ["circle", "cross", "square", "wave"]


@pytest.fixture(scope="module")
def compressed_model(tmp_path_factory):
    """(compressed .tflite, the plan, x, y): a pruned int8 Keras model (conv, depthwise, Dense 512x64 80 % zero,
    Dense 4) through choose_compression, as `build` writes model.tflite on TFLM profiles."""
    pruned, x = pruned_cnn_int8(samples=32, dense=(64,), classes=len(_CLASSES))
    plan = choose_compression(pruned)
    assert plan.compressed and plan.file_bytes < plan.original_bytes, plan.tensors
    return plan.model, plan, x, np.arange(len(x)) % len(_CLASSES)


@pytest.fixture()
def compressed_build(compressed_model, tmp_path):

    data, _, x, y = compressed_model
    return make_build_dir(tmp_path / "build" / "pruned-nrf52840", data, name="pruned", input_shape=(8, 8, 1),
                          num_classes=len(_CLASSES), profile="nrf52840", runtime="tflm", device_class="mcu",
                          labels=_CLASSES, sample=(x, y))


def _profile_with_decompression_memory(tmp_path, alt_bytes: int):
    """nrf52840 as shipped, plus runtime.alt_decompression_bytes (with the source a profile must give)."""
    text = load_profile("nrf52840").path.read_text()
    text = text.replace("[runtime]\n", f"[runtime]\nalt_decompression_bytes = {alt_bytes}\n", 1)
    text = text.replace("[sources]\n", '[sources]\n"runtime.alt_decompression_bytes" = "assumption: test device '
                                       'with a separate RAM for decoded tensors"\n', 1)
    path = tmp_path / "nrf52840-alt.toml"
    path.write_text(text)
    assert load_profile(str(path)).alt_decompression_bytes == alt_bytes
    return str(path)


def _arena(main_cc: str) -> int:
    return int(re.search(r"kTensorArenaSize = (\d+);", main_cc).group(1))


def test_compressed_model_registers_decode_and_counts_it(compressed_build, tmp_path):
    bundle = make_bundle(compressed_build, "mcu", tmp_path / "mcu")
    model = (compressed_build / "model.tflite").read_bytes()
    ops = op_types(model)
    assert "TFLM_DECODE" in ops and len(decode_sites(model)) >= 1
    main_cc = (bundle.path / "main.cc").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", main_cc)
    assert registered == [deploy.resolver_method(op) for op in ops] and "AddDecode" in registered
    assert f"MicroMutableOpResolver<{len(ops)}>" in main_cc                    # DECODE counts against tOpCount
    assert "SetDecompressionMemory" not in main_cc and "g_decompression_memory" not in main_cc   # nrf52840: none
    readme = (bundle.path / "README.md").read_text()
    assert "tflite-micro at commit ecf58d7a4 (2025-10-23" in readme              # DECODE's PRUNING decoder
    assert re.search(r"tflite-micro 0\.dev\d+", readme)                         # the wheel that ran it here
    assert any("DECODE registered" in note for note in bundle.notes)


@needs_arm
def test_compressed_model_array_compiles_to_the_tflite_bytes(compressed_build, tmp_path):
    bundle = make_bundle(compressed_build, "mcu", tmp_path / "mcu")
    tflite = (compressed_build / "model.tflite").read_bytes()
    assert "TFLM_DECODE" in op_types(tflite)
    blob = tmp_path / "g_model.bin"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".rodata.g_model",
                    str(bundle.path / bundle.mcu.object_file), str(blob)], check=True)
    assert blob.read_bytes() == tflite
    assert bundle.mcu.bytes_match is True and bundle.mcu.alignment == 16
    assert bundle.mcu.flash_bytes == len(tflite) + 4                           # arm-none-eabi-size: text + data
    readme = (bundle.path / "README.md").read_text()
    assert f"{bundle.mcu.flash_bytes:,} bytes (arm-none-eabi-size" in readme
    assert "equals `model.tflite` byte for byte" in readme


def test_compressed_model_arena_is_tflms_own_use_plus_margin(compressed_build, compressed_model, tmp_path):
    """The decoded tensor lives in the arena: TFLM's recorded use (a child process) is the floor, and it runs."""
    from edgesparse import estimate

    model, plan, _, _ = compressed_model
    bundle = make_bundle(compressed_build, "mcu", tmp_path / "mcu")
    size = _arena((bundle.path / "main.cc").read_text())
    used = measured_arena(model)["total"]
    ram = estimate.check_model(model, "nrf52840").ram
    base = max(used, ram.total_bytes - ram.breakdown.get("runtime_persistent_ram", 0))
    assert used > plan.largest_decoded_bytes                                   # the 32 KiB FC kernel is decoded there
    assert base + deploy.ARENA_MARGIN_MIN_BYTES <= size == bundle.arena_bytes
    assert size <= base + max(deploy.ARENA_MARGIN_MIN_BYTES, base * deploy.ARENA_MARGIN_FRACTION) + 16
    assert arena_fits(model, size)


def test_decompression_memory_is_allocated_and_handed_to_the_interpreter(compressed_build, compressed_model,
                                                                         tmp_path):
    model, plan, _, _ = compressed_model
    without = make_bundle(compressed_build, "mcu", tmp_path / "plain")
    bundle = make_bundle(compressed_build, "mcu", tmp_path / "alt",
                         profile=_profile_with_decompression_memory(tmp_path, 1 << 20))
    main_cc = (bundle.path / "main.cc").read_text()
    memory = mcu_module.decompression_memory_bytes(decode_sites(model), 1 << 20)
    assert memory == max(-(-t.dense_bytes // 16) * 16 for t in plan.compressed)   # one DECODE per consumer
    assert f"kDecompressionMemorySize = {memory};" in main_cc
    assert "alignas(16) uint8_t g_decompression_memory[kDecompressionMemorySize];" in main_cc
    set_at = main_cc.index("interpreter.SetDecompressionMemory(kDecompressionRegions, 1)")
    assert main_cc.index("static tflite::MicroInterpreter interpreter(") < set_at < main_cc.index("AllocateTensors()")
    size = _arena(main_cc)
    with_memory = measured_arena(model, alt_decompression_bytes=memory)["total"]
    assert with_memory + deploy.ARENA_MARGIN_MIN_BYTES <= size < _arena((without.path / "main.cc").read_text())
    assert arena_fits(model, size, alt_decompression_bytes=memory)
    assert not arena_fits(model, size)                       # without the memory the decoded tensor has no room
    readme = (bundle.path / "README.md").read_text()
    assert "tflite-micro at commit f5c36ef2e (2025-12-10" in readme             # SetDecompressionMemory(ptr, n)
    assert f"Decompression memory: {memory:,} bytes" in readme


@needs_arm
def test_compressed_main_cc_is_well_formed_against_the_tflm_api(compressed_build, tmp_path):
    bundle = make_bundle(compressed_build, "mcu", tmp_path / "alt",
                         profile=_profile_with_decompression_memory(tmp_path, 1 << 20))
    assert "SetDecompressionMemory" in (bundle.path / "main.cc").read_text()
    syntax_check_against_stubs(bundle.path, tmp_path / "stubs")


def test_an_unknown_custom_op_is_refused(compressed_model, tmp_path):
    """A custom op TFLM does not ship (here DECODE's custom code renamed) cannot be registered by main.cc."""

    data, _, x, y = compressed_model
    renamed = data.replace(b"TFLM_DECODE", b"TFLM_DECODX")
    assert op_types(renamed).count("TFLM_DECODX") == 1
    build = make_build_dir(tmp_path / "build", renamed, name="renamed", input_shape=(8, 8, 1), num_classes=4,
                           profile="nrf52840", runtime="tflm", device_class="mcu", labels=_CLASSES, sample=(x, y))
    with pytest.raises(DeployError) as info:
        make_bundle(build, "mcu", tmp_path / "mcu")
    assert "custom op TFLM_DECODX" in str(info.value) and "AddCustom" in str(info.value)
    assert not (tmp_path / "mcu").exists()
