"""Reading a Vela-compiled .tflite without Vela: the ethos-u custom op's inputs, the CPU ops, flash and arena."""

import pytest
from support.npu import compiled_fallback, compiled_tiny, tiny_npu_model

from edgesparse.runtime.vela import VELA_EXTRA, vela_version
from edgesparse.tflite.ethos_u import (
    COMMAND_STREAM_INPUT,
    ETHOS_U_OP,
    READ_ONLY_INPUT,
    SCRATCH_INPUTS,
    describe_ethos_u,
    ethos_u_ops,
    is_ethos_u_model,
)
from edgesparse.tflite.graph import load_graph

pytestmark = pytest.mark.skipif(vela_version() is None, reason=f"Vela compiles the files read here ({VELA_EXTRA})")


def test_a_compiled_file_is_one_ethos_u_op_with_its_stream_weights_and_scratch():
    compilation = compiled_tiny()
    graph = load_graph(compilation.model)
    assert is_ethos_u_model(graph) and not is_ethos_u_model(load_graph(tiny_npu_model()))
    (op,) = ethos_u_ops(graph)
    assert op.opcode == ETHOS_U_OP and not op.builtin
    tensors = graph.subgraphs[0].tensors
    stream, read_only = tensors[op.inputs[COMMAND_STREAM_INPUT]], tensors[op.inputs[READ_ONLY_INPUT]]
    assert stream.is_constant and read_only.is_constant and stream.dtype == read_only.dtype == "uint8"
    assert all(not tensors[op.inputs[i]].is_constant for i in SCRATCH_INPUTS)
    assert tensors[op.inputs[4]].index in graph.subgraphs[0].inputs        # then the feature map
    model = describe_ethos_u(graph)
    assert (model.npu_ops, model.cpu_ops) == (1, ())
    assert model.command_stream_bytes == stream.buffer_bytes > 0
    assert model.weight_bytes == read_only.buffer_bytes >= compilation.encoded_weight_bytes
    assert model.flash_bytes == compilation.flash_bytes
    # Shared_Sram: scratch and scratch_fast are one tensor, counted once
    assert op.inputs[SCRATCH_INPUTS[0]] == op.inputs[SCRATCH_INPUTS[1]]
    assert model.arena_bytes == model.scratch_bytes == compilation.arena_bytes and model.scratch_fast_bytes == 0
    assert model.offline_planned
    assert model.as_dict()["flash_bytes"] == model.flash_bytes and model.as_dict()["not_known_from_file"]


def test_cpu_ops_between_npu_parts_are_listed_in_order():
    compilation = compiled_fallback()
    model = describe_ethos_u(load_graph(compilation.model))
    assert model.npu_ops == 2
    assert model.cpu_ops == ("DEPTHWISE_CONV_2D", "FLOOR")
    assert model.arena_bytes == compilation.arena_bytes > 0


def test_a_plain_model_has_no_npu_side():
    model = describe_ethos_u(load_graph(tiny_npu_model()))
    assert model.npu_ops == 0 and model.flash_bytes == model.arena_bytes == 0
    assert model.cpu_ops == ("CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED")


def test_the_validating_reader_accepts_a_compiled_file():
    load_graph(compiled_tiny().model, validate=True)
