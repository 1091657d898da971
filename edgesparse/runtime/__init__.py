"""Runs .tflite files in the interpreters devices use; imports no TensorFlow.

`litert` is the one LiteRT adapter (XNNPACK with a builtin-kernel fallback),
`tflm` the one TFLite Micro adapter (one arena policy), `capture` reads what
their C++ code prints, `isolate` runs interpreter work in a child process (a
crash on a user's file is a clean error), `tflm_decode` proves a DECODE-compressed
model bitwise against the uncompressed one in TFLM; `verify` scores an artifact's
predictions and `measure` times it. Import the module you need:
`from edgesparse.runtime import verify`.
Raises `MissingDependency`, `ModelError`, `DataError`, `VerificationError` (see each module).
"""

__all__ = ["capture", "isolate", "litert", "measure", "tflm", "tflm_decode", "vela", "verify"]
