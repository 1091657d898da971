"""litert.check_structure: LiteRT's loader as the verifier in front of TFLite Micro. It rejects damage that
load_graph never reads, and tolerates what TFLM runs: custom ops, empty data vectors on activations, DECODE's
per-channel quantization left on a tensor only a custom op reads."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from tflite_mutants import Mutator, study_sources

from edgesparse.errors import ModelError
from edgesparse.runtime.litert import activation_arena_bytes, check_structure
from edgesparse.tflite import edit as tflite_edit
from edgesparse.tflite.graph import load_graph

KWS = "keyword_spotting/kws_ref_model.tflite"
VWW = "visual_wake_words/vww_96_int8.tflite"


def _check(data: bytes, *, with_graph: bool = True) -> None:
    check_structure(data, where="m.tflite", graph=load_graph(data) if with_graph else None)


def test_every_mlperf_model_and_the_tiny_model_pass(mlperf_dir):
    for path in [*sorted(mlperf_dir.rglob("*.tflite")), *study_sources(mlperf_dir).values()]:
        data = path.read_bytes()
        _check(data)
        load_graph(data, validate=True)


@pytest.mark.parametrize("case", ["vww byte 28", "seed 7 #173", "seed 7 #809"])
def test_damage_load_graph_never_reads_is_rejected(mlperf_dir, case):
    if case.startswith("vww"):
        data = bytearray((mlperf_dir / VWW).read_bytes())
        data[28] ^= 0xFF  # the Model vtable slot of the deprecated metadata_buffer
        data = bytes(data)
    else:
        data = Mutator(study_sources(mlperf_dir)).mutant(int(case.split("#")[1]), 7).data
    load_graph(data, validate=True)  # the graph checks see nothing wrong
    with pytest.raises(ModelError) as info:
        _check(data)
    assert info.value.what == "corrupt TFLite flatbuffer" and info.value.where == "m.tflite"
    assert "not a valid Flatbuffer" in info.value.received


def test_an_empty_data_vector_on_activations_is_not_damage(mlperf_dir):
    """Files rewritten through the flatbuffer object API (TFLM's DECODE compression) have them; TFLM runs them."""
    model = tflite_edit.load_model((mlperf_dir / KWS).read_bytes())
    for tensor in model.subgraphs[0].tensors:
        buffer = model.buffers[tensor.buffer]
        if buffer.data is None or not len(buffer.data):
            buffer.data = np.zeros(0, np.uint8)
    data = tflite_edit.save_model(model)
    _check(data)
    with pytest.raises(ModelError, match="required_bytes <= bytes"):
        _check(data, with_graph=False)  # without the graph, LiteRT's complaint cannot be told apart


def test_custom_ops_and_their_inputs_quantization_are_not_damage(mlperf_dir):
    model = tflite_edit.load_model((mlperf_dir / KWS).read_bytes())
    decode = schema.OperatorCodeT()
    decode.customCode, decode.builtinCode = b"TFLM_DECODE", schema.BuiltinOperator.CUSTOM
    model.operatorCodes.append(decode)
    sg = model.subgraphs[0]
    values = schema.BufferT()
    values.data = np.zeros(576, np.uint8)
    model.buffers.append(values)
    encoded = schema.TensorT()
    encoded.shape, encoded.type, encoded.buffer = np.array([576], np.int32), schema.TensorType.UINT8, len(
        model.buffers) - 1
    encoded.quantization = schema.QuantizationParametersT()
    encoded.quantization.scale, encoded.quantization.zeroPoint = np.ones(64, np.float32), np.zeros(64, np.int64)
    sg.tensors.append(encoded)
    op = schema.OperatorT()
    op.opcodeIndex, op.outputs = len(model.operatorCodes) - 1, np.array([], np.int32)
    op.inputs = np.array([len(sg.tensors) - 1], np.int32)
    sg.operators.insert(0, op)
    _check(tflite_edit.save_model(model))


def test_without_litert_the_check_is_skipped(mlperf_dir, monkeypatch):
    data = bytearray((mlperf_dir / VWW).read_bytes())
    data[28] ^= 0xFF
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    check_structure(bytes(data), where="m.tflite")


def test_the_arena_read_runs_in_a_child_and_answers_none_for_a_bad_file(mlperf_dir):
    data = (mlperf_dir / KWS).read_bytes()
    assert activation_arena_bytes(data) > 0
    assert activation_arena_bytes(data[: len(data) // 2]) is None
