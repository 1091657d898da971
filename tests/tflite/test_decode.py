"""The DECODE formats: PRUNING encoder vs the numpy reference decoder and vs TFLM's own kernels, the
ancillary-data parser on corrupt input, and the per-tensor rule on tiny hand-built models. No TensorFlow."""

import numpy as np
import pytest

from edgesparse.errors import ModelError
from edgesparse.tflite.decode import (
    DCM_BYTES,
    DECODE_OP,
    Channels,
    EncodedTensor,
    decode_lut,
    decode_pruning,
    decode_reference,
    decode_sites,
    encode_pruning,
    kernel_channels,
    lut_shape,
    parse_ancillary,
    pruning_payload_bytes,
    reference_decode_all,
)
from edgesparse.tflite.decode_compress import choose_compression, compress_model, compression_candidates

DTYPES = ["int8", "int16", "int32", "int64", "float32", "bool"]


def _sparse(shape, dtype, density, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        values = rng.random(shape) < 0.5
    elif dtype == "float32":
        values = rng.normal(size=shape).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        values = rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, shape).astype(dtype)
    return np.where(rng.random(shape) < density, values, np.zeros((), values.dtype)).astype(dtype)


def _channel_fill(shape, zps, axis):
    view = [1] * len(shape)
    view[axis] = len(zps)
    return np.broadcast_to(np.asarray(zps).reshape(view), shape)


