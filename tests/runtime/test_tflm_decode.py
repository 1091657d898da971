"""A pruned int8 Keras model, DECODE-compressed, in TFLite Micro: bitwise-identical outputs, decoded tensors
equal to the weights (read back with preserve-all-tensors), the arena TFLM records, probed in child processes."""

import numpy as np
import pytest
from support.models import pruned_cnn_int8

from edgesparse.runtime.tflm_decode import (
    arena_fits,
    decoded_tensors,
    measured_arena,
    random_inputs,
    smallest_arena,
    verify_compressed,
)
from edgesparse.tflite.decode import decode_sites
from edgesparse.tflite.decode_compress import (
    choose_compression,
    compress_model,
    compression_candidates,
    decoded_originals,
)

pytest.importorskip("tflite_micro")


@pytest.fixture(scope="module")
def pruned_int8():
    """Conv 8x3x3 -> depthwise 3x3 -> Dense 512x64 -> Dense 4, every kernel 80 % zero, int8 (tiny: ~40 KB)."""
    return pruned_cnn_int8(samples=32, dense=(64,), classes=4)[0]


@pytest.mark.tensorflow
@pytest.mark.slow
def test_compressed_model_is_bitwise_the_same_in_tflm(pruned_int8):
    plan = choose_compression(pruned_int8)
    assert plan.file_bytes < 0.6 * len(pruned_int8), plan.tensors
    assert any(t.dense_bytes == 512 * 64 for t in plan.compressed)          # the FC kernel pays
    assert [t.shape for t in plan.compressed] == [(64, 512)], plan.tensors  # small kernels grow the file
    samples = random_inputs(pruned_int8, 4, seed=1)
    proof = verify_compressed(pruned_int8, plan.model, samples, random_samples=12)
    assert (proof.samples, proof.decoded_tensors) == (16, len(plan.compressed))
    assert proof.arena_dense["total"] > 0
    assert proof.arena_added_bytes >= plan.largest_decoded_bytes - 4096   # the decoded FC kernel lives in the arena


@pytest.mark.tensorflow
@pytest.mark.slow
def test_decoded_tensors_read_back_equal_the_weights(pruned_int8):
    from edgesparse.tflite.edit import constant_tensor

    compressed = compress_model(pruned_int8, {t.index: "PRUNING" for t in choose_compression(pruned_int8).compressed})
    decoded = decoded_tensors(compressed, random_inputs(pruned_int8, 1))
    origins = decoded_originals(pruned_int8, compressed)
    assert decoded and set(decoded) == {(0, s.output) for s in decode_sites(compressed)}
    for key, values in decoded.items():
        assert values.tobytes() == constant_tensor(pruned_int8, origins[key]).tobytes()


@pytest.mark.tensorflow
@pytest.mark.slow
def test_arena_is_probed_in_child_processes(pruned_int8):
    plan = choose_compression(pruned_int8)
    recorded = measured_arena(plan.model)["total"]
    assert arena_fits(plan.model, recorded)
    assert not arena_fits(plan.model, recorded // 4)                     # a failure (or crash) is only False
    assert smallest_arena(plan.model) == recorded


@pytest.mark.tensorflow
@pytest.mark.slow
def test_alternate_decompression_memory_takes_the_decoded_tensor_out_of_the_arena(pruned_int8):
    """With alt_decompression_memory_size = the largest decoded tensor, the arena is the dense one plus state."""
    plan = choose_compression(pruned_int8)
    dense = measured_arena(pruned_int8)["total"]
    alt = plan.largest_decoded_bytes
    with_alt = measured_arena(plan.model, alt_decompression_bytes=alt)["total"]
    assert dense < with_alt < dense + 1024 < measured_arena(plan.model)["total"]
    assert not arena_fits(plan.model, with_alt, alt_decompression_bytes=alt - 1)


@pytest.fixture(scope="module")
def every_kernel_pruning(pruned_int8):
    """The conv, depthwise and FC kernels each PRUNING-compressed: three DECODE ops, the FC's last."""
    kernels = [t.index for t in compression_candidates(pruned_int8) if t.pruning_bytes and len(t.shape) > 1
               and t.dtype == "int8" and t.shape[0] != 4]   # not the classifier: its DECODE would run last
    return compress_model(pruned_int8, {index: "PRUNING" for index in kernels})


def _largest_decoded(model):
    return max(int(np.prod(site.shape)) for site in decode_sites(model))   # int8: one byte per element


@pytest.mark.tensorflow
@pytest.mark.slow
def test_proof_is_repeated_with_alternate_decompression_memory(pruned_int8, every_kernel_pruning):
    """A device with decompression memory runs the model that way: outputs and the held tensor proven with it."""
    alt = _largest_decoded(every_kernel_pruning)
    samples = random_inputs(pruned_int8, 3, seed=2)
    proof = verify_compressed(pruned_int8, every_kernel_pruning, samples, random_samples=5,
                              alt_decompression_bytes=alt)
    assert (proof.samples, proof.decoded_tensors) == (8, 3)
    assert (proof.alt_decompression_bytes, proof.alt_samples, proof.alt_decoded_tensors) == (alt, 8, 1)
    assert proof.arena_compressed_alt["total"] < proof.arena_compressed["total"] - alt // 2
    without = verify_compressed(pruned_int8, every_kernel_pruning, samples, random_samples=5)
    assert (without.alt_decompression_bytes, without.alt_samples, without.arena_compressed_alt) == (0, 0, {})


@pytest.mark.tensorflow
@pytest.mark.slow
def test_with_alternate_memory_only_the_last_decode_is_read_back_and_it_equals_the_weights(pruned_int8,
                                                                                            every_kernel_pruning):
    from edgesparse.tflite.edit import constant_tensor

    sites = decode_sites(every_kernel_pruning)
    held = decoded_tensors(every_kernel_pruning, random_inputs(pruned_int8, 1),
                           alt_decompression_bytes=_largest_decoded(every_kernel_pruning))
    last = max(sites, key=lambda site: site.op)
    assert len(sites) == 3 and set(held) == {(0, last.output)}
    origins = decoded_originals(pruned_int8, every_kernel_pruning)
    assert held[(0, last.output)].tobytes() == constant_tensor(pruned_int8, origins[(0, last.output)]).tobytes()


@pytest.mark.tensorflow
@pytest.mark.slow
def test_too_little_alternate_memory_decodes_into_the_arena_and_still_proves(pruned_int8, every_kernel_pruning):
    """TFLM does not fail with a decompression memory smaller than a decoded tensor: that tensor goes to the arena."""
    proof = verify_compressed(pruned_int8, every_kernel_pruning, random_samples=2,
                              alt_decompression_bytes=_largest_decoded(every_kernel_pruning) - 1)
    assert proof.alt_samples == 2 and proof.alt_decoded_tensors == 1
    assert proof.arena_compressed_alt["total"] >= proof.arena_compressed["total"]


@pytest.mark.slow
def test_mlperf_visual_wake_words_compresses_and_stays_bitwise(mlperf_dir):
    """The unpruned MLPerf Tiny VWW model already has mostly-zero 1x1 kernels: PRUNING pays on 8 of them."""
    model = (mlperf_dir / "visual_wake_words" / "vww_96_int8.tflite").read_bytes()
    plan = choose_compression(model)
    assert plan.file_bytes < 0.6 * len(model) and len(plan.compressed) >= 4
    proof = verify_compressed(model, plan.model, random_samples=4)
    assert proof.decoded_tensors == len(plan.compressed)
