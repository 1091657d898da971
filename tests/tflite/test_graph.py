"""graph.py on real files: converter output of small Keras models (MACs checked by hand), the
MLPerf Tiny reference models, keras.applications MobileNets, sparse models, and broken files."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesparse.errors import ModelError
from edgesparse.tflite.graph import FILE_IDENTIFIER, Graph, load_graph, validate_graph
from edgesparse.tflite.validate import graph_problems

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")

MLPERF_MODELS = [
    "keyword_spotting/kws_ref_model.tflite",
    "keyword_spotting/kws_ref_model_float32.tflite",
    "visual_wake_words/vww_96_int8.tflite",
    "visual_wake_words/vww_96_float.tflite",
    "image_classification/pretrainedResnet_quant.tflite",
    "image_classification/pretrainedResnet.tflite",
    "image_classification/pretrainedResnet_large_int8.tflite",
    "image_classification/pretrainedResnet_large_float.tflite",
    "anomaly_detection/ad01_int8.tflite",
    "anomaly_detection/ad01_fp32.tflite",
    "streaming_wakeword/str_ww_ref_model.tflite",
]

# MACs worked out by hand from each architecture (conv/depthwise/FC layers only), and the
# MLPerf Tiny paper's rounded figures (Banbury et al. 2021, Table 1) they must agree with.
#   KWS DS-CNN, 49x10 input: conv 10x4 s2 -> 25x5x64: 125*64*40 = 320,000; 4 x depthwise 3x3:
#     125*64*9 = 72,000; 4 x pointwise 64->64: 125*64*64 = 512,000; FC 64->12: 768.
#   ResNet-8 on 32x32x3: 442,368 + 2 x 2,359,296 + 1,179,648 + 2,359,296 + 131,072
#     + 1,179,648 + 2,359,296 + 131,072 + FC 640 (the same per-layer figures as SiliconLabs
#     mltk's summary of this model: 12.502 M).
#   AD01 FC autoencoder: 2 x 640*128 + 6 x 128*128 + 2 x 128*8.
HAND_MACS = {
    "kws": 320_000 + 4 * 72_000 + 4 * 512_000 + 768,
    "resnet8": 442_368 + 2 * 2_359_296 + 1_179_648 + 2_359_296 + 131_072 + 1_179_648
    + 2_359_296 + 131_072 + 640,
    "ad01": 2 * 640 * 128 + 6 * 128 * 128 + 2 * 128 * 8,
}
PAPER_MACS = {"kws": 2.7e6, "vww": 7.5e6, "resnet8": 12.5e6, "ad01": 0.264e6}
MLPERF_FAMILY = {
    "kws_ref_model.tflite": "kws", "kws_ref_model_float32.tflite": "kws",
    "vww_96_int8.tflite": "vww", "vww_96_float.tflite": "vww",
    "pretrainedResnet_quant.tflite": "resnet8", "pretrainedResnet.tflite": "resnet8",
    "ad01_int8.tflite": "ad01", "ad01_fp32.tflite": "ad01",
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def tfk():
    """(tensorflow, tf_keras); TensorFlow is only needed to make test models."""
    from edgesparse.errors import MissingDependency
    from edgesparse.pipeline.tf_env import import_tf

    try:
        return import_tf()
    except MissingDependency as exc:
        pytest.skip(str(exc))


def convert(tf, model, precision: str, *, sparse: bool = False, samples: int = 4) -> bytes:
    """Real TFLiteConverter output: float32, or int8 weights+activations with float I/O."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if precision == "int8":
        rng = np.random.default_rng(0)
        shape = tuple(model.input_shape[1:])
        optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.representative_dataset = lambda: (
            [rng.random((1, *shape), dtype=np.float32)] for _ in range(samples))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.optimizations = optimizations
    return converter.convert()


def seeded(keras, build):
    keras.utils.set_random_seed(0)
    return build()