# --------------------------------------------------------------------------- encoder round trips


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 9, 13, 64, 1001])
def test_round_trip_odd_sizes(n, dtype):
    values = _sparse((n,), dtype, 0.3, seed=n)
    enc = encode_pruning(values)
    assert len(enc.encoded) == -(-n // 8)
    assert enc.ancillary[:DCM_BYTES] == bytes([2, 1, 0, 0, 1]) + bytes(11)
    assert enc.payload_bytes == pruning_payload_bytes(values)
    back = decode_pruning(enc.encoded, enc.ancillary, (n,), dtype)
    assert back.dtype == values.dtype and back.tobytes() == values.tobytes()


def test_bitmap_is_msb_first_in_c_order():
    values = np.array([[5, 0, 0, 0], [0, 0, 0, 0], [7, 0, 0, 3]], np.int8)
    enc = encode_pruning(values)
    assert enc.encoded == bytes([0b1000_0000, 0b1001_0000])
    assert enc.ancillary[DCM_BYTES:] == bytes([5, 7, 3])


def test_all_zeros_and_no_zeros():
    zeros = np.zeros((3, 5), np.int16)
    enc = encode_pruning(zeros)
    assert enc.encoded == bytes(2) and len(enc.ancillary) == DCM_BYTES
    assert np.array_equal(decode_pruning(enc.encoded, enc.ancillary, zeros.shape, "int16"), zeros)
    full = np.arange(1, 12, dtype=np.int32)
    enc = encode_pruning(full)
    assert enc.encoded == bytes([0xFF, 0b1110_0000])           # padding bits are zero
    assert np.frombuffer(enc.ancillary[DCM_BYTES:], "<i4").tolist() == full.tolist()
    assert np.array_equal(decode_pruning(enc.encoded, enc.ancillary, full.shape, "int32"), full)


def test_float_zero_is_a_bit_pattern():
    """The kernel copies bits: -0.0 and NaN are values to keep, only +0.0 is the zero point."""
    values = np.array([0.0, -0.0, np.nan, 1.5], np.float32)
    enc = encode_pruning(values)
    assert enc.encoded == bytes([0b0111_0000])
    assert decode_pruning(enc.encoded, enc.ancillary, (4,), "float32").tobytes() == values.tobytes()


@pytest.mark.parametrize("axis", [0, 2])
def test_per_channel_zero_points(axis):
    shape = (4, 3, 5)
    zps = list(range(-2, -2 + shape[axis]))
    channels = kernel_channels(shape, "int8", scales=shape[axis], zero_points=zps, quantized_dimension=axis)
    assert channels == Channels(shape[axis], axis, tuple(zps))
    rng = np.random.default_rng(axis)
    fill = _channel_fill(shape, zps, axis)
    values = np.where(rng.random(shape) < 0.3, rng.integers(-128, 128, shape), fill).astype(np.int8)
    enc = encode_pruning(values, channels)
    kept = np.unpackbits(np.frombuffer(enc.encoded, np.uint8))[:values.size].astype(bool)
    assert np.array_equal(kept, (values != fill).ravel())          # a 0 in a channel of zero point 1 is kept
    assert np.array_equal(decode_pruning(enc.encoded, enc.ancillary, shape, "int8", channels), values)


def test_kernel_channel_rules():
    assert kernel_channels((8, 3), "int8") == Channels(1, None, (0,))
    assert kernel_channels((8, 3), "int8", scales=8, zero_points=[0] * 8) == Channels(8, 0, (0,))
    assert kernel_channels((8, 3), "int8", scales=1, zero_points=[-128]) == Channels(1, None, (-128,))
    assert kernel_channels((8,), "int32", scales=8, zero_points=[0] * 8) == Channels(8, 0, (0,))
    with pytest.raises(ModelError, match="axis 0 or the last axis"):
        kernel_channels((2, 3, 4), "int8", scales=3, zero_points=[0] * 3, quantized_dimension=1)
    with pytest.raises(ModelError, match="axis 0 or the last axis"):   # one channel on the last axis
        kernel_channels((2, 1), "int8", scales=1, zero_points=[0], quantized_dimension=1)
    with pytest.raises(ModelError, match="zero points of 0 outside int8"):
        kernel_channels((4,), "int16", scales=1, zero_points=[3])
    with pytest.raises(ModelError, match="cannot produce"):
        kernel_channels((4,), "uint8")
    with pytest.raises(ModelError, match="does not match the tensor's shape"):
        kernel_channels((4, 2), "int8", scales=3, zero_points=[0] * 3)


def test_lut_reference_decoder():
    """Upstream's packing (big-endian indices, one table per channel, stride = most values in a channel)."""
    values = np.array([[1, 1, 9, 9, 1], [4, 4, 4, 4, 4], [2, 3, 5, 7, 2]], np.int8)
    channels = Channels(3, 0, (0,))
    assert lut_shape(values, channels) == (2, 4)
    indices = bytes([0b00_00_01_01, 0b00_00_00_00, 0b00_00_00_01, 0b10_11_00_00])
    tables = bytes([1, 9, 0, 0, 4, 0, 0, 0, 2, 3, 5, 7])
    ancillary = bytes([0, 1, 0, 0, 1, (0 << 4) | 2, 4]) + bytes(9) + tables
    assert np.array_equal(decode_lut(indices, ancillary, values.shape, "int8", channels), values)
    assert parse_ancillary(indices, ancillary, values.shape, "int8", channels).bit_width == 2


# --------------------------------------------------------------------------- corrupt ancillary data


def _valid():
    values = _sparse((6, 7), "int8", 0.3)
    return values, encode_pruning(values)


@pytest.mark.parametrize("mutate, message", [
    (lambda e, a: (e, a[:10]), "shorter than its header"),
    (lambda e, a: (e, bytes([1]) + a[1:]), "cannot check"),                 # Huffman
    (lambda e, a: (e, bytes([200]) + a[1:]), "cannot check"),               # custom
    (lambda e, a: (e, a[:1] + bytes([2]) + a[2:]), "unsupported version"),
    (lambda e, a: (e, a[:4] + bytes([9]) + a[5:]), "unsupported version"),
    (lambda e, a: (e, a[:-1]), "value table is shorter"),
    (lambda e, a: (e[:-1], a), "bitmap length"),
    (lambda e, a: (bytes([0xFF]) * len(e), a), "value table is shorter"),
])
def test_corrupt_pruning_data_is_a_model_error(mutate, message):
    values, enc = _valid()
    encoded, ancillary = mutate(enc.encoded, enc.ancillary)
    with pytest.raises(ModelError, match=message):
        decode_reference(encoded, ancillary, values.shape, "int8")


def test_corrupt_lut_data_is_a_model_error():
    header = bytes([0, 1, 0, 0, 1, 2, 2]) + bytes(9)
    with pytest.raises(ModelError, match="impossible bit width"):
        parse_ancillary(bytes(1), header[:5] + bytes([0]) + header[6:] + bytes(2), (4,), "int8")
    with pytest.raises(ModelError, match="points past its value table"):
        parse_ancillary(bytes([0b11_000000]), header + bytes(2), (4,), "int8")     # index 3, stride 2
    with pytest.raises(ModelError, match="tables are shorter"):
        parse_ancillary(bytes(1), header + bytes(1), (4,), "int8")
    with pytest.raises(ModelError, match="indices are shorter"):
        parse_ancillary(b"", header + bytes(2), (4,), "int8")


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_ancillary_data_never_crashes(seed):
    """Flipped bytes and truncations: a DecodeInfo or a ModelError, never anything else."""
    values, enc = _valid()
    rng = np.random.default_rng(seed)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(enc.ancillary if rng.random() < 0.7 else
                         bytes([0, 1, 0, 0, 1, int(rng.integers(256)), int(rng.integers(256))]) + bytes(9) + bytes(40))
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        data = data[:int(rng.integers(len(data) + 1))] if rng.random() < 0.3 else data
        bitmap = enc.encoded if rng.random() < 0.5 else bytes(
            rng.integers(0, 256, len(enc.encoded) + int(rng.integers(-1, 2)), dtype=np.uint8))
        try:
            decode_reference(bitmap, bytes(data), values.shape, "int8")
            outcomes["decoded"] += 1
        except ModelError:
            outcomes["refused"] += 1
    assert outcomes["decoded"] and outcomes["refused"]


# --------------------------------------------------------------------------- against TFLM's kernels


def _upstream():
    pytest.importorskip("tflite_micro")
    from tflite_micro.tensorflow.lite.micro.compression import compressor, decode_insert
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
    return me, fb, decode_insert, compressor


_TYPES = {"int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "float32": "FLOAT32", "bool": "BOOL"}


def _decoded_output_model(values, result, *, zps=None, axis=None):
    """A model whose only op is a DECODE of `values`, its output the model's output: TFLM decodes, we read it."""
    me, fb, decode_insert, compressor = _upstream()
    quant = None if zps is None else me.Quantization(scales=[0.5] * len(zps), zero_points=[int(z) for z in zps],
                                                      axis=axis)
    x = me.Tensor(shape=(1,), dtype=fb.TensorType.INT8, name="x")
    c = me.Tensor(shape=values.shape, dtype=getattr(fb.TensorType, _TYPES[values.dtype.name]), data=values,
                  quantization=quant, name="c")
    model = me.Model()
    model.add_subgraph(tensors=[x, c], inputs=[x], outputs=[c], operators=[])
    decode_insert.insert_decode_operators(model, {(0, 1): compressor.CompressionResult(result.encoded,
                                                                                        result.ancillary)})
    return bytes(model.build())


def _tflm_output(model_bytes):
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=1 << 16)
    interpreter.set_input(np.zeros((1,), np.int8), 0)
    interpreter.invoke()
    return np.array(interpreter.get_output(0))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "float32"])
