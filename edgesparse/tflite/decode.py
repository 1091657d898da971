"""TFLite Micro's DECODE tensor formats: the PRUNING encoder, reference decoders, the ancillary-data parser.

Why: TFLM cannot run DENSIFY, so on a microcontroller a pruned model is exactly
as large as a dense one unless its zeros are encoded for TFLM's DECODE operator.
The tflite-micro wheel's PRUNING encoder is a stub, so this module writes the
format its kernel reads (`kernels/decode_state_prune.cc`). It also decodes
PRUNING and LUT tensors the way the kernels do, so a compressed file can be
checked without running it, and it validates a DECODE's ancillary data before
anything trusts it: TFLM does not, and a corrupt table makes the kernel read
past its buffers on the device.

The formats, as the kernels read them (decode.cc, decode_state*.cc):
- a DECODE op is the custom op "TFLM_DECODE" with inputs (encoded, ancillary)
  per output, both constant UINT8 tensors;
- the ancillary tensor starts with a 16-byte header: byte 0 the decode type
  (0 LUT, 1 Huffman, 2 PRUNING), byte 1 its version (1), bytes 2-3 zero,
  byte 4 the decoder's own version (1); LUT adds byte 5 (axis << 4 | bit
  width) and byte 6 (value-table stride); then the value table(s);
- PRUNING: the encoded tensor is a bitmap of ceil(N/8) bytes in C element
  order, most significant bit first; 1 takes the next value of the table
  (C order, in the tensor's own type), 0 the zero point;
- both kernels take the channels from the decoded tensor's quantization:
  one channel, or per channel on axis 0 or the last axis (`kernel_channels`);
  PRUNING fills per-channel zero points only for int8 (others must be 0).

numpy only: `check` runs this on a Raspberry Pi. Building a compressed file
is `tflite.decode_compress`.

Raises: `ModelError` for a tensor the kernels cannot decode (its type, its
quantization axis, non-zero zero points outside int8) and for corrupt DECODE
ops or ancillary data, naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse.errors import ModelError
from edgesparse.tflite.graph import Graph, ModelSource, Tensor, load_graph
from edgesparse.tflite.schema import DECODE_OP, normalize_dtype

__all__ = [
    "DCM_BYTES",
    "DECODABLE_DTYPES",
    "DECODE_OP",
    "DECODE_TYPES",
    "LUT",
    "LUT_MAX_BITS",
    "PRUNING",
    "Channels",
    "DecodeInfo",
    "DecodeSite",
    "EncodedTensor",
    "decode_lut",
    "decode_pruning",
    "decode_reference",
    "decode_sites",
    "encode_pruning",
    "kernel_channels",
    "lut_shape",
    "parse_ancillary",
    "pruning_payload_bytes",
    "reference_decode_all",
]

DCM_BYTES = 16                 # the decode common metadata header in front of every ancillary tensor
LUT, HUFFMAN, PRUNING = 0, 1, 2
DECODE_TYPES = {LUT: "LUT", HUFFMAN: "HUFFMAN", PRUNING: "PRUNING"}
LUT_MAX_BITS = 7               # the LUT header's bit-width field holds 1..7
LUT_MAX_STRIDE = 128
# Output types the PRUNING and LUT kernels' Decode switches handle (uint8, float16, int4... are refused).
DECODABLE_DTYPES = ("bool", "float32", "int8", "int16", "int32", "int64")
_FIX_CORRUPT = ("Re-create the compressed model with edgesparse build (or tflite-micro's compress); "
                "the file may be truncated or edited")


# --------------------------------------------------------------------------- channels and zero points


@dataclass(frozen=True)
class Channels:
    """How a DECODE kernel splits a tensor into channels, and the zero points PRUNING fills in.

    `axis` is None for one channel, else 0 or the last axis; `zero_points`
    holds one value, or one per channel when they differ from zero (int8 only),
    exactly as decode_state_prune.cc resolves them.
    """

    count: int
    axis: int | None
    zero_points: tuple[int, ...] = (0,)


def kernel_channels(shape: Sequence[int], dtype: Any, *, scales: int = 0, zero_points: Sequence[int] = (),
                    quantized_dimension: int = 0, where: str = "tensor") -> Channels:
    """The channels TFLM's DECODE kernels derive from the decoded tensor's quantization.

    `scales` is the number of quantization scales (0: unquantized). Raises
    ModelError where the kernel would refuse the tensor or misread it.
    """
    name = normalize_dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if name not in DECODABLE_DTYPES:
        raise ModelError("TFLite Micro's DECODE cannot produce this tensor type", where=where,
                         expected=" | ".join(DECODABLE_DTYPES), received=name,
                         fix="Leave this tensor uncompressed")
    if scales <= 0:
        return Channels(1, None, (0,))
    zps = [int(z) for z in zero_points]
    if len(zps) == 1:   # TFLM's allocator gives every channel the one zero point (tflite.strip writes it)
        zps *= scales
    if len(zps) != scales:
        raise ModelError("Quantization has a different number of zero points than scales", where=where,
                         expected=f"{scales} zero points", received=len(zps), fix=_FIX_CORRUPT)
    rank = len(shape)
    if quantized_dimension == rank - 1 and scales > 1:
        axis: int | None = rank - 1
    elif quantized_dimension != 0:
        raise ModelError("TFLite Micro's DECODE kernels read channels on axis 0 or the last axis only", where=where,
                         expected="quantized_dimension 0, or the last axis with more than one channel",
                         received=f"quantized_dimension {quantized_dimension} of a rank-{rank} tensor "
                                  f"with {scales} scale(s)", fix="Leave this tensor uncompressed")
    else:
        axis = 0 if scales > 1 else None
    if axis is not None and (rank == 0 or shape[axis] != scales):
        raise ModelError("Quantization does not match the tensor's shape", where=where,
                         expected=f"{scales} channels along axis {axis}", received=f"shape {list(shape)}",
                         fix=_FIX_CORRUPT)
    nonzero = any(z != 0 for z in zps)
    if nonzero and name != "int8":
        raise ModelError("TFLite Micro's PRUNING decoder needs zero points of 0 outside int8", where=where,
                         expected="all zero points 0", received=f"{name} with zero points {zps[:4]}...",
                         fix="Leave this tensor uncompressed")
    if name == "int8" and any(not -128 <= z <= 127 for z in zps):
        raise ModelError("An int8 tensor has a zero point outside int8", where=where,
                         expected="zero points in -128..127", received=zps[:4], fix=_FIX_CORRUPT)
    if scales > 1 and nonzero:
        return Channels(scales, axis, tuple(zps))
    return Channels(scales, axis, (zps[0] if name == "int8" else 0,))


def _fill(shape: tuple[int, ...], dtype: np.dtype, channels: Channels) -> np.ndarray:
    """The decoded tensor if every element were pruned: each channel's zero point."""
    zps = np.asarray(channels.zero_points, np.int64).astype(dtype)
    if len(zps) == 1 or channels.axis is None:
        return np.full(shape, zps[0], dtype)
    view = [1] * len(shape)
    view[channels.axis] = len(zps)
    return np.broadcast_to(zps.reshape(view), shape).copy()


