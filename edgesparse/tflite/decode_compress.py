"""Compressed TFLite Micro flatbuffers: which constants to encode for DECODE, and the file that does it.

Why: on a microcontroller pruning pays only if the zeros leave the file, and
only tensor by tensor: a DECODE adds two tensors, an op and a table header
(35-270 B), so biases, small kernels and dense tensors get larger, and every
decoded tensor costs arena RAM and decode time on each invoke. This module
measures each candidate exactly and keeps it compressed only where the final
file shrinks by a worthwhile margin (`MIN_SAVING_BYTES`, `MIN_SAVING_FRACTION`).

It reuses the tflite-micro wheel's compression package (`model_editor`,
`decode_insert` and its LUT compressor) and adds what it lacks: the PRUNING
encoder (`tflite.decode`), clearing the stale per-channel quantization that
`decode_insert` leaves on each encoded UINT8 tensor (about 12 B per channel),
pruning unreferenced buffers, 16-byte aligned buffers, and a numpy check that
every decoded tensor equals the constant it replaced. Candidates and sizes
(`compression_candidates`) need only numpy; building a file needs tflite-micro.

Raises: `MissingDependency` when tflite-micro is not installed (x86-64 Linux
wheels only); `ModelError` for a tensor that cannot be compressed as asked;
`VerificationError` if a compressed file would not decode to the original
weights (a bug, exit 3).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from edgesparse.errors import MissingDependency, ModelError, VerificationError
from edgesparse.tflite.decode import (
    DCM_BYTES,
    DECODABLE_DTYPES,
    DECODE_OP,
    LUT_MAX_BITS,
    Channels,
    EncodedTensor,
    decode_sites,
    encode_pruning,
    kernel_channels,
    lut_shape,
    pruning_payload_bytes,
    reference_decode_all,
)
from edgesparse.tflite.edit import load_model, remove_buffers, save_model
from edgesparse.tflite.graph import Graph, Tensor, load_graph

__all__ = [
    "DECODE_INPUTS",
    "METHODS",
    "MIN_SAVING_BYTES",
    "MIN_SAVING_FRACTION",
    "MODES",
    "CompressionPlan",
    "RewrittenModel",
    "TensorChoice",
    "choose_compression",
    "compress_model",
    "compression_candidates",
    "decoded_originals",
]

METHODS = ("PRUNING", "LUT")
MODES = ("off", "prune", "lut", "auto")   # what `--mcu-compression` offers
_MODE_METHODS = {"off": (), "prune": ("PRUNING",), "lut": ("LUT",), "auto": ("PRUNING", "LUT")}
# Ops and input positions whose kernels read the constant only in Eval, so a DECODE output (no data at
# Prepare) may replace it: weights and biases. Everything else (shapes, paddings, ...) stays constant.
DECODE_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "TRANSPOSE_CONV": (1, 3)}
# The worthwhile margin. A DECODE costs arena for as long as the model is loaded (measured in TFLM on the
# digits demo: 208 B of tail per DECODE = 96 B persistent buffers for its DecodeState and pointer, 64 B node,
# 2 x 24 B eval tensors), its whole tensor in the arena while decoded, and it decodes every element on every
# invoke. Below 64 B of flash the saving is smaller than that fixed RAM; below 1/20 of the tensor it decodes
# more than 20 elements per byte saved, where an 80 %-sparse int8 tensor decodes about 1.4.
MIN_SAVING_BYTES = 64
MIN_SAVING_FRACTION = 0.05


def _upstream() -> SimpleNamespace:
    """The tflite-micro wheel's compression modules; MissingDependency with an install hint when absent."""
    try:
        from tflite_micro.tensorflow.lite.micro.compression import (
            compressor,
            constant_inputs,
            decode_insert,
            lut,
            model_editor,
            spec,
        )
    except ImportError:
        raise MissingDependency(
            "TFLite Micro's compression package is not installed", where="tflite_micro",
            expected="the tflite-micro package (wheels for x86-64 Linux only)", received="not importable",
            fix="pip install tflite-micro on an x86-64 machine and build there; checking a compressed "
                "model needs only numpy") from None
    return SimpleNamespace(compressor=compressor, constant_inputs=constant_inputs, decode_insert=decode_insert,
                           lut=lut, model_editor=model_editor, spec=spec)


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class TensorChoice:
    """One constant DECODE could replace: its sizes each way, the method chosen and why."""

    index: int                    # tensor index in subgraph 0 of the uncompressed model
    name: str
    shape: tuple[int, ...]
    dtype: str
    dense_bytes: int              # the constant's bytes, and what its decoded copy takes in the arena
    pruning_bytes: int | None     # bitmap + header + kept values; None where PRUNING cannot apply
    lut_bytes: int | None         # packed indices + header + value tables; None where LUT cannot apply
    lut_bits: int | None
    method: str                   # "PRUNING", "LUT" or "dense"
    reason: str                   # why this method
    file_saving: int | None = None  # measured: file bytes without this tensor compressed minus with it

    @property
    def payload_bytes(self) -> int:
        """The constant bytes stored for the chosen method (dense_bytes when dense)."""
        return {"PRUNING": self.pruning_bytes, "LUT": self.lut_bytes}.get(self.method) or self.dense_bytes