def test_tflm_pruning_kernel_agrees(dtype):
    values = _sparse((3, 11), dtype, 0.4, seed=3)
    model = _decoded_output_model(values, encode_pruning(values))
    assert _tflm_output(model).tobytes() == values.tobytes()
    [site] = decode_sites(model)
    assert (site.info.method, site.info.elements, site.info.value_count) == ("PRUNING", 33, np.count_nonzero(values))
    assert reference_decode_all(model)[(0, site.output)].tobytes() == values.tobytes()


@pytest.mark.parametrize("shape, axis", [((3, 5), 0), ((2, 3, 4), 2), ((13,), None)])
def test_tflm_pruning_kernel_per_channel_zero_points(shape, axis):
    rng = np.random.default_rng(len(shape))
    n = shape[axis] if axis is not None else 1
    zps = rng.integers(-5, 6, n)
    fill = _channel_fill(shape, zps, axis) if axis is not None else np.full(shape, zps[0])
    values = np.where(rng.random(shape) < 0.5, fill, rng.integers(-128, 128, shape)).astype(np.int8)
    channels = kernel_channels(shape, "int8", scales=n, zero_points=zps, quantized_dimension=axis or 0)
    model = _decoded_output_model(values, encode_pruning(values, channels), zps=zps, axis=axis)
    assert np.array_equal(_tflm_output(model), values)
    assert np.array_equal(reference_decode_all(model)[(0, decode_sites(model)[0].output)], values)


