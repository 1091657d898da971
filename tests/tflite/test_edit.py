"""tflite_edit.py on real converter output: decode sparse tensors, densify them, reject corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from support.models import mixed_data, mixed_model

from edgesparse.errors import ModelError
from edgesparse.pipeline.convert import convert_keras
from edgesparse.tflite import edit as tflite_edit


@pytest.fixture(scope="module")
def files():
    """Dense and all-sparse conversions of the same weights, int8 and float32."""
    model, data = mixed_model(), mixed_data()
    out = {}
    for q in ("int8", "none"):
        for sparse in (False, True):
            out[q, sparse] = convert_keras(model, quantize=q, representative=data.x_train, sparse=sparse)
    return out, data


def builtin_outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs with LiteRT's builtin kernels only, so two files are compared on the same kernels."""
    it = Interpreter(model_content=model_bytes,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    results = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        results.append(it.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def test_sparse_report_lists_both_weights_with_their_costs(files):
    conv, dense = sorted(tflite_edit.sparse_encoding_report(files[0]["int8", True]), key=lambda t: len(t.shape))[::-1]
    assert conv.shape == (32, 3, 3, 1) and conv.via_densify and conv.dtype == "INT8"
    assert dense.shape == (128, 512) and dense.via_densify and dense.block_size is None  # int8 FC blocks are 1x16
    assert dense.dense_bytes == 128 * 512 and dense.values_bytes < 0.25 * dense.dense_bytes
    assert dense.index_bytes > dense.values_bytes            # uint16 indices: 2 bytes per 1-byte value
    assert conv.sparse_bytes > conv.dense_bytes              # 289 segments dwarf 288 int8 weights


@pytest.mark.parametrize("quantize", ["int8", "none"])
def test_decode_matches_the_dense_conversion(files, quantize):
    sparse, dense = files[0][quantize, True], files[0][quantize, False]
    pairs = list(zip(tflite_edit.weight_tensors(sparse), tflite_edit.weight_tensors(dense)))
    assert len(pairs) == 3
    decoded_any = False
    for (op_s, i_s, _), (op_d, i_d, _) in pairs:
        assert op_s == op_d
        got, want = tflite_edit.constant_tensor(sparse, i_s), tflite_edit.constant_tensor(dense, i_d)
        assert got.dtype == want.dtype and got.shape == want.shape
        q_s, q_d = tflite_edit.tensor_quantization(sparse, i_s), tflite_edit.tensor_quantization(dense, i_d)
        if all(np.array_equal(a, b) for a, b in zip(q_s, q_d)):
            np.testing.assert_array_equal(got, want)          # bitwise: same weights, same scales
        else:  # would mean the two conversions quantized differently: compare real values
            axis_shape = [-1 if d == q_s[2] else 1 for d in range(got.ndim)]
            real_s = (got.astype(np.float64) - q_s[1].reshape(axis_shape)) * q_s[0].reshape(axis_shape)
            real_d = (want.astype(np.float64) - q_d[1].reshape(axis_shape)) * q_d[0].reshape(axis_shape)
            np.testing.assert_allclose(real_s, real_d, atol=q_d[0].max())
        model = tflite_edit.load_model(sparse)
        if model.subgraphs[0].tensors[i_s].sparsity is not None:
            decoded_any = True
            np.testing.assert_array_equal(tflite_edit.decode_sparse(sparse, i_s), want)
    assert decoded_any


def test_float32_fc_uses_1x4_blocks_and_decodes_bitwise(files):
    sparse = files[0]["none", True]
    fc = next(t for t in tflite_edit.sparse_encoding_report(sparse) if len(t.shape) == 2)
    assert fc.block_size == (1, 4) and fc.consumers == ["FULLY_CONNECTED"] and not fc.via_densify
    decoded = tflite_edit.decode_sparse(sparse, fc.index)
    assert (decoded.reshape(128, 128, 4) == 0).all(axis=2).mean() > 0.75   # whole 1x4 blocks are zero


def test_densify_round_trip_gives_identical_outputs(files):
    sparse, dense = files[0]["int8", True], files[0]["int8", False]
    x = files[1].x_val[:8]
    report = tflite_edit.sparse_encoding_report(sparse)
    before = tflite_edit.op_names(sparse)
    out = tflite_edit.densify_tensors(sparse, [t.name for t in report])
    after = tflite_edit.op_names(out)
    assert before.count("DENSIFY") == 2 and "DENSIFY" not in after
    assert len(after) == len(before) - 2 and [o for o in before if o != "DENSIFY"] == after
    assert tflite_edit.sparse_encoding_report(out) == []
    np.testing.assert_array_equal(builtin_outputs(out, x), builtin_outputs(sparse, x))
    np.testing.assert_array_equal(builtin_outputs(out, x), builtin_outputs(dense, x))
    # Runs with the default resolver (XNNPACK) now that no sparse int8 FC is left.
    it = Interpreter(model_content=out)
    it.allocate_tensors()
    assert any(op["op_name"] == "DELEGATE" for op in it._get_ops_details())
    # Tensors, buffers, opcodes were renumbered consistently: the signature still resolves.
    m_in, m_out = tflite_edit.load_model(sparse), tflite_edit.load_model(out)
    assert len(m_out.subgraphs[0].tensors) == len(m_in.subgraphs[0].tensors) - 2
    assert len(m_out.buffers) == len(m_in.buffers) - 2 and len(m_out.operatorCodes) == len(m_in.operatorCodes) - 1
    runner = Interpreter(model_content=out).get_signature_runner()
    assert runner.get_input_details() and runner.get_output_details()


def test_densify_one_tensor_changes_the_size_as_predicted(files):
    sparse = files[0]["int8", True]
    conv = next(t for t in tflite_edit.sparse_encoding_report(sparse) if len(t.shape) == 4)
    out = tflite_edit.densify_tensors(sparse, [conv.name])
    predicted = conv.dense_bytes - conv.sparse_bytes         # negative: this tensor was bigger sparse
    # The file shrinks by more than that: the DENSIFY op goes too, and so does its output tensor,
    # which carries its own copy of the 32 per-channel scales and zero points (~400 B here).
    extra = (len(sparse) - len(out)) + predicted
    assert 200 < extra < 1024
    assert len(out) < len(sparse) and tflite_edit.op_names(out).count("DENSIFY") == 1
    x = files[1].x_val[:8]
    np.testing.assert_array_equal(builtin_outputs(out, x), builtin_outputs(sparse, x))


def test_densify_direct_block_sparse_fc_matches_dense_weights(files):
    sparse, dense = files[0]["none", True], files[0]["none", False]
    fc = next(t for t in tflite_edit.sparse_encoding_report(sparse) if len(t.shape) == 2)
    out = tflite_edit.densify_tensors(sparse, [fc.index])
    assert len(out) - len(sparse) == pytest.approx(fc.dense_bytes - fc.sparse_bytes, abs=256)
    np.testing.assert_array_equal(tflite_edit.constant_tensor(out, fc.name),
                                  tflite_edit.constant_tensor(dense, tflite_edit.weight_tensors(dense)[1][1]))
    x = files[1].x_val[:8]  # dense vs sparse FC kernel: same maths, different summation order
    np.testing.assert_allclose(builtin_outputs(out, x), builtin_outputs(sparse, x), rtol=1e-5, atol=1e-5)


def test_densify_rejects_dense_and_unknown_tensors(files):
    sparse = files[0]["int8", True]
    dense_name = next(n for op, i, n in tflite_edit.weight_tensors(sparse)
                      if tflite_edit.load_model(sparse).subgraphs[0].tensors[i].sparsity is None)
    with pytest.raises(ModelError, match="not sparse-encoded"):
        tflite_edit.densify_tensors(sparse, [dense_name])
    with pytest.raises(ModelError, match="No tensor of that name"):
        tflite_edit.densify_tensors(sparse, ["no/such/tensor"])


def test_save_model_round_trips_and_aligns_buffers(files):
    original = files[0]["int8", True]
    repacked = tflite_edit.save_model(tflite_edit.load_model(original))
    x = files[1].x_val[:4]
    np.testing.assert_array_equal(builtin_outputs(repacked, x), builtin_outputs(original, x))
    root = schema.Model.GetRootAs(repacked, 0)
    for b in range(root.BuffersLength()):
        buf = root.Buffers(b)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0, f"buffer {b} data at {start}"


def test_corrupt_files_are_model_errors(files):
    good = files[0]["int8", False]
    for bad in (b"", b"definitely not a model", good[:len(good) // 3], b"\x00" * 8 + good[8:]):
        with pytest.raises(ModelError):
            tflite_edit.load_model(bad)
    model = tflite_edit.load_model(good)
    model.subgraphs[0].operators[0].inputs = [999, 1, 2]
    with pytest.raises(ModelError, match="uses tensor 999"):
        tflite_edit.load_model(tflite_edit.save_model(model))