def _channels_of(tensor: Tensor) -> Channels:
    q = tensor.quantization
    return kernel_channels(tensor.shape, tensor.dtype, scales=len(q.scales) if q else 0,
                           zero_points=q.zero_points if q else (), where=f"tensor '{tensor.name}'",
                           quantized_dimension=q.quantized_dimension if q else 0)


def _values(graph: Graph, tensor: Tensor) -> np.ndarray:
    start = int(tensor.buffer_offset or 0)
    dtype = np.dtype(tensor.dtype).newbyteorder("<") if tensor.dtype != "bool" else np.dtype(bool)
    return np.frombuffer(graph.data, dtype, tensor.num_elements, start).reshape(tensor.shape)


def _refusal(graph: Graph, tensor: Tensor) -> str | None:
    """Why DECODE may not replace this constant, or None."""
    sg = graph.subgraphs[0]
    readers = [(op.opcode, pos) for op in sg.ops for pos, i in enumerate(op.inputs) if i == tensor.index]
    if tensor.sparsity is not None or tensor.external or tensor.buffer_offset is None:
        return "not a plain constant in the file"
    if tensor.dtype not in DECODABLE_DTYPES:
        return f"DECODE cannot produce {tensor.dtype}"
    if tensor.index in sg.outputs or not readers:
        return "not read by an op"
    bad = [f"{name} input {pos}" for name, pos in readers if pos not in DECODE_INPUTS.get(name, ())]
    if bad:
        return "read by " + ", ".join(sorted(set(bad))) + " (only conv/FC weights and biases are decoded)"
    if sum(t.buffer == tensor.buffer for t in sg.tensors) > 1:
        return "shares its buffer with another tensor"
    return None