def test_tflm_lut_kernel_agrees_with_reference_decoder():
    me, _, _, _ = _upstream()
    from tflite_micro.tensorflow.lite.micro.compression import lut, spec

    rng = np.random.default_rng(7)
    values = rng.choice(np.array([-3, 0, 5, 9, 17], np.int8), size=(4, 9))
    tensor = me.Tensor(shape=values.shape, dtype=9, data=values)
    result = lut.LutCompressor().compress(tensor, spec.LookUpTableCompression(3, spec.PerTensor()))
    model = _decoded_output_model(values, EncodedTensor("LUT", result.encoded_data, result.ancillary_data))
    assert np.array_equal(_tflm_output(model), values)
    [site] = decode_sites(model)
    assert (site.info.method, site.info.bit_width) == ("LUT", 3)
    assert np.array_equal(reference_decode_all(model)[(0, site.output)], values)


def test_corrupt_decode_in_a_file_is_a_model_error():
    values = _sparse((4, 8), "int8", 0.5)
    enc = encode_pruning(values)
    model = _decoded_output_model(values, enc)
    at = model.index(enc.ancillary)
    broken = model[:at + DCM_BYTES] + bytes(len(enc.ancillary) - DCM_BYTES) + model[at + len(enc.ancillary):]
    assert decode_sites(broken)                                   # zeroed values: still a valid table
    truncated_table = model[:at] + bytes([2, 1, 0, 0, 7]) + model[at + 5:]
    with pytest.raises(ModelError, match="unsupported version"):
        decode_sites(truncated_table)
    huffman = model[:at] + bytes([1]) + model[at + 1:]
    with pytest.raises(ModelError, match="cannot check"):
        decode_sites(huffman)


# --------------------------------------------------------------------------- the per-tensor rule


def _fc_model(weights, bias):
    """input (1, k) -> FULLY_CONNECTED(weights (n, k) int8 per-channel, bias (n,) int32) -> output: no TF."""
    me, fb, _, _ = _upstream()
    n, k = weights.shape
    x = me.Tensor(shape=(1, k), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.05, 0), name="x")
    w = me.Tensor(shape=(n, k), dtype=fb.TensorType.INT8, data=weights,
                  quantization=me.Quantization([0.01] * n, [0] * n, axis=0), name="weights")
    b = me.Tensor(shape=(n,), dtype=fb.TensorType.INT32, data=bias,
                  quantization=me.Quantization([0.0005] * n, [0] * n, axis=0), name="bias")
    y = me.Tensor(shape=(1, n), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.1, 3), name="y")
    op = me.Operator(opcode=fb.BuiltinOperator.FULLY_CONNECTED, inputs=[x, w, b], outputs=[y])
    model = me.Model()
    model.add_subgraph(tensors=[x, w, b, y], inputs=[x], outputs=[y], operators=[op])
    return bytes(model.build())


def _fc(n=32, k=48, density=0.2):
    rng = np.random.default_rng(1)
    weights = np.where(rng.random((n, k)) < density, rng.integers(-127, 128, (n, k)), 0).astype(np.int8)
    return _fc_model(weights, rng.integers(-500, 500, n).astype(np.int32)), weights


def test_growing_tensor_stays_dense_and_sparse_weights_are_compressed():
    model, weights = _fc()
    plan = choose_compression(model)
    by_name = {t.name: t for t in plan.tensors}
    assert by_name["weights"].method == "PRUNING" and by_name["weights"].file_saving >= 64
    assert by_name["bias"].method == "dense" and "would store" in by_name["bias"].reason
    assert plan.file_bytes < len(model) and plan.saved_bytes == len(model) - plan.file_bytes
    forced = compress_model(model, {"bias": "prune"})             # what keeping the bias dense avoids
    assert len(forced) > len(model)
    [site] = decode_sites(plan.model)
    assert reference_decode_all(plan.model)[(0, site.output)].tobytes() == weights.tobytes()


