"""Graph overhead: what `strip_overhead` removes is never read, proved in the interpreters themselves.

Small int8 Keras models (conv, depthwise conv, dense; one with a per-tensor dense layer) run in TFLite Micro
before and after stripping: outputs bitwise identical on real and random inputs, the same arena; LiteRT-stripped
files keep their input/output names and signature; a DECODE-compressed file strips and still verifies, in either
order. Each rule that keeps something is shown to matter: removing it anyway makes the interpreter refuse the file.
"""

import numpy as np
import pytest
from support.models import pruned_cnn

from edgesparse.errors import ModelError
from edgesparse.runtime.tflm_decode import measured_arena, random_inputs, verify_compressed
from edgesparse.runtime.verify import run_tflite
from edgesparse.tflite.decode import decode_sites
from edgesparse.tflite.decode_compress import choose_compression
from edgesparse.tflite.edit import load_model, save_model
from edgesparse.tflite.graph import load_graph
from edgesparse.tflite.strip import ITEMS, strip_overhead

pytestmark = pytest.mark.tensorflow
pytest.importorskip("tflite_micro")


def _keras_model():
    """Conv 8x3x3 -> depthwise 3x3 stride 2 -> Dense 128x64 -> Dense 4, kernels 80 % zero (so DECODE pays on the FC),
    biases drawn (so a rewritten bias would show in the outputs)."""
    return pruned_cnn(dense=(64,), classes=4, dw_strides=2, bias_std=0.1)


def _convert(model, x, *, per_channel_dense: bool) -> bytes:
    from edgesparse.pipeline.tf_env import import_tf

    tf, _ = import_tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    return converter.convert()


@pytest.fixture(scope="module")
def models():
    """{"per_channel" | "per_tensor_fc": int8 .tflite}, and float inputs to run them on."""
    x = np.random.default_rng(1).normal(size=(24, 8, 8, 1)).astype(np.float32)
    model = _keras_model()
    return {"per_channel": _convert(model, x, per_channel_dense=True),
            "per_tensor_fc": _convert(model, x, per_channel_dense=False)}, x


def _same_in_tflm(original: bytes, stripped: bytes, x: np.ndarray) -> None:
    """Bitwise-identical outputs on the float inputs (quantized by run_tflite) and 16 random int8 inputs."""
    for inputs in (x, random_inputs(original, 16, seed=3)):
        before, after = run_tflite(original, inputs, runtime="tflm"), run_tflite(stripped, inputs, runtime="tflm")
        assert after.outputs.tobytes() == before.outputs.tobytes()


def _tflm_prepare(model_bytes: bytes, progress) -> None:
    from edgesparse.runtime.tflm import open_interpreter

    open_interpreter(model_bytes)


def _tflm_refuses(model_bytes: bytes, message: str) -> None:
    """TFLM itself (not edgesparse's checks) refuses the file cleanly, in a child process."""
    from edgesparse.errors import EdgesparseError
    from edgesparse.runtime.isolate import run_isolated

    with pytest.raises(EdgesparseError, match=message):
        run_isolated(_tflm_prepare, model_bytes, label="TFLite Micro", where="test")


def _quantization(model_bytes: bytes) -> dict[int, tuple]:
    model = load_model(model_bytes)
    return {i: None if t.quantization is None or t.quantization.scale is None
            else (list(t.quantization.scale), list(t.quantization.zeroPoint))
            for i, t in enumerate(model.subgraphs[0].tensors)}


def _op_tensors(model_bytes: bytes, op_name: str, position: int) -> list[int]:
    graph = load_graph(model_bytes)
    return [op.inputs[position] for op in graph.ops if op.opcode == op_name]


def test_tflm_strip_is_bitwise_identical_in_tflm(models):
    (files, x) = models
    original = files["per_channel"]
    result = strip_overhead(original, "tflm")
    assert [i.what for i in result.items] == list(ITEMS["tflm"])
    assert all(i.saved_bytes > 0 for i in result.items), result.items
    assert sum(i.saved_bytes for i in result.items) + result.rewrite_bytes == result.saved_bytes
    assert result.file_bytes < len(original)
    load_graph(result.model, validate=True)
    _same_in_tflm(original, result.model, x)
    assert measured_arena(result.model) == measured_arena(original)   # the allocator rebuilds the same arrays


