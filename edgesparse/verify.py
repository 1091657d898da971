"""Run artifacts in the interpreter the device uses: LiteRT or TFLite Micro.

CONTRACT:
    run_tflite(model_bytes, x, *, runtime="litert"|"tflm") -> RunResult
        RunResult: outputs (float ndarray, dequantized), interpreter (str),
                   kernels (list[str]: what ran, e.g. "XNNPACK refused ...; builtin kernels used"),
                   arena_bytes (int | None)
    verify_artifact(model_bytes, x_val, y_val, *, runtime, reference_predictions) -> VerificationResult
        VerificationResult: accuracy, agreement (top-1 vs reference), interpreter, kernels, arena_bytes
"""
