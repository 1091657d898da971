"""A report.json "compression" section in the shape `edgesparse build` writes for a TFLite Micro build.

Its figures are the digits demo's at 0.8 sparsity on nrf52840 (docs/compression.md: 80,536 B dense int8,
33,744 B compressed, arena 6,784 -> 70,304 B, 70,144 elements decoded per invoke), so the views are tested
on realistic magnitudes. `kept_for_ram` gives the variant whose RAM budget sent the largest tensor back.
"""

import copy

_FC1 = {"name": "digits_cnn/fc1/MatMul;digits_cnn/fc1/BiasAdd", "shape": [128, 512], "dtype": "int8",
        "method": "PRUNING", "dense_bytes": 65_536, "encoded_bytes": 21_315, "saved_bytes": 43_808,
        "arena_added_bytes": 65_536, "decoded_elements": 65_536,
        "reason": "the file shrinks by 43,808 B with PRUNING"}
_CONV2 = {"name": "digits_cnn/conv2/Conv2D", "shape": [32, 3, 3, 16], "dtype": "int8", "method": "PRUNING",
          "dense_bytes": 4_608, "encoded_bytes": 1_514, "saved_bytes": 2_984, "arena_added_bytes": 4_608,
          "decoded_elements": 4_608, "reason": "the file shrinks by 2,984 B with PRUNING"}
_CLASSIFIER = {"name": "digits_cnn/classifier/MatMul", "shape": [10, 128], "dtype": "int8", "method": "dense",
               "dense_bytes": 1_280, "encoded_bytes": None, "saved_bytes": 0, "arena_added_bytes": 0,
               "decoded_elements": 0, "reason": "PRUNING would store 1,442 B for 1,280 B"}
_BIAS = {"name": "digits_cnn/fc1/BiasAdd/ReadVariableOp", "shape": [128], "dtype": "int32", "method": "dense",
         "dense_bytes": 512, "encoded_bytes": None, "saved_bytes": 0, "arena_added_bytes": 0,
         "decoded_elements": 0, "reason": "PRUNING would store 544 B for 512 B"}

SECTION = {
    "mode": "auto",
    "applied": True,
    "cluster": None,
    "uncompressed_bytes": 80_536,
    "compressed_bytes": 33_744,
    "saved_bytes": 46_792,
    "dense_int8_bytes": 80_536,
    "ratio_vs_dense_int8": 2.387,
    "overhead": {"saved_bytes": 3_912, "items": [{"what": "tensor names", "saved_bytes": 1_880,
                                                  "detail": "signature and input/output names kept",
                                                  "when": "before DECODE"},
                                                 {"what": "zero points of symmetric int8 weights",
                                                  "saved_bytes": 2_032, "detail": "all zero: TFLM reads one",
                                                  "when": "before DECODE"}],
                 "dense_int8_saved_bytes": 3_912, "note": None},
    "arena": {"uncompressed_measured_bytes": 6_784, "compressed_measured_bytes": 70_304,
              "compressed_estimated_bytes": 70_304, "added_bytes": 63_520},
    "alt_decompression": {"available_bytes": 0, "needed_bytes": 0},
    "decoded_elements_per_invoke": 70_144,
    "decode_ms": 1.234,
    "decode_basis": "assumption: decode cost per element transferred from a host measurement of TFLM's kernel",
    "ram_budget": {"limit_bytes": 131_072, "kept_dense_for_ram": [], "reason": None},
    "tensors": [_CONV2, _FC1, _CLASSIFIER, _BIAS],
    "verification": {"interpreter": "TFLite Micro", "bitwise_identical": True, "samples": 16, "random_samples": 64,
                     "decoded_tensors_equal": 2,
                     "accuracy": "the build's accuracy figures are those of this file: its outputs are bitwise "
                                 "identical to the uncompressed int8 file's on every input compared"},
}


def compression_section(*, kept_for_ram: bool = False, **overrides) -> dict:
    """A fresh copy of SECTION; `kept_for_ram` keeps fc1 dense for a 64 KiB RAM budget, as the build would."""
    section = copy.deepcopy(SECTION)
    if kept_for_ram:
        fc1 = section["tensors"][1]
        fc1.update(method="dense", encoded_bytes=None, saved_bytes=0, arena_added_bytes=0, decoded_elements=0,
                   reason="kept dense for the RAM budget: decoded it would take 65,536 B of arena")
        section.update(compressed_bytes=77_552, saved_bytes=2_984, ratio_vs_dense_int8=1.038,
                       decoded_elements_per_invoke=4_608, decode_ms=0.081,
                       arena={"uncompressed_measured_bytes": 6_784, "compressed_measured_bytes": 11_600,
                              "compressed_estimated_bytes": 11_600, "added_bytes": 4_816},
                       ram_budget={"limit_bytes": 65_536, "kept_dense_for_ram": [fc1["name"]],
                                   "reason": "with it decoded the arena (70,304 B) and the runtime exceed the "
                                             "profile's RAM budget of 65,536 B"})
        section["verification"]["decoded_tensors_equal"] = 1
    section.update(overrides)
    return section