def randomize(model, seed=0):
    """Random non-zero weights and biases, so the converter keeps every bias."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def ops_named(graph: Graph, name: str):
    return [op for op in graph.ops if op.opcode == name]


def assert_size_adds_up(graph: Graph):
    s = graph.size
    assert s.weight_bytes + s.sparse_index_bytes + s.overhead_bytes == s.total_bytes == graph.file_bytes
    assert min(s.weight_bytes, s.sparse_index_bytes, s.overhead_bytes) >= 0


def assert_bytes_consistent(graph: Graph):
    for op in graph.all_ops:
        assert op.bytes_moved == op.weight_bytes + op.activation_bytes_in + op.activation_bytes_out


def flatbuffer_model(data: bytes):
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def pack(model_t) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


# --------------------------------------------------------------------------- runtime half


def test_graph_imports_no_tensorflow(mlperf_dir):
    """`check` must run on a Pi with only ai-edge-litert and numpy."""
    code = ("import sys; from edgesparse.tflite.graph import load_graph; "
            f"g = load_graph({str(mlperf_dir / MLPERF_MODELS[0])!r}); assert g.total_macs > 0; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------- MACs by hand


def _mac_cases(keras):
    L = keras.layers
    return {
        # 16x16x3 -> same, stride 2 -> 8x8x8: 8*8*8 * 3*3*3
        "conv_same_s2": (lambda: keras.Sequential([L.Input((16, 16, 3)), L.Conv2D(8, 3, strides=2, padding="same")]),
                         [("CONV_2D", 8 * 8 * 8 * 3 * 3 * 3)]),
        # 15x15x4, 3x5 valid, strides (1, 2) -> 13x6x6: 13*6*6 * 3*5*4
        "conv_valid_s12": (lambda: keras.Sequential([L.Input((15, 15, 4)),
                                                     L.Conv2D(6, (3, 5), strides=(1, 2), padding="valid")]),
                           [("CONV_2D", 13 * 6 * 6 * 3 * 5 * 4)]),
        # groups=2: each output sees in_c/groups = 2 channels: 8*8*6 * 3*3*2
        "conv_groups": (lambda: keras.Sequential([L.Input((10, 10, 4)), L.Conv2D(6, 3, groups=2)]),
                        [("CONV_2D", 8 * 8 * 6 * 3 * 3 * 2)]),
        # depthwise, multiplier 2: 12*12*16 * 3*3
        "depthwise": (lambda: keras.Sequential([L.Input((12, 12, 8)),
                                                L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)]),
                      [("DEPTHWISE_CONV_2D", 12 * 12 * 16 * 3 * 3)]),
        # depthwise, valid, stride 2: (11-3)/2+1 = 5 -> 5*5*6 * 3*3
        "depthwise_valid_s2": (lambda: keras.Sequential([L.Input((11, 11, 6)),
                                                         L.DepthwiseConv2D(3, strides=2)]),
                               [("DEPTHWISE_CONV_2D", 5 * 5 * 6 * 3 * 3)]),
        "dense": (lambda: keras.Sequential([L.Input((20,)), L.Dense(7)]), [("FULLY_CONNECTED", 20 * 7)]),
        # conv 10x10x2 -> 8x8x4 (8*8*4*3*3*2), flatten 256 -> dense 5 (256*5)
        "two_layer": (lambda: keras.Sequential([L.Input((10, 10, 2)), L.Conv2D(4, 3, activation="relu"),
                                                L.Flatten(), L.Dense(5)]),
                      [("CONV_2D", 8 * 8 * 4 * 3 * 3 * 2), ("FULLY_CONNECTED", 256 * 5)]),
    }


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_macs_match_hand_counts(tfk, precision):
    tf, keras = tfk
    for name, (build, expected) in _mac_cases(keras).items():
        model = randomize(seeded(keras, build))
        graph = load_graph(convert(tf, model, precision))
        compute = [(op.opcode, op.macs) for op in graph.ops if op.macs]
        assert compute == expected, name
        assert graph.total_macs == graph.total_effective_macs == sum(m for _, m in expected), name
        assert graph.fully_analyzed, name
        assert graph.param_count == model.count_params(), name
        for op in graph.ops:
            if op.macs:
                assert op.dtype == ("int8" if precision == "int8" else "float32"), name
                assert op.weight_dtype == op.dtype and not op.sparse_weights, name
        assert_size_adds_up(graph)
        assert_bytes_consistent(graph)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_dense_op_bytes_and_weight_values(tfk, precision):
    tf, keras = tfk
    model = randomize(seeded(keras, _mac_cases(keras)["dense"][0]))
    graph = load_graph(convert(tf, model, precision))
    (fc,) = ops_named(graph, "FULLY_CONNECTED")
    item = 4 if precision == "float32" else 1
    assert fc.weight_bytes == 7 * 20 * item + 7 * 4  # weights + bias (int32 when quantized)
    assert fc.activation_bytes_in == 20 * item and fc.activation_bytes_out == 7 * item
    assert fc.bytes_moved == fc.weight_bytes + 20 * item + 7 * item
    kernel, bias = model.get_weights()
    weights = graph.tensor_values(fc.weight_tensor)
    assert weights.shape == (7, 20)
    if precision == "float32":
        np.testing.assert_array_equal(weights, kernel.T)
        np.testing.assert_array_equal(graph.tensor_values(fc.inputs[2]), bias)
        assert graph.size.weight_bytes == (7 * 20 + 7) * 4
    else:
        q = graph.tensors[fc.weight_tensor].quantization
        assert q.per_channel and len(q.scales) == 7 and q.quantized_dimension == 0
        dequantized = weights.astype(np.float32) * np.asarray(q.scales, np.float32)[:, None]
        np.testing.assert_allclose(dequantized, kernel.T, atol=max(q.scales))
        assert graph.size.weight_bytes == 7 * 20 + 7 * 4
    sig = graph.signatures[0]
    assert sig.key == "serving_default" and list(sig.inputs.values()) == list(graph.inputs)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_demo_shaped_cnn(tfk, precision):
    """The demo model's layers: Conv2D, MaxPool2D, Flatten, Dense, softmax (+ QUANTIZE/DEQUANTIZE)."""
    tf, keras = tfk
    L = keras.layers
    model = randomize(seeded(keras, lambda: keras.Sequential([
        L.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(16, activation="relu"), L.Dense(10, activation="softmax")])))
    graph = load_graph(convert(tf, model, precision))
    expected = ["CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]
    if precision == "int8":
        expected = ["QUANTIZE", *expected, "DEQUANTIZE"]
    assert [op.opcode for op in graph.ops] == expected
    assert graph.fully_analyzed
    assert graph.total_macs == 8 * 8 * 8 * 9 + 128 * 16 + 16 * 10
    (pool,) = ops_named(graph, "MAX_POOL_2D")
    assert pool.elementwise_ops == 4 * 4 * 8 * 2 * 2 and pool.macs == 0
    (reshape,) = ops_named(graph, "RESHAPE")
    assert reshape.macs == reshape.elementwise_ops == 0 and reshape.analyzed
    (softmax,) = ops_named(graph, "SOFTMAX")
    assert softmax.elementwise_ops == 10
    if precision == "int8":
        quantize, dequantize = graph.ops[0], graph.ops[-1]
        assert quantize.elementwise_ops == 64 and quantize.dtype == "float32"
        assert dequantize.elementwise_ops == 10 and dequantize.dtype == "int8"
        assert graph.tensors[graph.inputs[0]].dtype == "float32"
        assert graph.tensors[quantize.outputs[0]].quantization is not None
    assert graph.param_count == model.count_params()
    assert graph.op_types == tuple(dict.fromkeys(expected))
    summary = json.loads(json.dumps(graph.summary()))
    assert summary["total_macs"] == graph.total_macs
    assert summary["per_op_type"]["FULLY_CONNECTED"]["count"] == 2
    assert summary["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert summary["inputs"][0]["shape_signature"] == [-1, 8, 8, 1]
    assert_size_adds_up(graph)
    assert_bytes_consistent(graph)


def test_float16_and_dynamic_range_weights(tfk):
    """fp16 weights reach the kernel through DEQUANTIZE; dynamic range keeps float activations."""
    tf, keras = tfk
    L = keras.layers
    model = randomize(seeded(keras, lambda: keras.Sequential([L.Input((64,)), L.Dense(64)])))
    for mode in ("float16", "dynamic"):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        graph = load_graph(converter.convert())
        (fc,) = ops_named(graph, "FULLY_CONNECTED")
        assert fc.macs == 64 * 64 and fc.dtype == "float32" and graph.fully_analyzed
        assert graph.param_count == model.count_params()
        if mode == "float16":
            dequantize = next(op for op in graph.ops if fc.weight_tensor in op.outputs)
            assert dequantize.opcode == "DEQUANTIZE" and dequantize.one_time
            assert fc.weight_dtype == "float16" and graph.tensors[fc.weight_source].dtype == "float16"
            assert fc.weight_bytes == 64 * 64 * 4 + 64 * 4  # the kernel reads dequantized float32
            assert graph.size.weight_bytes == (64 * 64 + 64) * 2
        else:
            assert fc.weight_dtype == "int8" and fc.weight_tensor == fc.weight_source
            assert fc.weight_bytes == 64 * 64 + 64 * 4
        assert_size_adds_up(graph)


@pytest.mark.slow
def test_unidirectional_lstm_macs(tfk):
    tf, keras = tfk
    L = keras.layers
    model = randomize(seeded(keras, lambda: keras.Sequential([L.Input((6, 5), batch_size=1), L.LSTM(8)])))
    graph = load_graph(convert(tf, model, "float32"))
    (lstm,) = ops_named(graph, "UNIDIRECTIONAL_SEQUENCE_LSTM")
    assert lstm.analyzed and lstm.macs == 6 * 4 * 8 * (5 + 8)  # steps x gates x units x (in + units)


# --------------------------------------------------------------------------- sparsity


def _block_pruned_dense_model(keras, sparsity=0.8, seed=0):
    """A Dense kernel with 80 % of its 1x4 blocks (along the input dim) set to zero, and a pruned conv."""
    L = keras.layers
    model = randomize(seeded(keras, lambda: keras.Sequential([
        L.Input((8, 8, 2)), L.Conv2D(16, 3, activation="relu"), L.Flatten(), L.Dense(32, activation="relu"),
        L.Dense(10)])), seed)
    rng = np.random.default_rng(seed)
    conv_k, conv_b, kernel, bias, k2, b2 = model.get_weights()
    conv_k[rng.random(conv_k.shape) < sparsity] = 0.0  # unstructured: the converter adds DENSIFY
    blocks = kernel.T.reshape(32, -1, 4).copy()  # TFLite weights are [out, in]: blocks of 4 inputs
    pruned = rng.permutation(blocks.shape[0] * blocks.shape[1])[: round(sparsity * blocks.shape[0] * blocks.shape[1])]
    blocks.reshape(-1, 4)[pruned] = 0.0
    kernel = blocks.reshape(32, -1).T
    model.set_weights([conv_k, conv_b, kernel, bias, k2, b2])
    return model, kernel, conv_k


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_sparse_model(tfk, precision):
    tf, keras = tfk
    model, kernel, conv_k = _block_pruned_dense_model(keras)
    graph = load_graph(convert(tf, model, precision, sparse=True))
    assert "DENSIFY" in graph.op_types
    assert graph.fully_analyzed
    assert_size_adds_up(graph)
    assert_bytes_consistent(graph)
    sparse = graph.sparse_tensors
    assert sparse and graph.size.sparse_index_bytes == sum(t.sparsity.index_bytes for t in sparse) > 0
    assert graph.size.weight_bytes >= sum(t.sparsity.value_bytes for t in sparse)

    fc = ops_named(graph, "FULLY_CONNECTED")[0]
    assert fc.sparse_weights and fc.macs == 576 * 32
    src = graph.tensors[fc.weight_source]
    sp = src.sparsity
    assert sp.dense_shape == (32, 576) == src.shape
    stored = graph.tensor_values(src)
    assert stored.ndim == 1 and stored.size == sp.nnz
    assert len(sp.dim_metadata) == len(sp.traversal_order)
    assert any(dm.format == "SPARSE_CSR" for dm in sp.dim_metadata)
    if sp.block_map:  # float: 1x4 blocks, consumed directly by the sparse FULLY_CONNECTED kernel
        assert sp.block_map == (1,) and sp.block_shape == (1, 4) and sp.traversal_order == (0, 1, 2)
        assert sp.nnz == 4 * int(np.count_nonzero(kernel.T.reshape(32, -1, 4).any(axis=2)))
        assert not fc.weights_densified and fc.weight_tensor == fc.weight_source
        assert fc.weight_bytes == src.stored_bytes + 32 * 4  # encoded weights + bias
        np.testing.assert_array_equal(np.sort(stored[stored != 0]), np.sort(kernel[kernel != 0]))
    else:  # int8: unstructured CSR, a DENSIFY op in front of the FULLY_CONNECTED
        assert 0.98 * np.count_nonzero(kernel) <= sp.nnz <= np.count_nonzero(kernel)  # a few round to 0
        assert fc.weights_densified and fc.weight_tensor != fc.weight_source
        densify = next(op for op in graph.ops if fc.weight_tensor in op.outputs)
        assert densify.opcode == "DENSIFY" and densify.one_time
        assert densify.weight_bytes == src.stored_bytes
        assert densify.activation_bytes_out == 32 * 576
    assert sp.sparsity == pytest.approx(0.8, abs=0.01)
    assert fc.weight_density == pytest.approx(sp.density)
    assert fc.effective_macs == round(fc.macs * sp.density) < fc.macs
    assert graph.total_effective_macs < graph.total_macs
    assert graph.param_count == model.count_params()
    assert graph.stored_param_count < graph.param_count

    # The sparse conv weights go through DENSIFY in both precisions.
    (conv,) = ops_named(graph, "CONV_2D")
    assert conv.sparse_weights and conv.weights_densified
    conv_nnz = graph.tensors[conv.weight_source].sparsity.nnz
    assert 0.98 * np.count_nonzero(conv_k) <= conv_nnz <= np.count_nonzero(conv_k)

    # Cross-check every sparse tensor's metadata with the LiteRT interpreter's own reading.
    from ai_edge_litert.interpreter import Interpreter

    details = {d["index"]: d for d in Interpreter(model_content=graph.data).get_tensor_details()}
    for t in sparse:
        theirs = details[t.index]["sparsity_parameters"]
        assert tuple(theirs["traversal_order"]) == t.sparsity.traversal_order
        assert tuple(theirs["block_map"]) == t.sparsity.block_map
        for mine, dm in zip(t.sparsity.dim_metadata, theirs["dim_metadata"]):
            assert dm["format"] == (1 if mine.format == "SPARSE_CSR" else 0)
            if mine.format == "DENSE":
                assert dm["dense_size"] == mine.dense_size
            else:
                np.testing.assert_array_equal(dm["array_segments"], mine.array_segments)
                np.testing.assert_array_equal(dm["array_indices"], mine.array_indices)


# --------------------------------------------------------------------------- MLPerf Tiny


@pytest.fixture(scope="module")
def mlperf_graphs(mlperf_dir):
    return {rel: load_graph(mlperf_dir / rel) for rel in MLPERF_MODELS}


def test_every_mlperf_tiny_model_is_listed(mlperf_dir):
    found = sorted(str(p.relative_to(mlperf_dir)) for p in mlperf_dir.rglob("*.tflite"))
    assert found == sorted(MLPERF_MODELS)


@pytest.mark.parametrize("rel", MLPERF_MODELS)
def test_mlperf_tiny_model_parses_and_is_fully_analyzed(mlperf_graphs, rel):
    graph = mlperf_graphs[rel]
    assert graph.schema_version == 3
    assert graph.min_runtime_version and graph.min_runtime_version[0].isdigit()
    assert "min_runtime_version" in graph.metadata
    assert graph.fully_analyzed, [(op.opcode, op.note) for op in graph.unanalyzed_ops]
    assert all(op.analyzed for op in graph.ops)
    assert graph.total_macs > 0 and graph.param_count > 0
    assert_size_adds_up(graph)
    assert_bytes_consistent(graph)
    assert graph.size.weight_bytes > graph.size.overhead_bytes / 4
    family = MLPERF_FAMILY.get(Path(rel).name)
    if family in HAND_MACS:
        assert graph.total_macs == HAND_MACS[family]
    if family:
        assert graph.total_macs == pytest.approx(PAPER_MACS[family], rel=0.03)


def test_float_and_int8_twins_have_equal_macs(mlperf_graphs):
    pairs = [("keyword_spotting/kws_ref_model.tflite", "keyword_spotting/kws_ref_model_float32.tflite"),
             ("visual_wake_words/vww_96_int8.tflite", "visual_wake_words/vww_96_float.tflite"),
             ("image_classification/pretrainedResnet_quant.tflite", "image_classification/pretrainedResnet.tflite"),
             ("image_classification/pretrainedResnet_large_int8.tflite",
              "image_classification/pretrainedResnet_large_float.tflite"),
             ("anomaly_detection/ad01_int8.tflite", "anomaly_detection/ad01_fp32.tflite")]
    for a, b in pairs:
        assert mlperf_graphs[a].total_macs == mlperf_graphs[b].total_macs, (a, b)


def test_mlperf_tensors_match_litert_interpreter(mlperf_graphs, mlperf_dir):
    """Our reading of every tensor agrees with the LiteRT interpreter's."""
    from ai_edge_litert.interpreter import Interpreter

    for rel, graph in mlperf_graphs.items():
        details = Interpreter(model_path=str(mlperf_dir / rel)).get_tensor_details()
        assert len(details) == len(graph.tensors), rel
        for d in details:
            t = graph.tensors[d["index"]]
            assert t.name == d["name"] and t.shape == tuple(d["shape"]), rel
            assert t.shape_signature == tuple(d["shape_signature"]), rel
            assert t.dtype == np.dtype(d["dtype"]).name, rel
            q = d["quantization_parameters"]
            scales = t.quantization.scales if t.quantization else ()
            np.testing.assert_allclose(scales, q["scales"], rtol=1e-7)
            if t.quantization:
                assert t.quantization.quantized_dimension == q["quantized_dimension"]


def test_mlperf_int8_kws_per_op(mlperf_graphs):
    graph = mlperf_graphs["keyword_spotting/kws_ref_model.tflite"]
    convs = ops_named(graph, "CONV_2D")
    assert [op.macs for op in convs] == [320_000] + [512_000] * 4
    assert [op.macs for op in ops_named(graph, "DEPTHWISE_CONV_2D")] == [72_000] * 4
    first = convs[0]
    assert first.options["padding"] in ("SAME", "VALID") and first.options["stride_h"] == 2
    assert first.dtype == first.weight_dtype == "int8"
    assert first.activation_bytes_in == 49 * 10 and first.activation_bytes_out == 25 * 5 * 64
    assert first.weight_bytes == 64 * 10 * 4 + 64 * 4
    (pool,) = ops_named(graph, "AVERAGE_POOL_2D")
    assert pool.elementwise_ops == 64 * 25 * 5
    stats = graph.op_type_stats()
    assert stats["CONV_2D"]["count"] == 5 and stats["CONV_2D"]["macs"] == 320_000 + 4 * 512_000


# --------------------------------------------------------------------------- MobileNets


def _keras_macs(keras, model) -> int:
    """MACs from the Keras layers themselves, independent of the TFLite graph."""
    total = 0
    for layer in model.layers:
        out = layer.output_shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += math.prod(out[1:]) * math.prod(layer.kernel_size)
        elif isinstance(layer, keras.layers.Conv2D):
            total += math.prod(out[1:]) * math.prod(layer.kernel_size) * layer.input_shape[-1] // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(out[1:]) * layer.input_shape[-1]
    return total


MOBILENETS = {
    "MobileNet": dict(alpha=0.25),
    "MobileNetV2": dict(alpha=0.35),
    "MobileNetV3Small": dict(alpha=0.75),
    "MobileNetV3Large": dict(alpha=0.75),
}


@pytest.fixture(scope="module")
def mobilenet_cache(request, tfk):
    """Conversions take ~10 s each: keep them in pytest's cache, keyed by TF version and this code."""
    tf, _ = tfk
    key = hashlib.sha256((tf.__version__ + inspect.getsource(convert) + repr(MOBILENETS)).encode()).hexdigest()
    return request.config.cache.mkdir(f"edgesparse-graph-{key[:16]}")


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(MOBILENETS))
def test_mobilenets_fully_analyzed(tfk, mobilenet_cache, arch):
    tf, keras = tfk
    model = seeded(keras, lambda: getattr(keras.applications, arch)(
        input_shape=(96, 96, 3), weights=None, classes=10, **MOBILENETS[arch]))
    expected = _keras_macs(keras, model)
    for precision in ("float32", "int8"):
        path = mobilenet_cache / f"{arch}_{precision}.tflite"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(convert(tf, model, precision, samples=2))
            tmp.replace(path)
        graph = load_graph(path)
        assert graph.fully_analyzed, [(op.opcode, op.note) for op in graph.unanalyzed_ops]
        assert graph.total_macs == expected, precision
        assert_size_adds_up(graph)
        assert_bytes_consistent(graph)
        if precision == "int8":
            assert {"QUANTIZE", "DEQUANTIZE"} <= set(graph.op_types)
            assert {op.dtype for op in graph.ops if op.macs} == {"int8"}
        for op in graph.ops:
            if op.opcode in ("HARD_SWISH", "ADD", "MUL"):
                assert op.elementwise_ops == graph.tensors[op.outputs[0]].num_elements > 0
    if arch.startswith("MobileNetV3"):
        assert "HARD_SWISH" in graph.op_types


# --------------------------------------------------------------------------- broken input


def _raises_model_error(source) -> ModelError:
    with pytest.raises(ModelError) as info:
        load_graph(source)
    return info.value


def test_missing_file_and_directory(tmp_path, mlperf_dir):
    err = _raises_model_error(tmp_path / "nope.tflite")
    assert "not found" in err.what and str(tmp_path / "nope.tflite") in str(err)
    err = _raises_model_error(mlperf_dir / "keyword_spotting" / "kws_ref_model")
    assert "directory" in err.what and "SavedModel" in str(err)
    with pytest.raises(ModelError):
        load_graph(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("content,expect", [
    (b"", "too short"), (b"TFL3abc", "too short"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "PNG image"),
    (b"\x89HDF\r\n\x1a\n" + bytes(64), "HDF5"),
    (b"PK\x03\x04" + bytes(64), "zip archive"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS"),
    (np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a TFLite"),
])
def test_not_a_tflite(tmp_path, content, expect):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    err = _raises_model_error(path)
    assert expect in str(err) and str(path) in str(err)
    assert err.received is not None and err.fix


def test_truncated_files_raise_model_error(mlperf_dir):
    data = (mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite").read_bytes()
    cuts = sorted({8, 9, 12, 16, 24, 32, 64, 100, 256, 1000, 4096, len(data) // 3, len(data) // 2,
                   2 * len(data) // 3, len(data) - 4096, len(data) - 1000, len(data) - 100,
                   len(data) - 16, len(data) - 2, len(data) - 1})
    assert len(cuts) == 20
    for cut in cuts:
        err = _raises_model_error(data[:cut])
        assert "<in-memory model>" in str(err), cut
        assert "error while reading" not in str(err), cut  # struct.error's class name is just "error"
    assert "a read outside the file" in str(_raises_model_error(data[:len(data) // 2]))


def test_structural_corruption_raises_model_error(mlperf_dir):
    data = bytearray((mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite").read_bytes())
    root = int.from_bytes(data[:4], "little")
    for position, value in [(0, 0xFF), (3, 0x7F), (root, 0x7F), (root + 1, 0xFF), (root + 3, 0x80)]:
        broken = bytearray(data)
        broken[position] ^= value
        _raises_model_error(bytes(broken))


def test_fuzzed_files_never_raise_anything_else(mlperf_dir, tmp_path):
    """Random byte flips and truncations: a Graph or a ModelError, never another exception."""
    rng = np.random.default_rng(1234)
    sources = [(mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite").read_bytes(),
               (mlperf_dir / "anomaly_detection" / "ad01_int8.tflite").read_bytes()[:40_000]]
    outcomes = {"graph": 0, "error": 0}
    for i in range(240):
        data = bytearray(sources[i % 2])
        structure_end = min(len(data), 8192)
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(0, len(data))) if rng.random() < 0.3 else int(rng.integers(0, structure_end))
            data[pos] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(8, len(data)))]
        try:
            graph = load_graph(bytes(data))
        except ModelError:
            outcomes["error"] += 1
            continue
        outcomes["graph"] += 1
        assert_size_adds_up(graph)
        json.dumps(graph.summary())
    assert outcomes["error"] > 0


def _crafted(data: bytes, edit) -> bytes:
    model = flatbuffer_model(data)
    edit(model)
    return pack(model)


@pytest.mark.parametrize("edit,expect", [
    (lambda m: setattr(m.subgraphs[0].tensors[1], "buffer", 10_000), "refers to buffer 10000"),
    (lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 99), "opcode index 99"),
    (lambda m: m.subgraphs[0].operators[0].inputs.__setitem__(0, 5000), "refers to tensor 5000"),
    (lambda m: m.subgraphs[0].outputs.__setitem__(0, -3), "refers to tensor -3"),
    (lambda m: (setattr(m.buffers[2], "data", None), setattr(m.buffers[2], "offset", 10_000_000),
                setattr(m.buffers[2], "size", 64)), "points past the end"),
    (lambda m: setattr(m.subgraphs[0].tensors[0], "shape", np.array([1, -7, 4], np.int32)), "impossible shape"),
    (lambda m: setattr(m, "subgraphs", []), "no subgraphs"),
])
def test_inconsistent_models_raise_model_error(mlperf_dir, edit, expect):
    data = (mlperf_dir / "anomaly_detection" / "ad01_int8.tflite").read_bytes()
    assert load_graph(_crafted(data, lambda m: None)).total_macs == HAND_MACS["ad01"]
    err = _raises_model_error(_crafted(data, edit))
    assert expect in str(err)


# --------------------------------------------------------------------------- validation (G1-G9, docs/graph.md)


@pytest.mark.parametrize("rel", MLPERF_MODELS)
def test_every_mlperf_tiny_model_passes_validation(mlperf_graphs, rel):
    assert graph_problems(mlperf_graphs[rel]) == []
    assert validate_graph(mlperf_graphs[rel]) is mlperf_graphs[rel]


def _kws_operator(model, k: int):
    return model.subgraphs[0].operators[k]


def _set_shape(tensor, shape):
    tensor.shape = np.array(shape, np.int32)
    tensor.shapeSignature = np.array(shape, np.int32)


# KWS: op 0 CONV_2D (0, 17, 3) -> 22, op 1 DEPTHWISE_CONV_2D (22, 5, 4) -> 23, ... op 12 SOFTMAX (33,) -> 34.
@pytest.mark.parametrize("edit, expect", [
    (lambda m: setattr(m.subgraphs[0], "operators", []), "the main subgraph has 1 inputs, 1 outputs and 0 operators"),
    (lambda m: _kws_operator(m, 1).inputs.__setitem__(0, 30), "reads tensor 30, which nothing produced before it"),
    (lambda m: setattr(_kws_operator(m, 0), "outputs", np.array([23], np.int32)), "writes tensor 23, which already"),
    (lambda m: setattr(_kws_operator(m, 0), "inputs", np.array([], np.int32)), "(CONV_2D): has 0 inputs"),
    (lambda m: _kws_operator(m, 0).inputs.__setitem__(1, -1), "omits a required input"),
    (lambda m: _set_shape(m.subgraphs[0].tensors[5], [1, 3, 3, 640]), "needs 5760 bytes, its buffer holds 576"),
    (lambda m: setattr(m.subgraphs[0].tensors[0], "shape", np.array([1, 49, 10, 2], np.int32)),
     "disagrees with its signature"),
    (lambda m: setattr(m.subgraphs[0].tensors[22].quantization, "scale", np.array([0.0], np.float32)),
     "tensor 22: a zero or negative or non-finite scale"),
    (lambda m: setattr(m.subgraphs[0].tensors[5].quantization, "scale", np.ones(3, np.float32)),
     "3 quantization scales but 64 zero points"),
    (lambda m: setattr(m.subgraphs[0].tensors[22], "quantization", None), "quantized tensor 22 has no scale"),
    (lambda m: _set_shape(m.subgraphs[0].tensors[22], [1, 25, 5, 32]), "output [1, 25, 5, 32] for input"),
    (lambda m: setattr(_kws_operator(m, 12).builtinOptions, "beta", 0.0), "softmax beta = 0.0"),
    (lambda m: (setattr(_kws_operator(m, 12), "builtinOptions", None),
                setattr(_kws_operator(m, 12), "builtinOptionsType", 0)), "option beta is missing"),
    (lambda m: setattr(_kws_operator(m, 9).builtinOptions, "strideW", 0), "option stride_w = 0"),
    (lambda m: _set_shape(m.subgraphs[0].tensors[33], [1, 1 << 29]), "would need 536870912 bytes"),
])
def test_validation_names_what_an_interpreter_would_crash_on(mlperf_dir, edit, expect):
    data = (mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite").read_bytes()
    graph = load_graph(_crafted(data, edit))  # structurally sound: load_graph alone accepts it
    with pytest.raises(ModelError) as info:
        load_graph(_crafted(data, edit), validate=True)
    assert expect in str(info.value.received), graph_problems(graph)
    assert info.value.what == "corrupt or inconsistent TFLite model" and "<in-memory model>" in str(info.value)


def test_validation_keeps_what_converters_and_tflm_accept(mlperf_dir):
    """A pruned all-zero channel (weight scale 0), a tensor only a custom op reads (DECODE's per-channel
    quantization on its encoded input), ops without outputs (ASSIGN_VARIABLE), zero-element constants."""
    from ai_edge_litert import schema_py_generated as schema

    data = (mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite").read_bytes()

    def edit(model):
        sg = model.subgraphs[0]
        sg.tensors[5].quantization.scale[3] = 0.0          # a constant channel pruned to zero
        decode = schema.OperatorCodeT()
        decode.customCode, decode.builtinCode = b"TFLM_DECODE", schema.BuiltinOperator.CUSTOM
        assign = schema.OperatorCodeT()
        assign.builtinCode, assign.deprecatedBuiltinCode = schema.BuiltinOperator.ASSIGN_VARIABLE, 127
        model.operatorCodes.extend([decode, assign])
        values = schema.BufferT()
        values.data = np.zeros(576, np.uint8)
        model.buffers.append(values)
        encoded = schema.TensorT()
        encoded.shape, encoded.type = np.array([576], np.int32), schema.TensorType.UINT8
        encoded.buffer = len(model.buffers) - 1
        encoded.quantization = schema.QuantizationParametersT()
        encoded.quantization.scale = np.ones(64, np.float32)
        encoded.quantization.zeroPoint = np.zeros(64, np.int64)
        sg.tensors.append(encoded)
        n = len(model.operatorCodes)
        for code, inputs in ((n - 2, [len(sg.tensors) - 1]), (n - 1, [2, 1])):
            op = schema.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = code, np.array(inputs, np.int32), np.array([], np.int32)
            sg.operators.insert(0, op)

    graph = load_graph(_crafted(data, edit), validate=True)
    assert {"TFLM_DECODE", "ASSIGN_VARIABLE"} <= set(graph.op_types)


def test_unknown_and_custom_ops_are_flagged_not_fatal(mlperf_dir):
    from ai_edge_litert import schema_py_generated as schema

    data = (mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite").read_bytes()

    def edit(model):
        codes = model.operatorCodes
        custom = schema.OperatorCodeT()
        custom.customCode, custom.builtinCode, custom.deprecatedBuiltinCode = b"MyVendorOp", 32, 32
        nms = schema.OperatorCodeT()
        nms.builtinCode = nms.deprecatedBuiltinCode = schema.BuiltinOperator.NON_MAX_SUPPRESSION_V4
        codes.extend([custom, nms])
        ops = model.subgraphs[0].operators
        ops[-1].opcodeIndex = len(codes) - 2   # SOFTMAX -> custom op
        ops[-2].opcodeIndex = len(codes) - 1   # FULLY_CONNECTED -> an op without a cost model
        ops[-2].builtinOptionsType = 0
        ops[-2].builtinOptions = None
        conv = next(op for op in ops if max(codes[op.opcodeIndex].builtinCode,
                                            codes[op.opcodeIndex].deprecatedBuiltinCode) == 3)  # CONV_2D
        model.subgraphs[0].tensors[conv.inputs[1]].shape = np.array([7], np.int32)  # malformed filter

    graph = load_graph(_crafted(data, edit))
    assert not graph.fully_analyzed
    flagged = {op.opcode: op for op in graph.unanalyzed_ops}
    assert set(flagged) == {"MyVendorOp", "NON_MAX_SUPPRESSION_V4", "CONV_2D"}
    assert not flagged["MyVendorOp"].builtin and flagged["MyVendorOp"].kind == "custom"
    assert "analysis failed" in flagged["CONV_2D"].note
    assert all(op.macs == 0 for op in flagged.values())
    assert graph.summary()["unanalyzed_ops"] == sorted(flagged)


def test_buffers_stored_outside_the_flatbuffer(mlperf_dir):
    """Models > 2 GB keep buffer data after the flatbuffer (Buffer.offset / size); same result, and LiteRT agrees."""
    from ai_edge_litert.interpreter import Interpreter

    data = (mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite").read_bytes()
    model = flatbuffer_model(data)
    payloads = {}
    for i, buf in enumerate(model.buffers):
        if buf.data is not None and len(buf.data):
            payloads[i] = bytes(np.asarray(buf.data, dtype=np.uint8))
            buf.data, buf.offset, buf.size = None, 1 << 40, len(payloads[i])  # placeholder, fixed width
    head = len(pack(model))
    tail, offsets = bytearray(), {}
    for i, payload in payloads.items():
        tail += bytes(-(head + len(tail)) % 16)
        offsets[i] = head + len(tail)
        tail += payload
    for i, offset in offsets.items():
        model.buffers[i].offset = offset
    flat = pack(model)
    assert len(flat) == head
    moved = flat + bytes(tail)

    original, graph = load_graph(data), load_graph(moved)
    assert graph.total_macs == original.total_macs and graph.min_runtime_version == original.min_runtime_version
    assert graph.size.weight_bytes == original.size.weight_bytes
    assert_size_adds_up(graph)
    for t in original.tensors:
        if t.is_constant:
            np.testing.assert_array_equal(graph.tensor_values(t.index), original.tensor_values(t.index))

    outputs = []
    for content in (data, moved):
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        interpreter.set_tensor(inp["index"], np.arange(490, dtype=np.int8).reshape(inp["shape"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])

    truncated = moved[: len(moved) - 100]
    assert "points past the end" in str(_raises_model_error(truncated))


# --------------------------------------------------------------------------- TFLM DECODE


def test_decode_op_is_a_data_op_without_macs():
    """A DECODE-compressed file: DECODE is analysed (kind data, no MACs, its elements in the note) and the
    consumer keeps its dense MACs; the ancillary data is parsed by tflite.decode alone."""
    pytest.importorskip("tflite_micro")
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    from edgesparse.tflite.decode import decode_sites
    from edgesparse.tflite.decode_compress import compress_model

    rng = np.random.default_rng(0)
    weights = np.where(rng.random((16, 40)) < 0.2, rng.integers(-127, 128, (16, 40)), 0).astype(np.int8)
    x = me.Tensor(shape=(1, 40), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.05, 0), name="x")
    w = me.Tensor(shape=(16, 40), dtype=fb.TensorType.INT8, data=weights,
                  quantization=me.Quantization([0.01] * 16, [0] * 16, axis=0), name="w")
    y = me.Tensor(shape=(1, 16), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.1, 0), name="y")
    model = me.Model()
    model.add_subgraph(tensors=[x, w, y], inputs=[x], outputs=[y], operators=[
        me.Operator(opcode=fb.BuiltinOperator.FULLY_CONNECTED, inputs=[x, w], outputs=[y])])
    graph = load_graph(compress_model(bytes(model.build()), {"w": "PRUNING"}))
    decode, fc = graph.ops
    assert (decode.opcode, decode.builtin, decode.kind, decode.macs, decode.analyzed) == (
        "TFLM_DECODE", False, "data", 0, True)
    assert "640 elements decoded per invoke" in decode.note
    assert fc.macs == 640 and graph.fully_analyzed
    [site] = decode_sites(graph)
    assert (site.info.method, site.info.elements, site.info.value_count) == (
        "PRUNING", 640, int(np.count_nonzero(weights)))