def _candidate(graph: Graph, tensor: Tensor, methods: tuple[str, ...]) -> TensorChoice:
    base = TensorChoice(tensor.index, tensor.name, tuple(tensor.shape), tensor.dtype, tensor.buffer_bytes,
                        None, None, None, "dense", "")
    refusal = _refusal(graph, tensor)
    if refusal:
        return replace(base, reason=refusal)
    try:
        channels = _channels_of(tensor)
    except ModelError as exc:
        return replace(base, reason=exc.what)
    values = _values(graph, tensor)
    pruning = pruning_payload_bytes(values, channels) if "PRUNING" in methods else None
    lut = bits = None
    if "LUT" in methods and tensor.dtype not in ("float32",):
        bits, stride = lut_shape(values, channels)
        if bits <= LUT_MAX_BITS:
            lut = -(-values.size * bits // 8) + DCM_BYTES + channels.count * stride * values.dtype.itemsize
    options = {m: b for m, b in (("PRUNING", pruning), ("LUT", lut)) if b is not None}
    if not options:
        why = "LUT needs at most 128 values per channel (and no float)" if methods == ("LUT",) else "no method"
        return replace(base, lut_bits=bits, reason=why)
    method = min(options, key=lambda m: options[m])
    return replace(base, pruning_bytes=pruning, lut_bytes=lut, lut_bits=bits if lut is not None else None,
                   method=method, reason=f"smallest payload ({options[method]:,} B vs {tensor.buffer_bytes:,} B)")


def compression_candidates(model_bytes: bytes, mode: str = "auto") -> list[TensorChoice]:
    """Every constant of subgraph 0 with its exact payload each way and the smaller method; numpy only.

    `method` is a proposal by payload alone; `choose_compression` decides on
    the whole file. Tensors DECODE may not replace say why (`reason`).
    """
    if mode not in MODES:
        raise ModelError("Unknown compression mode", where="mcu-compression", expected=" | ".join(MODES),
                         received=repr(mode))
    graph = load_graph(model_bytes)
    methods = _MODE_METHODS[mode]
    return [_candidate(graph, t, methods) for t in graph.subgraphs[0].tensors if t.is_constant]


# --------------------------------------------------------------------------- building the file


def _method(name: str) -> str:
    key = str(name).upper()
    method = {"PRUNE": "PRUNING", "PRUNING": "PRUNING", "LUT": "LUT"}.get(key)
    if method is None:
        raise ModelError("Unknown DECODE compression method", where="compress_model",
                         expected="PRUNING or LUT", received=repr(name))
    return method


def _resolve(graph: Graph, key: int | str) -> int:
    """A subgraph-0 tensor index from an index or a name."""
    tensors = graph.subgraphs[0].tensors
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if 0 <= int(key) < len(tensors):
            return int(key)
    else:
        found = [t.index for t in tensors if t.name == key]
        if found:
            return found[0]
    raise ModelError("No such tensor in subgraph 0", where="compress_model",
                     expected=f"a tensor name or an index below {len(tensors)}", received=repr(key))


class _Builder:
    """Builds compressed variants of one model, encoding each tensor once however many variants are tried."""

    def __init__(self, model_bytes: bytes) -> None:
        self.up = _upstream()
        self.data = bytes(model_bytes)
        self.graph = load_graph(self.data)
        self._encoded: dict[tuple[int, str], EncodedTensor] = {}
        self._editable: Any = None   # one model_editor read of the input, for the LUT compressor to read from

    def encoded(self, index: int, method: str) -> EncodedTensor:
        key = (index, method)
        if key not in self._encoded:
            self._encoded[key] = self._encode(index, method)
        return self._encoded[key]

    def _encode(self, index: int, method: str) -> EncodedTensor:
        tensor = self.graph.subgraphs[0].tensors[index]
        refusal = _refusal(self.graph, tensor)
        if refusal:
            raise ModelError("This tensor cannot be compressed with DECODE", where=f"tensor '{tensor.name}'",
                             expected="a conv/FC weight or bias read by nothing else", received=refusal,
                             fix="Leave it dense (choose_compression picks the tensors that can be compressed)")
        channels = _channels_of(tensor)
        if method == "PRUNING":
            return encode_pruning(_values(self.graph, tensor), channels)
        return self._encode_lut(tensor, channels)

    def _encode_lut(self, tensor: Tensor, channels: Channels) -> EncodedTensor:
        """The wheel's LUT compressor, one table per quantization channel as the kernel reads them."""
        up = self.up
        bits, _ = lut_shape(_values(self.graph, tensor), channels)
        mode = up.spec.PerTensor() if channels.axis is None else up.spec.PerChannel(axis=channels.axis)
        if self._editable is None:
            self._editable = up.model_editor.read(self.data)
        editable = self._editable.subgraphs[0].tensors[tensor.index]
        try:
            result = up.lut.LutCompressor().compress(
                editable, up.spec.LookUpTableCompression(index_bitwidth=bits, mode=mode))
        except (up.compressor.CompressionError, ValueError) as exc:
            raise ModelError("LUT compression does not apply to this tensor", where=f"tensor '{tensor.name}'",
                             expected=f"at most {2 ** LUT_MAX_BITS} values per channel", received=str(exc),
                             fix="Use PRUNING, or leave it dense") from None
        return EncodedTensor("LUT", bytes(result.encoded_data), bytes(result.ancillary_data))

    def build(self, choices: Mapping[int, str]) -> bytes:
        """The file with each chosen tensor behind a DECODE; the unchanged bytes when nothing is chosen."""
        if not choices:
            return self.data
        up = self.up
        results = {(0, i): up.compressor.CompressionResult(self.encoded(i, m).encoded, self.encoded(i, m).ancillary)
                   for i, m in sorted(choices.items())}
        model = up.model_editor.read(self.data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            up.decode_insert.insert_decode_operators(model, results)
        return _finish(bytes(model.build()))


def _finish(data: bytes) -> bytes:
    """Fix what decode_insert leaves: quantization on the UINT8 DECODE inputs, unreferenced buffers, alignment."""
    model = load_model(data, where="compressed model")
    codes = {j for j, oc in enumerate(model.operatorCodes)
             if (oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode) == DECODE_OP}
    for sg in model.subgraphs:
        for op in sg.operators or []:
            if op.opcodeIndex in codes:
                for i in op.inputs:
                    sg.tensors[int(i)].quantization = None
    _drop_unreferenced_buffers(model)
    return save_model(model)


def _drop_unreferenced_buffers(model: Any) -> None:
    """Remove buffers no tensor or metadata entry points to (buffer 0, the empty one, stays)."""
    used = {0} | {t.buffer for sg in model.subgraphs for t in sg.tensors or []}
    used |= {m.buffer for m in model.metadata or []} | {int(b) for b in model.metadataBuffer or []}
    remove_buffers(model, set(range(len(model.buffers))) - used)


def decoded_originals(original: bytes | Graph, compressed: bytes | Graph) -> dict[tuple[int, int], int]:
    """(subgraph, decoded tensor) of the compressed model -> the tensor it replaced in the original.

    Matched through the graph, not by name: the decoded tensor's first reader
    is the original op at the same position once DECODE ops are skipped, and
    it reads the decoded tensor at the input position the original read its
    constant (a decoded subgraph output: the same output position).
    """
    orig = original if isinstance(original, Graph) else load_graph(original)
    comp = compressed if isinstance(compressed, Graph) else load_graph(compressed)
    out = {}
    for site in decode_sites(comp):
        sg_c, sg_o = comp.subgraphs[site.subgraph], orig.subgraphs[site.subgraph]
        decodes = {op.index for op in sg_c.ops if not op.builtin and op.opcode == DECODE_OP}
        if site.consumers:
            reader = sg_c.ops[site.consumers[0]]
            position = sum(1 for k in range(reader.index) if k not in decodes)
            out[(site.subgraph, site.output)] = sg_o.ops[position].inputs[reader.inputs.index(site.output)]
        else:
            out[(site.subgraph, site.output)] = sg_o.outputs[sg_c.outputs.index(site.output)]
    return out


def _check_decodes(builder: _Builder, compressed: bytes, expected: int) -> None:
    """Every DECODE output, decoded in numpy, equals the constant it replaced, bit for bit."""
    comp = load_graph(compressed)
    decoded = reference_decode_all(comp)
    origins = decoded_originals(builder.graph, comp)
    if len(decoded) != expected:
        raise VerificationError("The compressed model has a different number of DECODE outputs than asked",
                                where="compress_model", expected=f"{expected} decoded tensors",
                                received=len(decoded), fix="Report this: it is a bug")
    for key, values in decoded.items():
        original = builder.graph.subgraphs[key[0]].tensors[origins[key]]
        if values.tobytes() != _values(builder.graph, original).tobytes():
            raise VerificationError("A decoded tensor differs from the weights it replaces",
                                    where=f"tensor '{original.name}'", expected="bitwise identical values",
                                    received="different values", fix="Report this: it is a bug")


def compress_model(model_bytes: bytes, choices: Mapping[int | str, str]) -> bytes:
    """The model with each chosen constant of subgraph 0 replaced by a DECODE of it.

    `choices` maps a tensor index or name to "PRUNING" (or "prune") or "LUT".
    Every decoded tensor is checked against the constant it replaced before
    the bytes are returned.
    """
    builder = _Builder(model_bytes)
    wanted = {_resolve(builder.graph, key): _method(m) for key, m in choices.items()}
    out = builder.build(wanted)
    _check_decodes(builder, out, len(wanted))
    return out


# --------------------------------------------------------------------------- the per-tensor decision


@dataclass(frozen=True)
class RewrittenModel:
    """A rewritten .tflite beside the size of the file it came from: the savings every rewrite reports
    (DECODE compression here, `strip.StripResult`) are measured on the files, never estimated."""

    model: bytes
    original_bytes: int

    @property
    def file_bytes(self) -> int:
        return len(self.model)

    @property
    def saved_bytes(self) -> int:
        return self.original_bytes - self.file_bytes


@dataclass(frozen=True)
class CompressionPlan(RewrittenModel):
    """The compressed model and, for every constant, what was chosen and what it saves."""

    mode: str
    tensors: list[TensorChoice]

    @property
    def compressed(self) -> list[TensorChoice]:
        return [t for t in self.tensors if t.method != "dense"]

    @property
    def largest_decoded_bytes(self) -> int:
        """The largest decoded tensor: roughly what the arena grows by (one is live at a time)."""
        return max((t.dense_bytes for t in self.compressed), default=0)


def _margin(choice: TensorChoice, min_bytes: int, fraction: float) -> int:
    return max(min_bytes, int(np.ceil(fraction * choice.dense_bytes)))


def choose_compression(model_bytes: bytes, mode: str = "auto", *, keep_dense: Collection[int | str] = (),
                       min_saving_bytes: int = MIN_SAVING_BYTES,
                       min_saving_fraction: float = MIN_SAVING_FRACTION) -> CompressionPlan:
    """Compress each constant whose DECODE makes the final file smaller by the margin; measure, don't guess.

    First by exact payload (encoded + ancillary bytes vs the dense bytes);
    then the whole file is built and each kept tensor's saving measured as
    the file without it compressed minus the file with it; tensors under the
    margin (max(min_saving_bytes, min_saving_fraction x its bytes)) go back
    to dense and the file is measured again until every tensor pays.
    `keep_dense` forces tensors dense (e.g. a RAM budget's choice).
    """
    candidates = compression_candidates(model_bytes, mode)
    if mode == "off":
        return CompressionPlan(bytes(model_bytes), len(model_bytes), mode,
                               [replace(c, method="dense", reason="compression off") for c in candidates])
    builder = _Builder(model_bytes)
    forced = {_resolve(builder.graph, k) for k in keep_dense}
    final = {c.index: c for c in candidates}
    chosen: dict[int, TensorChoice] = {}
    for c in candidates:
        margin = _margin(c, min_saving_bytes, min_saving_fraction)
        if c.method == "dense":
            continue
        if c.index in forced:
            final[c.index] = replace(c, method="dense", reason="kept dense on request")
        elif c.dense_bytes - c.payload_bytes < margin:
            gain = c.dense_bytes - c.payload_bytes
            why = (f"{c.method} would store {c.payload_bytes:,} B for {c.dense_bytes:,} B" if gain <= 0 else
                   f"{c.method} saves only {gain:,} B of payload, under the {margin:,} B margin")
            final[c.index] = replace(c, method="dense", reason=why)
        else:
            chosen[c.index] = c
    model = builder.data
    while chosen:
        model = builder.build({i: c.method for i, c in chosen.items()})
        savings = {i: len(builder.build({j: d.method for j, d in chosen.items() if j != i})) - len(model)
                   for i in chosen}
        losers = {i for i, s in savings.items() if s < _margin(chosen[i], min_saving_bytes, min_saving_fraction)}
        for i, c in chosen.items():
            change = f"{'shrinks' if savings[i] >= 0 else 'grows'} by {abs(savings[i]):,} B with {c.method}"
            final[i] = replace(c, file_saving=savings[i], reason=f"the file {change}") if i not in losers else replace(
                c, method="dense", file_saving=savings[i], reason=f"the file {change}: under the "
                f"{_margin(c, min_saving_bytes, min_saving_fraction):,} B margin")
        if not losers:
            break
        chosen = {i: c for i, c in chosen.items() if i not in losers}
        model = builder.data
    if chosen:
        _check_decodes(builder, model, len(chosen))
    return CompressionPlan(model, len(builder.data), mode, [final[c.index] for c in candidates])
