"""TFLiteConverter: quantization modes, per-tensor sparse encoding, the TFLM variant.

CONTRACT:
    QUANTIZE_MODES = ("int8", "dynamic", "float16", "none")
    convert_keras(model, *, quantize, representative=None, sparse=False) -> bytes
    build_artifact(model, dataset, *, quantize, profile) -> ConversionResult
    ConversionResult: artifact (bytes), dense_float32 (bytes), dense_int8 (bytes),
                      tensors (list[TensorEncoding]), has_densify (bool), notes (list[str])
"""