def test_what_tflm_strip_keeps_and_removes(models):
    (files, _) = models
    original = files["per_channel"]
    stripped = strip_overhead(original, "tflm").model
    before, after = load_model(original), load_model(stripped)
    sg_b, sg_a = before.subgraphs[0], after.subgraphs[0]
    io = set(sg_b.inputs) | set(sg_b.outputs)
    assert [sg_a.tensors[i].name for i in io] == [sg_b.tensors[i].name for i in io]
    assert all(t.name is None for i, t in enumerate(sg_a.tensors) if i not in io)
    sig_b, sig_a = before.signatureDefs[0], after.signatureDefs[0]
    assert [(s.name, s.tensorIndex) for s in sig_a.inputs + sig_a.outputs] == \
           [(s.name, s.tensorIndex) for s in sig_b.inputs + sig_b.outputs]
    assert not after.metadata and all(t.shapeSignature is None for t in sg_a.tensors)
    q_b, q_a = _quantization(original), _quantization(stripped)
    biases = {i for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") for i in _op_tensors(original, op, 2)}
    for i, q in q_b.items():
        if i in biases:
            assert q_a[i] is None                                    # conv/dw/per-channel FC biases
        elif q is not None:
            assert q_a[i][0] == q[0]                                 # every scale stays
            assert q_a[i][1] == (q[1][:1] if len(set(q[1])) == 1 else q[1])
    assert any(len(q[0]) > 1 for q in q_a.values() if q)            # per-channel scales, one zero point


def test_per_tensor_fc_keeps_its_bias_scale_which_tflm_reads(models):
    (files, x) = models
    original = files["per_tensor_fc"]
    fc_biases = _op_tensors(original, "FULLY_CONNECTED", 2)
    stripped = strip_overhead(original, "tflm").model
    assert all(_quantization(stripped)[i] is not None for i in fc_biases)
    _same_in_tflm(original, stripped, x)
    model = load_model(stripped)      # TFLM reads it: a wrong bias scale fails Prepare (kernel_util.cc); a missing
    for i in fc_biases:               # one reads as 0 and passes only while input x filter / output scale <= 0.02
        model.subgraphs[0].tensors[i].quantization.scale = [1e3]
    _tflm_refuses(save_model(model), "scale_diff / output_scale <= 0.02")


def test_zero_points_need_at_least_one_value_in_tflm(models):
    (files, _) = models
    model = load_model(strip_overhead(files["per_channel"], "tflm").model)
    conv_filter = _op_tensors(files["per_channel"], "CONV_2D", 1)[0]
    model.subgraphs[0].tensors[conv_filter].quantization.zeroPoint = []   # TFLM then sees no quantization
    _tflm_refuses(save_model(model), "kTfLiteAffineQuantization")


def test_litert_strip_keeps_names_signature_and_quantization(models):
    from ai_edge_litert.interpreter import Interpreter

    (files, x) = models
    original = files["per_channel"]
    result = strip_overhead(original, "litert")
    assert [i.what for i in result.items] == ["tensor names"] and result.saved_bytes > 0
    assert _quantization(result.model) == _quantization(original)
    load_graph(result.model, validate=True)
    before, after = Interpreter(model_content=original), Interpreter(model_content=result.model)
    for details in ("get_input_details", "get_output_details"):
        assert [d["name"] for d in getattr(after, details)()] == [d["name"] for d in getattr(before, details)()]
    assert after.get_signature_list() == before.get_signature_list()
    sample = random_inputs(original, 1, seed=5)
    key = next(iter(before.get_signature_list()["serving_default"]["inputs"]))
    outputs = [it.get_signature_runner("serving_default")(**{key: sample}) for it in (before, after)]
    assert [v.tobytes() for v in outputs[1].values()] == [v.tobytes() for v in outputs[0].values()]
    for inputs in (x, random_inputs(original, 16, seed=3)):
        assert run_tflite(result.model, inputs).outputs.tobytes() == run_tflite(original, inputs).outputs.tobytes()


def test_litert_refuses_the_tflm_strip(models):
    """LiteRT's loader wants as many zero points as scales: the TFLM-only items must stay TFLM-only."""
    from ai_edge_litert.interpreter import Interpreter

    (files, _) = models
    with pytest.raises((RuntimeError, ValueError), match="zero_point"):
        Interpreter(model_content=strip_overhead(files["per_channel"], "tflm").model)


def test_strip_is_idempotent_and_items_can_be_kept(models):
    (files, _) = models
    original = files["per_channel"]
    once = strip_overhead(original, "tflm")
    again = strip_overhead(once.model, "tflm")
    assert again.model == once.model and again.items == [] and again.saved_bytes == 0
    for item in ITEMS["tflm"]:
        partial = strip_overhead(original, "tflm", keep=[item])
        assert item not in [i.what for i in partial.items] and partial.file_bytes > once.file_bytes
    with pytest.raises(ModelError):
        strip_overhead(original, "edgetpu")
    with pytest.raises(ModelError):
        strip_overhead(original, "litert", keep=["zero points"])


def test_compressed_file_strips_in_either_order_and_verifies(models):
    (files, x) = models
    original = files["per_channel"]
    samples = random_inputs(original, 8, seed=7)
    plan = choose_compression(original)
    assert plan.compressed, plan.tensors
    after = strip_overhead(plan.model, "tflm")                               # compress, then strip
    assert after.items and after.file_bytes < plan.file_bytes
    assert verify_compressed(original, after.model, samples, random_samples=8).decoded_tensors == len(plan.compressed)
    sites = decode_sites(after.model)
    names = load_model(after.model).subgraphs[0].tensors
    assert sites and all(names[s.output].name is None for s in sites)   # DECODE outputs and inputs: no names
    before = choose_compression(strip_overhead(original, "tflm").model)      # strip, then compress
    assert [t.index for t in before.compressed] == [t.index for t in plan.compressed]
    assert strip_overhead(before.model, "tflm").items == []                  # nothing left to strip
    assert abs(before.file_bytes - after.file_bytes) <= 64
    verify_compressed(original, before.model, samples, random_samples=8)
    load_graph(before.model, validate=True)
    _same_in_tflm(original, before.model, x)
