"""Arm Ethos-U test helpers without TensorFlow: an NpuConfig and a hand-built Ethos-U Profile, tiny int8
models written straight through the flatbuffer schema (so Vela tests need no converter), and one Vela
compilation per session of the tiny model (`compiled_tiny`).

The NpuConfig's memory figures are Arm's own System_Config.Ethos_U55_High_End_Embedded (Vela 5.2's
config_files/Arm/vela.ini), at a 400 MHz clock chosen for the test (an assumption, not a device).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from edgesparse.profiles.profile import NpuConfig, Profile, load_profile, validate
from edgesparse.runtime.vela import VelaCompilation, compile_for_ethos_u
from edgesparse.tflite.edit import save_model
from edgesparse.tflite.schema import schema

__all__ = ["FALLBACK_LAYERS", "TEST_NPU", "TINY_LAYERS", "compiled_fallback", "compiled_tiny", "fallback_npu_model",
           "int8_model", "npu_profile", "tiny_npu_model"]

TEST_NPU = NpuConfig(
    accelerator="ethos-u55-128",
    clock_mhz=400.0,
    memory_mode="Shared_Sram",
    axi0="Sram",
    axi1="OffChipFlash",
    axi0_memory={"clock_scale": 1.0, "burst_length": 32, "read_latency": 32, "write_latency": 32,
                 "max_reads": 4, "max_writes": 4},
    axi1_memory={"clock_scale": 0.125, "burst_length": 128, "read_latency": 64, "write_latency": 0,
                 "max_reads": 2, "max_writes": 0},
    sram_bytes=393216,
    arena_cache_bytes=None,
    active_mw=45.0,
)


def npu_profile(npu: NpuConfig = TEST_NPU, *, name: str = "test_ethos_u55") -> Profile:
    """A hand-built Ethos-U Profile that passes profile validation: the shipped nrf52840 profile's
    tables (power, battery, latency...) with a Cortex-M55 device, runtime tflm+ethos-u and `npu` as its
    [npu] table. For tests only: every changed number is sourced as a test assumption."""
    raw = copy.deepcopy(dict(load_profile("nrf52840").raw))
    assumption = "assumption: tests/support/npu.py test profile (Arm vela.ini Ethos_U55_High_End_Embedded memories)"
    raw.update(name=name, description="test profile: Cortex-M55 + Arm Ethos-U (tests/support/npu.py)")
    raw["device"] = {**raw["device"], "board": "test", "cpu": "Cortex-M55", "clock_mhz": 400,
                     "ram_bytes": 1048576, "flash_bytes": 4194304, "simd": ["dsp", "helium"], "fpu": "sp"}
    raw["runtime"] = {**raw["runtime"], "name": "tflm+ethos-u"}
    table = {"accelerator": npu.accelerator, "clock_mhz": npu.clock_mhz, "memory_mode": npu.memory_mode,
             "axi0": npu.axi0, "axi1": npu.axi1, "axi0_memory": dict(npu.axi0_memory),
             "axi1_memory": dict(npu.axi1_memory), "sram_bytes": npu.sram_bytes, "active_mw": npu.active_mw}
    if npu.arena_cache_bytes:
        table["arena_cache_bytes"] = npu.arena_cache_bytes
    raw["npu"] = table
    sources = dict(raw["sources"])
    sources.update({f"device.{k}": assumption for k in ("clock_mhz", "ram_bytes", "flash_bytes")})
    for key, value in table.items():
        if isinstance(value, dict):
            sources.update({f"npu.{key}.{k}": assumption for k in value})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            sources[f"npu.{key}"] = assumption
    raw["sources"] = sources
    problems = validate(raw, f"<test profile {name}>")
    if problems:
        raise AssertionError("tests/support/npu.py builds an invalid profile: " + "; ".join(problems))
    digest = hashlib.sha256(repr(raw).encode()).hexdigest()
    return Profile(name=name, path=Path(f"<test profile {name}>"), sha256=digest, raw=raw)


# ----------------------------------------------------------------------------- tiny int8 models


class _Writer:
    """Appends tensors, buffers and operators to one ModelT subgraph."""

    def __init__(self) -> None:
        fbs = schema()
        self.fbs = fbs
        self.model = fbs.ModelT()
        self.model.version = 3
        self.model.description = "edgesparse test model (tests/support/npu.py)"
        self.model.buffers = [fbs.BufferT()]
        self.model.operatorCodes = []
        self.graph = fbs.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []
        self.model.subgraphs = [self.graph]

    def tensor(self, name, shape, dtype, scales, zero_points=None, data=None, axis=0) -> int:
        fbs = self.fbs
        t = fbs.TensorT()
        t.name, t.shape = name, list(shape)
        t.type = {"int8": fbs.TensorType.INT8, "int32": fbs.TensorType.INT32}[dtype]
        if scales is not None:
            q = fbs.QuantizationParametersT()
            q.scale = [float(s) for s in scales]
            q.zeroPoint = [int(z) for z in (zero_points if zero_points is not None else [0] * len(scales))]
            q.quantizedDimension = axis
            t.quantization = q
        t.buffer = 0
        if data is not None:
            buf = fbs.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def op(self, name: str, inputs, outputs, options_type=None, options=None) -> None:
        fbs = self.fbs
        code = getattr(fbs.BuiltinOperator, name)
        codes = [c.builtinCode for c in self.model.operatorCodes]
        if code not in codes:
            oc = fbs.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            self.model.operatorCodes.append(oc)
            codes.append(code)
        op = fbs.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes.index(code), list(inputs), list(outputs)
        if options is not None:
            op.builtinOptionsType, op.builtinOptions = getattr(fbs.BuiltinOptions, options_type), options
        self.graph.operators.append(op)


_ACT_SCALE, _ACT_ZP, _W_SCALE = 0.05, -3, 0.004


def _weights(rng, shape, sparsity: float) -> np.ndarray:
    values = rng.integers(-127, 128, size=shape).astype(np.int8)
    return np.where(rng.random(shape) >= sparsity, values, 0).astype(np.int8)


def _conv(w: _Writer, rng, x: int, shape, spec, sparsity, index) -> tuple[int, tuple[int, ...]]:
    kind, filters, kernel, stride, padding = spec
    fbs = w.fbs
    _, h, wd, c = shape
    out_h = -(-h // stride) if padding == "SAME" else (h - kernel) // stride + 1
    out_w = -(-wd // stride) if padding == "SAME" else (wd - kernel) // stride + 1
    depthwise = kind == "dwconv"
    out_c = c if depthwise else filters
    w_shape = (1, kernel, kernel, out_c) if depthwise else (out_c, kernel, kernel, c)
    scales = [_W_SCALE] * out_c
    wt = w.tensor(f"{kind}{index}/weights", w_shape, "int8", scales, data=_weights(rng, w_shape, sparsity),
                  axis=3 if depthwise else 0)
    bias = w.tensor(f"{kind}{index}/bias", (out_c,), "int32", [_ACT_SCALE * _W_SCALE] * out_c,
                    data=rng.integers(-200, 200, size=out_c).astype(np.int32))
    out_shape = (1, out_h, out_w, out_c)
    y = w.tensor(f"{kind}{index}/out", out_shape, "int8", [_ACT_SCALE * 4], [_ACT_ZP])
    pad = getattr(fbs.Padding, padding)
    if depthwise:
        opts = fbs.DepthwiseConv2DOptionsT()
        opts.depthMultiplier = 1
        name, opt_name = "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions"
    else:
        opts = fbs.Conv2DOptionsT()
        name, opt_name = "CONV_2D", "Conv2DOptions"
    opts.padding, opts.strideW, opts.strideH = pad, stride, stride
    opts.dilationWFactor = opts.dilationHFactor = 1
    opts.fusedActivationFunction = fbs.ActivationFunctionType.RELU
    w.op(name, [x, wt, bias], [y], opt_name, opts)
    return y, out_shape


def _fc(w: _Writer, rng, x: int, shape, units: int, sparsity, index) -> tuple[int, tuple[int, ...]]:
    fbs = w.fbs
    flat = int(np.prod(shape))
    if len(shape) != 2:
        new_shape = w.tensor(f"reshape{index}/shape", (2,), "int32", None, data=np.array([1, flat], np.int32))
        y = w.tensor(f"reshape{index}/out", (1, flat), "int8", [_ACT_SCALE * 4], [_ACT_ZP])
        opts = fbs.ReshapeOptionsT()
        opts.newShape = [1, flat]
        w.op("RESHAPE", [x, new_shape], [y], "ReshapeOptions", opts)
        x = y
    wt = w.tensor(f"fc{index}/weights", (units, flat), "int8", [_W_SCALE] * units,
                  data=_weights(rng, (units, flat), sparsity))
    bias = w.tensor(f"fc{index}/bias", (units,), "int32", [_ACT_SCALE * 4 * _W_SCALE] * units,
                    data=rng.integers(-200, 200, size=units).astype(np.int32))
    y = w.tensor(f"fc{index}/out", (1, units), "int8", [_ACT_SCALE * 8], [_ACT_ZP])
    opts = fbs.FullyConnectedOptionsT()
    opts.fusedActivationFunction = fbs.ActivationFunctionType.NONE
    w.op("FULLY_CONNECTED", [x, wt, bias], [y], "FullyConnectedOptions", opts)
    return y, (1, units)


def int8_model(layers, *, input_shape=(1, 8, 8, 4), sparsity: float = 0.0, seed: int = 0) -> bytes:
    """A full-integer int8 .tflite built without a converter.

    `layers`: ("conv", filters, kernel, stride, "SAME"|"VALID"), ("dwconv", 0, kernel, stride, padding),
    ("fc", units) (a RESHAPE to 2-D is inserted before the first) or ("unary", "FLOOR"|...) (a one-input
    builtin on the current tensor). Weights are random int8 with `sparsity` of them zero (an unstructured
    mask), per-channel scales; the same seed gives the same non-zero values at any sparsity's kept places
    only by chance, so compare sizes, not values, across sparsities.
    """
    w = _Writer()
    rng = np.random.default_rng(seed)
    x = w.tensor("input", input_shape, "int8", [_ACT_SCALE], [_ACT_ZP])
    w.graph.inputs = [x]
    shape = tuple(input_shape)
    for index, spec in enumerate(layers):
        if spec[0] in ("conv", "dwconv"):
            x, shape = _conv(w, rng, x, shape, spec, sparsity, index)
        elif spec[0] == "fc":
            x, shape = _fc(w, rng, x, shape, spec[1], sparsity, index)
        else:
            y = w.tensor(f"{spec[1].lower()}{index}/out", shape, "int8", [_ACT_SCALE * 4], [_ACT_ZP])
            w.op(spec[1], [x], [y])
            x = y
    w.graph.outputs = [x]
    w.graph.name = "main"
    return save_model(w.model)


TINY_LAYERS = (("conv", 16, 3, 1, "SAME"), ("dwconv", 0, 3, 2, "SAME"), ("fc", 32), ("fc", 4))


def tiny_npu_model(*, sparsity: float = 0.0, seed: int = 0) -> bytes:
    """Conv 16x3x3 -> depthwise 3x3/2 -> FC 256->32 -> FC 32->4 on an 8x8x4 int8 input: every op Vela places."""
    return int8_model(TINY_LAYERS, sparsity=sparsity, seed=seed)


# Two ops Vela 5.2 leaves on the CPU for U55/U65 (its SUPPORTED_OPS.md): DEPTHWISE_CONV_2D with stride 4
# ("Kernel stride must be in the range (1,3)") and FLOOR (not an NPU operator: "Unsupported opType").
FALLBACK_LAYERS = (("conv", 8, 3, 1, "SAME"), ("dwconv", 0, 3, 4, "SAME"), ("unary", "FLOOR"), ("fc", 4))


def fallback_npu_model() -> bytes:
    """Conv -> depthwise stride 4 -> FLOOR -> FC: the middle two fall back to the CPU."""
    return int8_model(FALLBACK_LAYERS)


@functools.cache
def compiled_fallback() -> VelaCompilation:
    """One Vela compilation of `fallback_npu_model()` for TEST_NPU per test session (cached)."""
    return compile_for_ethos_u(fallback_npu_model(), TEST_NPU)


@functools.cache
def compiled_tiny(sparsity: float = 0.0) -> VelaCompilation:
    """One Vela compilation of `tiny_npu_model(sparsity=...)` for TEST_NPU per test session (cached)."""
    return compile_for_ethos_u(tiny_npu_model(sparsity=sparsity), TEST_NPU)


def env_without_vela(tmp_path: Path) -> dict[str, str]:
    """An environment for a child process in which `ethosu` fails to import, as when edgesparse[npu] is absent:
    a shadow package first on PYTHONPATH, then the repository."""
    shadow = tmp_path / "shadow" / "ethosu"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('ethos-u-vela is not installed here')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(Path(__file__).resolve().parents[2])])}
