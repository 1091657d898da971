"""Load a .tflite into the graph IR, and the few facts other packages read from a model file.

Why: `check` and `measure` must run on a Raspberry Pi with only ai-edge-litert
and numpy, and every later stage (estimate, report, runtime, deploy) needs the
same facts: which ops run in which order, what each costs (MACs, bytes moved),
where the bytes of the file go (weights, sparse index arrays, structure) and
which tensors the converter's EXPERIMENTAL_SPARSITY encoded. `load_graph` is
the one reader that validates a file before anything follows its offsets; the
deploy bundles read op names and input/output quantization through it too.
The IR types live in `tflite.ir`, the parser in `tflite.parse`, the per-op
counting in `tflite.analysis`; they are re-exported here.

Counting conventions (docs/graph.md has the full table):
    macs              multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
                      TRANSPOSE_CONV, CONV_3D(_TRANSPOSE), BATCH_MATMUL, recurrent ops
    effective_macs    macs x density of the weight tensor when its source constant is sparse
    elementwise_ops   one per output element for elementwise ops; window reads for pooling;
                      input elements for reductions
    bytes_moved       activation_bytes_in + weight_bytes + activation_bytes_out
    analyzed=False    the op's cost is unknown (custom op, control flow, op not modelled)

Raises: `ModelError` for a missing, unreadable, truncated or corrupt file,
anything that is not a TFLite flatbuffer, and (with `validate=True`) a graph
an interpreter would crash on (`tflite.validate`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from edgesparse.errors import ModelError
from edgesparse.tflite.analysis import analyze_subgraph
from edgesparse.tflite.ir import (
    DimensionMetadata,
    Graph,
    Op,
    Quantization,
    Signature,
    SizeBreakdown,
    Sparsity,
    Subgraph,
    Tensor,
)
from edgesparse.tflite.parse import PARSE_ERRORS, CorruptModel, parse_model
from edgesparse.tflite.schema import FILE_IDENTIFIER
from edgesparse.tflite.validate import validate_graph

__all__ = [
    "FILE_IDENTIFIER",
    "DimensionMetadata",
    "Graph",
    "ModelSource",
    "Op",
    "Quantization",
    "Signature",
    "SizeBreakdown",
    "Sparsity",
    "Subgraph",
    "Tensor",
    "input_shape",
    "io_quantization",
    "load_graph",
    "op_types",
    "validate_graph",
]

ModelSource = bytes | bytearray | memoryview | str | Path
_FIX_CORRUPT = ("Re-export the model with tf.lite.TFLiteConverter, or copy it again: "
                "the file is truncated or corrupted")


def _where(path: Path | None) -> str:
    return str(path) if path is not None else "<in-memory model>"


def load_graph(source: ModelSource, *, validate: bool = False) -> Graph:
    """Parse a .tflite file or its bytes. Raises ModelError for anything that is not a sane TFLite flatbuffer.

    `validate=True` also runs `validate_graph` (tflite.validate): what every
    caller that hands the file to an interpreter asks for.
    """
    path: Path | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        data = _read_file(path)
    else:
        raise ModelError("cannot load a model from this object", expected="bytes or a path to a .tflite",
                         received=type(source).__name__, fix="Pass the .tflite file's path or its bytes")
    where = _where(path)
    _check_header(data, where)
    try:
        graph = parse_model(data, path)
    except ModelError:
        raise
    except CorruptModel as exc:
        raise ModelError("corrupt TFLite flatbuffer", where=where, expected="a consistent TFLite model",
                         received=str(exc), fix=_FIX_CORRUPT) from None
    except PARSE_ERRORS as exc:
        raise ModelError("truncated or corrupt TFLite flatbuffer", where=where,
                         expected="a complete TFLite model",
                         received=f"{_parse_failure(exc)} while reading it ({len(data)} bytes)",
                         fix=_FIX_CORRUPT) from exc
    for sg in graph.subgraphs:
        analyze_subgraph(sg)
    return validate_graph(graph) if validate else graph


def _parse_failure(exc: BaseException) -> str:
    """What went wrong while reading, in words: struct.error's class name is just "error"."""
    if isinstance(exc, struct.error):
        return "a read outside the file"
    return f"{type(exc).__name__} ({str(exc)[:80]})" if str(exc) else type(exc).__name__