def test_encoded_tensors_lose_their_quantization():
    """decode_insert leaves the per-channel scales on the UINT8 encoded tensor; they must go (12 B a channel)."""
    from edgesparse.tflite.edit import load_model
    from edgesparse.tflite.graph import load_graph

    model, _ = _fc()
    data = compress_model(model, {"weights": "PRUNING"})
    compressed = load_graph(data)
    [site] = decode_sites(compressed)
    assert compressed.tensors[site.encoded].quantization is None
    assert compressed.tensors[site.ancillary].quantization is None
    assert len(compressed.tensors[site.output].quantization.scales) == 32      # the decoded tensor keeps them
    buffers = len(load_model(data).buffers)                                     # none left unreferenced
    assert set(range(buffers)) - {t.buffer for t in compressed.tensors} <= {0}


def test_modes_margin_and_keep_dense():
    model, _ = _fc()
    assert choose_compression(model, "off").model == model
    assert all(t.method == "dense" for t in choose_compression(model, "lut").tensors)   # > 128 values/channel
    assert not choose_compression(model, keep_dense=["weights"]).compressed
    assert not choose_compression(model, min_saving_bytes=10**6).compressed
    candidates = {t.name: t for t in compression_candidates(model)}
    assert candidates["weights"].pruning_bytes == -(-32 * 48 // 8) + DCM_BYTES + int(np.count_nonzero(_fc()[1]))


def test_lut_is_chosen_for_few_values_per_channel():
    rng = np.random.default_rng(2)
    weights = rng.choice(np.array([-64, -8, 8, 64], np.int8), size=(16, 64))
    model = _fc_model(weights, np.zeros(16, np.int32) + 7)
    plan = choose_compression(model)
    weights_choice = next(t for t in plan.tensors if t.name == "weights")
    assert (weights_choice.method, weights_choice.lut_bits) == ("LUT", 2)
    [site] = decode_sites(plan.model)
    assert site.info.channels == 16
    assert reference_decode_all(plan.model)[(0, site.output)].tobytes() == weights.tobytes()
    assert _run_fc(plan.model).tobytes() == _run_fc(model).tobytes()


def _run_fc(model_bytes):
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=1 << 16)
    outs = []
    for x in np.random.default_rng(5).integers(-128, 128, (8, 1, 64), dtype=np.int8):
        interpreter.set_input(x, 0)
        interpreter.invoke()
        outs.append(np.array(interpreter.get_output(0)))
    return np.concatenate(outs)


def test_decode_op_name_is_the_one_tflm_registers():
    assert DECODE_OP == "TFLM_DECODE"


def test_analysis_half_needs_no_tflite_micro(tmp_path):
    """On a Pi (no tflite-micro wheel) the formats, the parser and the candidates work; building says why not."""
    import subprocess
    import sys

    model, _ = _fc()
    path = tmp_path / "fc.tflite"
    path.write_bytes(compress_model(model, {"weights": "PRUNING"}))
    (tmp_path / "dense.tflite").write_bytes(model)
    code = f"""
import sys
sys.modules["tflite_micro"] = None
from edgesparse.errors import MissingDependency
from edgesparse.tflite.decode import decode_sites, reference_decode_all
from edgesparse.tflite.decode_compress import choose_compression, compression_candidates
data = open({str(path)!r}, "rb").read()
assert len(decode_sites(data)) == 1 and len(reference_decode_all(data)) == 1
dense = open({str(tmp_path / "dense.tflite")!r}, "rb").read()
assert any(c.method == "PRUNING" for c in compression_candidates(dense))
try:
    choose_compression(dense)
except MissingDependency as exc:
    print("missing:", exc.fix)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "missing: pip install tflite-micro" in done.stdout