def _bits(a: np.ndarray) -> np.ndarray:
    """The raw bit patterns of an array, so -0.0 is not 0.0 and NaNs compare (the kernel copies bits)."""
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.itemsize in (1, 2, 4, 8) else a


def _le(dtype: Any) -> np.dtype:
    """The little-endian numpy dtype of a tensor type (a .tflite stores values little-endian)."""
    name = normalize_dtype(dtype)
    return np.dtype(name).newbyteorder("<") if name != "bool" else np.dtype(bool)


# --------------------------------------------------------------------------- PRUNING


@dataclass(frozen=True)
class EncodedTensor:
    """What replaces one constant: the DECODE op's encoded input and its ancillary input."""

    method: str          # "PRUNING" or "LUT"
    encoded: bytes
    ancillary: bytes

    @property
    def payload_bytes(self) -> int:
        """The constant bytes the two tensors store (the file adds their tables and padding)."""
        return len(self.encoded) + len(self.ancillary)


def _header(decode_type: int, user: bytes = b"\x01") -> bytes:
    """The 16-byte decode common metadata: type, version 1, two reserved zeros, then the decoder's bytes."""
    return bytes([decode_type, 1, 0, 0]) + user + bytes(DCM_BYTES - 4 - len(user))


def encode_pruning(values: np.ndarray, channels: Channels | None = None) -> EncodedTensor:
    """PRUNING-encode a constant: a bitmap of the elements that differ from their zero point, and those values.

    `channels` (from `kernel_channels`) gives the zero points; one channel of
    zero point 0 when omitted.
    """
    a = np.ascontiguousarray(values)
    name = normalize_dtype(a.dtype)
    if name not in DECODABLE_DTYPES:
        raise ModelError("TFLite Micro's DECODE cannot produce this tensor type", where="encode_pruning",
                         expected=" | ".join(DECODABLE_DTYPES), received=name)
    channels = channels or Channels(1, None, (0,))
    a = a.astype(_le(name), copy=False)
    keep = (_bits(a) != _bits(_fill(a.shape, a.dtype, channels))).ravel()
    bitmap = np.packbits(keep, bitorder="big").tobytes()
    return EncodedTensor("PRUNING", bitmap, _header(PRUNING) + a.ravel()[keep].tobytes())