def _read_file(path: Path) -> bytes:
    if path.is_dir():
        hint = " (a SavedModel?)" if (path / "saved_model.pb").exists() else ""
        raise ModelError("expected a .tflite file, got a directory", where=str(path),
                         expected="a .tflite flatbuffer", received=f"a directory{hint}",
                         fix="Convert it first (edgesparse build), then pass the .tflite")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError("model file not found", where=str(path), expected="an existing .tflite file",
                         fix="Check the path") from None
    except OSError as exc:
        raise ModelError("cannot read the model file", where=str(path), received=exc.strerror or str(exc),
                         fix="Check the file's permissions") from None


def _guess_file_type(data: bytes) -> str:
    """A short guess of what a non-TFLite file is, for the error message."""
    head = data[:32]
    known = [
        (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
        (b"\x89HDF", "an HDF5 file (a Keras .h5 model? convert it first)"),
        (b"PK\x03\x04", "a zip archive (a .keras model? convert it first)"),
        (b"\x1f\x8b", "a gzip archive"), (b"\x7fELF", "an ELF binary"), (b"%PDF", "a PDF document"),
        (b"version https://git-lfs", "a Git LFS pointer, not the model (run git lfs pull)"),
        (b"RIFF", "a RIFF (wav) file"), (b"\x93NUMPY", "a .npy array"),
    ]
    for magic, name in known:
        if head.startswith(magic):
            return name
    if len(data) >= 8 and data[4:8] in (b"TFL1", b"TFL2"):
        return f"an old TFLite schema ({data[4:8].decode()})"
    if head[:1] in (b"{", b"["):
        return "JSON text"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return "unknown binary data"


def _check_header(data: bytes, where: str) -> None:
    first = data[:8].hex(" ") or "nothing"
    if len(data) < 8:
        raise ModelError("file is too short to be a TFLite flatbuffer", where=where,
                         expected="at least 8 bytes starting with a root offset and 'TFL3'",
                         received=f"{len(data)} bytes ({first})", fix=_FIX_CORRUPT)
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelError("not a TFLite flatbuffer", where=where,
                         expected="file identifier 'TFL3' at bytes 4..8",
                         received=f"{_guess_file_type(data)}; first bytes {first}",
                         fix="Pass a .tflite file produced by the TFLite converter")
    root = struct.unpack_from("<I", data, 0)[0]
    if not 8 <= root < len(data):
        raise ModelError("truncated or corrupt TFLite flatbuffer", where=where,
                         expected=f"a root table offset inside the file (< {len(data)})",
                         received=f"root offset {root}", fix=_FIX_CORRUPT)


# --------------------------------------------------------------------------- facts read through load_graph


def op_types(source: ModelSource | Graph) -> list[str]:
    """Distinct operator names the model uses, in order of first use, over all subgraphs."""
    return list(_graph(source).op_types)


def input_shape(source: ModelSource | Graph) -> tuple[int, ...]:
    """Shape of input 0 without its batch axis: (49, 10, 1) for a (1, 49, 10, 1) input."""
    graph = _graph(source)
    if not graph.inputs:
        raise ModelError("The model has no inputs", where=_where(graph.path), expected="one input tensor",
                         received="none", fix=_FIX_CORRUPT)
    return tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape[1:])


def io_quantization(source: ModelSource | Graph) -> dict[str, dict[str, Any]]:
    """dtype, scale, zero point and shape of input 0 and output 0: what an app must (de)quantize with.

    {"input": {"dtype": "int8", "scale": 0.0039, "zero_point": -128, "shape": [1, 8, 8, 1]}, "output": ...};
    an unquantized tensor has scale 0.0 and zero point 0.
    """
    graph = _graph(source)
    found = {}
    for key, indices in (("input", graph.inputs), ("output", graph.outputs)):
        if not indices:
            raise ModelError(f"The model has no {key}s", where=_where(graph.path), expected=f"one {key} tensor",
                             received="none", fix=_FIX_CORRUPT)
        tensor = graph.tensors[indices[0]]
        q = tensor.quantization
        found[key] = {"dtype": tensor.dtype, "scale": float(q.scales[0]) if q and q.scales else 0.0,
                      "zero_point": int(q.zero_points[0]) if q and q.zero_points else 0,
                      "shape": [int(d) for d in tensor.shape]}
    return found


def _graph(source: ModelSource | Graph) -> Graph:
    return source if isinstance(source, Graph) else load_graph(source)
