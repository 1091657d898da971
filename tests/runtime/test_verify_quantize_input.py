"""runtime.verify.quantize_input: the one rule that turns samples into what a model's input tensor takes.

(Kept beside tests/runtime/test_verify.py, which another helper owned while this was written; it may move there.)
"""

import numpy as np

from edgesparse.runtime.verify import quantize_input


def test_float_samples_are_rounded_shifted_and_clipped_to_the_integer_type():
    x = np.array([[-1.0, -0.5, 0.0, 0.0039, 0.5, 2.0]], np.float32)
    q = quantize_input(x, "int8", 1 / 128, -1)
    assert q.dtype == np.int8 and q.tolist() == [[-128, -65, -1, -1, 63, 127]]
    assert quantize_input(np.array([300.0, -5.0]), np.uint8, 1.0, 0).tolist() == [255, 0]


def test_data_already_in_the_tensor_type_or_a_tensor_without_scale_passes_unchanged():
    raw = np.array([-128, 5, 127], np.int8)
    assert quantize_input(raw, "int8", 0.02, 3).tolist() == [-128, 5, 127]   # not scaled twice
    assert quantize_input(np.array([1.7, -2.2]), "int8", 0.0, 0).tolist() == [1, -2]   # a cast, no scale
    assert quantize_input(np.array([7, 8], np.uint8), "int8", 0.5, 0).tolist() == [14, 16]   # other ints scale


def test_float_tensors_take_the_samples_cast():
    q = quantize_input(np.array([[0.25, 3]], np.float64), np.float32, 0.5, 9)
    assert q.dtype == np.float32 and q.tolist() == [[0.25, 3.0]]