def pruning_payload_bytes(values: np.ndarray, channels: Channels | None = None) -> int:
    """The bytes `encode_pruning` would store, without encoding: bitmap + header + kept values."""
    a = np.asarray(values)
    channels = channels or Channels(1, None, (0,))
    kept = int(np.count_nonzero(_bits(a) != _bits(_fill(a.shape, a.dtype, channels))))
    return -(-a.size // 8) + DCM_BYTES + kept * a.dtype.itemsize


def decode_pruning(bitmap: bytes, ancillary: bytes, shape: Sequence[int], dtype: Any,
                   channels: Channels | None = None) -> np.ndarray:
    """The tensor TFLM's PRUNING decoder produces from a bitmap and ancillary data (validated first)."""
    channels = channels or Channels(1, None, (0,))
    shape = tuple(int(d) for d in shape)
    info = _parse_pruning(bytes(bitmap), bytes(ancillary), shape, normalize_dtype(dtype), channels, "decode_pruning")
    dt = _le(dtype)
    out = _fill(shape, dt, channels).ravel()
    mask = np.unpackbits(np.frombuffer(bytes(bitmap), np.uint8), bitorder="big")[:out.size].astype(bool)
    table = np.frombuffer(bytes(ancillary), dt, info.value_count, DCM_BYTES)
    out[mask] = table
    return out.reshape(shape)


# --------------------------------------------------------------------------- LUT


def lut_shape(values: np.ndarray, channels: Channels) -> tuple[int, int]:
    """(index bits, table stride) the upstream LUT compressor would use: the most unique values in a channel.

    Bits may exceed LUT_MAX_BITS; then LUT does not apply.
    """
    a = np.asarray(values)
    slices = [a] if channels.axis is None else list(np.moveaxis(a, channels.axis, 0))
    stride = max(len(np.unique(_bits(np.ascontiguousarray(s)))) for s in slices)
    return max(1, (stride - 1).bit_length()), stride


def decode_lut(indices: bytes, ancillary: bytes, shape: Sequence[int], dtype: Any,
               channels: Channels | None = None) -> np.ndarray:
    """The tensor TFLM's LUT decoder produces: each element's packed index looked up in its channel's table."""
    channels = channels or Channels(1, None, (0,))
    shape = tuple(int(d) for d in shape)
    info = _parse_lut(bytes(indices), bytes(ancillary), shape, normalize_dtype(dtype), channels, "decode_lut")
    n = int(np.prod(shape, dtype=np.int64))
    idx = _lut_indices(bytes(indices), n, int(info.bit_width or 1))
    stride = info.value_count // max(channels.count, 1)
    if channels.axis is None:
        channel = np.zeros(n, np.int64)
    elif channels.axis == 0:
        channel = np.arange(n, dtype=np.int64) // (n // channels.count)
    else:
        channel = np.arange(n, dtype=np.int64) % channels.count
    table = np.frombuffer(bytes(ancillary), _le(dtype), info.value_count, DCM_BYTES)
    return table[channel * stride + idx].reshape(shape)


def _lut_indices(data: bytes, n: int, bits: int) -> np.ndarray:
    """n big-endian `bits`-wide indices packed back to back (upstream lut.pack_indices' order)."""
    raw = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="big")[:n * bits].reshape(n, bits)
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return raw.astype(np.int64) @ weights


# --------------------------------------------------------------------------- ancillary data


@dataclass(frozen=True)
class DecodeInfo:
    """What one DECODE output's ancillary data says, after validation against the tensors it decodes."""

    method: str                 # "LUT" or "PRUNING"
    decode_type: int            # header byte 0
    version: int                # header byte 1 (1), then the decoder's own version at byte 4 (1)
    dtype: str                  # the decoded tensor's type
    elements: int               # elements decoded on every invoke
    encoded_bytes: int          # the encoded input (bitmap or packed indices)
    ancillary_bytes: int        # header + value table(s)
    value_count: int            # values in the table(s): kept elements (PRUNING), channels x stride (LUT)
    bit_width: int | None       # LUT index bits; None for PRUNING (one bit per element)
    channels: int = 1
    axis: int | None = None
    zero_point_channels: int = 0  # per-channel zero points PRUNING copies into a persistent buffer (0: one)

    @property
    def decoded_bytes(self) -> int:
        """The decoded tensor's bytes: what it occupies in the arena while it is live."""
        return self.elements * np.dtype(_le(self.dtype)).itemsize

    @property
    def payload_bytes(self) -> int:
        return self.encoded_bytes + self.ancillary_bytes


def _corrupt(what: str, where: str, expected: str, received: object) -> ModelError:
    return ModelError(what, where=where, expected=expected, received=received, fix=_FIX_CORRUPT)


def parse_ancillary(encoded: bytes, ancillary: bytes, shape: Sequence[int], dtype: Any,
                    channels: Channels | None = None, *, where: str = DECODE_OP) -> DecodeInfo:
    """Validate one DECODE output's inputs against the tensor they decode to; what they hold.

    Checks everything the kernels would otherwise trust: header type and
    versions, bitmap or index length, table length (PRUNING: one value per set
    bit; LUT: every index inside its channel's table). Huffman and custom
    decode types are refused: edgesparse cannot check them.
    """
    encoded, ancillary = bytes(encoded), bytes(ancillary)
    shape = tuple(int(d) for d in shape)
    name = normalize_dtype(dtype)
    channels = channels or Channels(1, None, (0,))
    if len(ancillary) < DCM_BYTES:
        raise _corrupt("DECODE ancillary data is shorter than its header", where,
                       f"at least {DCM_BYTES} bytes", f"{len(ancillary)} bytes")
    kind = ancillary[0]
    if kind not in (LUT, PRUNING):
        label = DECODE_TYPES.get(kind, f"custom type {kind}" if kind >= 127 else f"reserved type {kind}")
        raise ModelError("DECODE uses a decode type edgesparse cannot check", where=where,
                         expected="LUT (0) or PRUNING (2)", received=label,
                         fix="Compress with LUT or PRUNING (edgesparse build for a TFLM profile)")
    if ancillary[1] != 1:
        raise _corrupt("DECODE ancillary header has an unsupported version", where, "version 1 at byte 1",
                       ancillary[1])
    if ancillary[4] != 1:
        raise _corrupt(f"{DECODE_TYPES[kind]} ancillary data has an unsupported version", where,
                       "version 1 at byte 4", ancillary[4])
    if name not in DECODABLE_DTYPES:
        raise _corrupt("DECODE output has a type its kernels cannot produce", where,
                       " | ".join(DECODABLE_DTYPES), name)
    if kind == PRUNING:
        return _parse_pruning(encoded, ancillary, shape, name, channels, where)
    return _parse_lut(encoded, ancillary, shape, name, channels, where)


def _parse_pruning(bitmap: bytes, ancillary: bytes, shape: tuple[int, ...], name: str, channels: Channels,
                   where: str) -> DecodeInfo:
    n = int(np.prod(shape, dtype=np.int64))
    if len(ancillary) < DCM_BYTES or ancillary[0] != PRUNING or ancillary[1] != 1 or ancillary[4] != 1:
        raise _corrupt("Not PRUNING ancillary data", where, "header type 2, version 1, prune version 1",
                       ancillary[:5].hex(" "))
    if len(bitmap) != -(-n // 8):
        raise _corrupt("PRUNING bitmap length does not match the decoded tensor", where,
                       f"{-(-n // 8)} bytes for {n} elements", f"{len(bitmap)} bytes")
    kept = int(np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="big")[:n].sum())
    itemsize = np.dtype(_le(name)).itemsize
    if len(ancillary) < DCM_BYTES + kept * itemsize:
        raise _corrupt("PRUNING value table is shorter than its bitmap needs", where,
                       f"{kept} {name} values ({DCM_BYTES + kept * itemsize} bytes with the header)",
                       f"{len(ancillary)} bytes")
    per_channel = len(channels.zero_points) if len(channels.zero_points) > 1 else 0
    return DecodeInfo("PRUNING", PRUNING, 1, name, n, len(bitmap), len(ancillary), kept, None,
                      channels.count, channels.axis, per_channel)


def _parse_lut(indices: bytes, ancillary: bytes, shape: tuple[int, ...], name: str, channels: Channels,
               where: str) -> DecodeInfo:
    n = int(np.prod(shape, dtype=np.int64))
    if len(ancillary) < DCM_BYTES or ancillary[0] != LUT or ancillary[1] != 1 or ancillary[4] != 1:
        raise _corrupt("Not LUT ancillary data", where, "header type 0, version 1, LUT version 1",
                       ancillary[:5].hex(" "))
    bits, stride = ancillary[5] & 0x07, ancillary[6]
    if not 1 <= bits <= LUT_MAX_BITS or not 1 <= stride <= LUT_MAX_STRIDE:
        raise _corrupt("LUT header has an impossible bit width or table stride", where,
                       f"bit width 1..{LUT_MAX_BITS}, stride 1..{LUT_MAX_STRIDE}", f"{bits} bits, stride {stride}")
    if len(indices) < -(-n * bits // 8):
        raise _corrupt("LUT indices are shorter than the decoded tensor needs", where,
                       f"{-(-n * bits // 8)} bytes for {n} {bits}-bit indices", f"{len(indices)} bytes")
    count = channels.count * stride
    itemsize = np.dtype(_le(name)).itemsize
    if len(ancillary) < DCM_BYTES + count * itemsize:
        raise _corrupt("LUT value tables are shorter than their channels need", where,
                       f"{channels.count} x {stride} {name} values", f"{len(ancillary) - DCM_BYTES} bytes")
    if n and int(_lut_indices(indices, n, bits).max()) >= stride:
        raise _corrupt("A LUT index points past its value table", where, f"indices below {stride}",
                       int(_lut_indices(indices, n, bits).max()))
    return DecodeInfo("LUT", LUT, 1, name, n, len(indices), len(ancillary), count, bits,
                      channels.count, channels.axis)


def decode_reference(encoded: bytes, ancillary: bytes, shape: Sequence[int], dtype: Any,
                     channels: Channels | None = None) -> np.ndarray:
    """What a DECODE output holds after the kernel runs, computed in numpy (PRUNING or LUT)."""
    info = parse_ancillary(encoded, ancillary, shape, dtype, channels)
    decoder = decode_pruning if info.method == "PRUNING" else decode_lut
    return decoder(encoded, ancillary, shape, dtype, channels)


# --------------------------------------------------------------------------- DECODE ops in a model


@dataclass(frozen=True)
class DecodeSite:
    """One decoded tensor: the DECODE op that writes it, its two inputs, its readers and what it holds."""

    subgraph: int
    op: int                     # the DECODE op's index
    output: int                 # the decoded tensor
    encoded: int                # input 2k
    ancillary: int              # input 2k + 1
    consumers: tuple[int, ...]  # ops that read the decoded tensor
    name: str
    shape: tuple[int, ...]
    info: DecodeInfo


def _constant_bytes(graph: Graph, tensor: Tensor, where: str) -> bytes:
    if tensor.buffer_offset is None or not tensor.is_constant or tensor.dtype != "uint8":
        raise _corrupt("A DECODE input is not a constant UINT8 tensor", where,
                       "encoded and ancillary inputs with data in the file",
                       f"tensor {tensor.index} '{tensor.name}' ({tensor.dtype}, "
                       f"{'constant' if tensor.is_constant else 'no data'})")
    return graph.data[tensor.buffer_offset:tensor.buffer_offset + tensor.buffer_bytes]


def _tensor_channels(tensor: Tensor, where: str) -> Channels:
    q = tensor.quantization
    if q is None or not q.scales:
        return kernel_channels(tensor.shape, tensor.dtype, where=where)
    return kernel_channels(tensor.shape, tensor.dtype, scales=len(q.scales), zero_points=q.zero_points,
                           quantized_dimension=q.quantized_dimension, where=where)


def decode_sites(source: ModelSource | Graph) -> list[DecodeSite]:
    """Every tensor a DECODE op produces, over all subgraphs, with its validated ancillary data.

    Raises ModelError for a corrupt DECODE (inputs not paired with outputs,
    inputs that are not constant UINT8 data, ancillary data that does not fit).
    """
    graph = source if isinstance(source, Graph) else load_graph(source)
    sites = []
    for sg in graph.subgraphs:
        for op in sg.ops:
            if op.builtin or op.opcode != DECODE_OP:
                continue
            where = f"{DECODE_OP} op {op.index} of subgraph {sg.index}"
            if not op.outputs or len(op.inputs) != 2 * len(op.outputs) or min(op.inputs) < 0:
                raise _corrupt("DECODE inputs are not (encoded, ancillary) pairs, one per output", where,
                               "2 inputs per output", f"{len(op.inputs)} inputs, {len(op.outputs)} outputs")
            for k, out in enumerate(op.outputs):
                enc_t, anc_t, out_t = sg.tensors[op.inputs[2 * k]], sg.tensors[op.inputs[2 * k + 1]], sg.tensors[out]
                at = f"{where}, output '{out_t.name}'"
                info = parse_ancillary(_constant_bytes(graph, enc_t, at), _constant_bytes(graph, anc_t, at),
                                       out_t.shape, out_t.dtype, _tensor_channels(out_t, at), where=at)
                readers = tuple(o.index for o in sg.ops if out in o.inputs)
                sites.append(DecodeSite(sg.index, op.index, out, enc_t.index, anc_t.index, readers, out_t.name,
                                        tuple(out_t.shape), info))
    return sites


def reference_decode_all(source: ModelSource | Graph) -> dict[tuple[int, int], np.ndarray]:
    """(subgraph, decoded tensor) -> the values every DECODE op of the model produces, decoded in numpy."""
    graph = source if isinstance(source, Graph) else load_graph(source)
    out = {}
    for site in decode_sites(graph):
        sg = graph.subgraphs[site.subgraph]
        tensor = sg.tensors[site.output]
        where = f"{DECODE_OP} output '{site.name}'"
        out[(site.subgraph, site.output)] = decode_reference(
            _constant_bytes(graph, sg.tensors[site.encoded], where),
            _constant_bytes(graph, sg.tensors[site.ancillary], where),
            site.shape, tensor.dtype, _tensor_channels(tensor, where))
    return out
