"""The latency model: per-op cost features, a profile's coefficients, pricing, the latency estimate.

Why a model, not a guess: each op's time is its work (MACs the kernel really
executes, element ops, bytes moved) divided by a rate fitted to measurements on
the device, plus a per-op overhead; the profile's [latency] table says what each
coefficient was fitted to, and a coefficient transferred from another device or
unsourced is reported as such, so the latency never claims to be fitted when
it is not. Which kernel runs an op (XNNPACK or LiteRT's builtin kernels, a
sparse FULLY_CONNECTED, channel tiles) is decided here from the profile's
runtime. Raises `ProfileError` (a [latency] table without a clock) and
`DataError` (threads < 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

from edgesparse.errors import DataError, ProfileError
from edgesparse.estimate.decoding import DecodeWork, decode_work
from edgesparse.estimate.ops import is_one_time, op_cost_class, op_dtype, op_type, tensor_nbytes
from edgesparse.profiles import Profile
from edgesparse.tflite.schema import DECODE_OPS, dtype_bytes, dtype_class

__all__ = [
    "DECODE_MACS_PER_ELEMENT",
    "DECODE_SOURCE",
    "XNNPACK_BUILTIN_INT8",
    "XNNPACK_DISPATCH_MIN_WORK",
    "CoefficientUse",
    "LatencyCoefficients",
    "LatencyEstimate",
    "OpCost",
    "OpLatency",
    "coefficient_basis",
    "estimate_latency",
    "latency_coefficients",
    "op_features",
    "predict_ops_us",
    "price_ops",
    "thread_factor",
    "xnnpack_channel_tile",
]

MAC_CLASSES = ("conv", "dwconv", "fc")

# What one decoded element costs, in the profile's own int8 FULLY_CONNECTED MACs: measured on this host by
# bench/decode_cost.py (TFLM's Python interpreter, reference kernels: a 512 x 1024 int8 FULLY_CONNECTED
# timed dense and with its weights decoded; PRUNING at 20 % kept, LUT with 4-bit indices, which takes
# decode_state_lut.cc's int8 fast path). A profile's [latency] decode_macs_per_element table overrides it.
DECODE_MACS_PER_ELEMENT = {"PRUNING": 2.28, "LUT": 0.67}
DECODE_SOURCE = ("assumption: transferred from a host measurement (bench/decode_cost.py: in TFLM's reference "
                 "kernels on x86-64 a decoded element costs 2.28 (PRUNING) / 0.67 (LUT) int8 FULLY_CONNECTED "
                 "MACs), priced at this profile's fc_int8 MAC rate; not measured on the device (optimized "
                 "MAC kernels such as CMSIS-NN make the real ratio larger)")

# --------------------------------------------------------------------------- op features

@dataclass
class OpCost:
    """Cost features of one op, as the latency model sees them."""

    index: int
    op: str
    kind: str
    dtype: str
    coef_key: str            # e.g. conv_int8: which macs_per_cycle entry prices it
    macs: int                # dense MACs
    macs_used: int           # MACs the kernel really executes (sparsity only where exploited)
    elementwise_ops: int
    bytes_moved: int
    kernel: str              # what runs it and what it exploits
    dispatched: bool = True  # whether it pays overhead_us_per_op (see XNNPACK_DISPATCH_MIN_WORK)
    decoded: dict[str, int] = field(default_factory=dict)  # TFLM DECODE: elements per invoke by decode type


# int8 ops without MACs that the XNNPACK delegate of LiteRT 2.3 leaves to LiteRT's builtin kernels (timed on
# the host, bench/estimation.py: a standalone int8 RELU/RELU6, HARD_SWISH or SOFTMAX is not delegated and costs
# 1-3 ns per element there, against well under 0.1 ns for delegated ones such as ADD, MUL, LOGISTIC, TANH,
# MEAN, MAX_POOL_2D, PAD, CONCATENATION, LEAKY_RELU). Only ops seen undelegated are listed.
XNNPACK_BUILTIN_INT8 = frozenset({"RELU", "RELU6", "HARD_SWISH", "SOFTMAX", "AVERAGE_POOL_2D"})

# On LiteRT + XNNPACK the per-op overhead is paid by ops big enough to be split over the thread pool: timed
# on the host, 30 chained 16x16 FULLY_CONNECTED (256 MACs each) or ADDs of 128 elements cost ~0.03-0.04 us
# per op, 30 chained 1x1 convolutions of 4x4x8 (1,024 MACs each) ~0.2 us per op. Ops with fewer MACs plus
# element ops than this are charged no overhead_us_per_op there (TFLM and other runtimes: every op pays it).
XNNPACK_DISPATCH_MIN_WORK = 1000


def xnnpack_channel_tile(profile: Profile) -> int:
    """Output channels XNNPACK computes per SIMD tile on this device (1: no tile known, no padding).

    With AVX-512 a layer of 8 or 24 channels costs about as much as one of 32 (timed on the host:
    thin-channel convolutions ran 2x slower per MAC). The tile was chosen among 8/16/32/64 by the
    in-sample error of the host fit (bench/estimation.py), never by the held-out models.
    """
    return 32 if any(s.startswith("avx512") for s in profile.simd) else 1


@dataclass(frozen=True)
class _Kernels:
    """What runs the ops on a profile: the runtime, its kernel library, and whether XNNPACK refused the model."""

    runtime: str
    kernels: str
    refused: bool   # XNNPACK refuses a model with a sparse int8 FULLY_CONNECTED: builtin kernels run it all
    tile: int       # XNNPACK's output-channel tile (1: none)

    @property
    def xnnpack(self) -> bool:
        return self.runtime == "litert" and "xnnpack" in self.kernels

    @classmethod
    def of(cls, graph: Any, profile: Profile) -> _Kernels:
        runtime, kernels = profile.runtime, profile.kernels.lower()
        xnnpack = runtime == "litert" and "xnnpack" in kernels
        refused = xnnpack and any(
            op_cost_class(op) == "fc" and getattr(op, "sparse_weights", False)
            and dtype_class(op_dtype(op, graph.tensors)) == "int8" for op in graph.ops)
        tile = xnnpack_channel_tile(profile) if xnnpack and not refused else 1
        return cls(runtime, kernels, refused, tile)


def _int_attr(op: Any, name: str, default: int = 0) -> int:
    value = getattr(op, name, None)
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _runs_builtin_int8(op: Any, dtype: str, k: _Kernels) -> bool:
    """Whether an op without MACs runs in LiteRT's builtin int8 kernels under XNNPACK (priced by its own
    class, 'elementwise_int8_builtin'): the delegate does not take it, or refused the whole model. Splitting
    by op family (pooling, reductions, LUT/transcendental) over-fitted; splitting by WHO RUNS the op is what
    the timings show. A profile without a coefficient for that class falls back to 'elementwise_int8'."""
    return k.xnnpack and dtype == "int8" and (k.refused or op_type(op) in XNNPACK_BUILTIN_INT8)


def op_features(graph: Any, profile: Profile, *, decode: DecodeWork | None = None) -> list[OpCost]:
    """Per-op cost features for this profile's runtime: which kernel runs it, what it exploits.

    LiteRT: a FULLY_CONNECTED whose weights are stored sparse (and not handed
    over dense by a DENSIFY op) runs in the builtin sparse kernel, which skips
    zero blocks (effective MACs): XNNPACK refuses sparse int8 FC. With DENSIFY
    in front the kernel sees dense weights and does every MAC. TFLM runs dense
    (it cannot even load DENSIFY). Ops whose inputs are all constant (DENSIFY)
    run once, not per inference. A TFLM DECODE op decodes every element of its
    outputs on every invoke (no MACs): priced per element and decode type.
    `decode` is the graph's `decoding.decode_work` (computed when omitted).
    """
    k = _Kernels.of(graph, profile)
    tensors = list(graph.tensors)
    by_op = (decode if decode is not None else decode_work(graph)).elements_by_op()
    features = []
    for i, op in enumerate(graph.ops):
        if op_type(op) in DECODE_OPS:
            decoded = by_op.get(i) or {"PRUNING": sum(tensor_nbytes(tensors[t]) for t in op.outputs if t >= 0)}
            out_dtype = getattr(tensors[op.outputs[0]], "dtype", "int8") if op.outputs else "int8"
            features.append(OpCost(index=i, op=op_type(op), kind="decode", dtype=dtype_class(out_dtype),
                                   coef_key="decode", macs=0, macs_used=0, elementwise_ops=0, bytes_moved=0,
                                   kernel="TFLM DECODE: " + ", ".join(f"{n} {m} elements" for m, n in
                                                                      decoded.items()) + " per invoke",
                                   decoded=decoded))
        else:
            features.append(_op_cost(i, op, tensors, k))
    return features


def _op_cost(index: int, op: Any, tensors: Sequence[Any], k: _Kernels) -> OpCost:
    name, kind, dtype = op_type(op), op_cost_class(op), dtype_class(op_dtype(op, tensors))
    macs = _int_attr(op, "macs")
    elem = _int_attr(op, "elementwise_ops")
    moved = _int_attr(op, "bytes_moved") or sum(
        tensor_nbytes(tensors[t]) for t in list(op.inputs) + list(op.outputs) if t >= 0)
    used = macs
    kernel = f"{k.runtime} {k.kernels or 'default'}"
    if kind in MAC_CLASSES:
        key = f"{kind}_{dtype}" + ("_builtin" if k.refused else "")
    elif _runs_builtin_int8(op, dtype, k):
        key = "elementwise_int8_builtin"
        # builtin int8 kernels cost per OUTPUT element (a 2x2 and a 4x4 average pool over the same
        # input differ 4x in window ops but not in time per output element)
        elem = sum(tensor_nbytes(tensors[t]) // dtype_bytes(getattr(tensors[t], "dtype", "int8"))
                   for t in op.outputs if t >= 0) if elem else 0
        kernel = "LiteRT builtin kernel (the XNNPACK delegate does not take this int8 op)"
    else:
        key = f"elementwise_{dtype}"
    if k.refused:
        kernel = "LiteRT builtin kernels (XNNPACK refuses models with a sparse int8 FULLY_CONNECTED)"
    sparse = bool(getattr(op, "sparse_weights", False))
    filter_sparse = _filter_carries_sparsity(op, tensors)
    if is_one_time(op):
        kernel = "runs once (all inputs constant): not part of an inference"
        used, elem, moved, key = 0, 0, 0, "once"
    elif sparse and (getattr(op, "weights_densified", False) or not filter_sparse):
        # The kernel's filter is DENSIFY's (or DEQUANTIZE's) dense output: no sparsity metadata, so
        # fully_connected.cc takes its dense path (the sparse one needs filter->sparsity != nullptr).
        kernel += " (weights densified by DENSIFY: dense kernel, every MAC)"
    elif k.runtime == "litert" and name == "FULLY_CONNECTED" and filter_sparse:
        used = _int_attr(op, "effective_macs", macs)
        key = f"fc_{dtype}_sparse"
        kernel = ("builtin sparse FULLY_CONNECTED (XNNPACK refuses sparse int8 FC); skips zero blocks"
                  if dtype == "int8" else "builtin sparse FULLY_CONNECTED; skips zero blocks")
    elif sparse:
        kernel += " (sparse weights not exploited: dense MACs)"
    if k.tile > 1 and kind in ("conv", "dwconv") and used and op.outputs and op.outputs[0] >= 0:
        shape: tuple[Any, ...] = tuple(getattr(tensors[op.outputs[0]], "shape", None) or ())
        channels = int(shape[-1]) if shape else 0
        if channels > 0 and channels % k.tile:
            used = used * (-(-channels // k.tile) * k.tile) // channels
            kernel += f" ({channels} output channels computed in SIMD tiles of {k.tile})"
    dispatched = not (k.xnnpack and used + elem < XNNPACK_DISPATCH_MIN_WORK)
    return OpCost(index=index, op=name, kind=kind, dtype=dtype, coef_key=key, macs=macs, macs_used=used,
                  elementwise_ops=elem, bytes_moved=moved, kernel=kernel, dispatched=dispatched)


def _filter_carries_sparsity(op: Any, tensors: Sequence[Any]) -> bool:
    """Whether the weight tensor the kernel itself reads has sparsity metadata (not a DENSIFY output).

    LiteRT's FULLY_CONNECTED runs its sparse kernel only when `filter->sparsity != nullptr`
    (tensorflow/lite/kernels/fully_connected.cc); DENSIFY's output is a plain dense tensor.
    """
    index = getattr(op, "weight_tensor", None)
    if index is None:
        index = op.inputs[1] if len(op.inputs) > 1 else -1
    if index is None or index < 0 or index >= len(tensors):
        return False
    return getattr(tensors[index], "sparsity", None) is not None


# --------------------------------------------------------------------------- coefficients

@dataclass
class LatencyCoefficients:
    """A profile's [latency] table, validated, with where each coefficient comes from."""

    fitted: bool
    fit_source: str
    fit_rows: list[str]
    clock_mhz: float
    macs_per_cycle: dict[str, float]
    bytes_per_cycle: float
    elementwise_per_cycle: float
    overhead_us_per_op: float
    fixed_overhead_us: float
    parallel_efficiency: float
    fit_threads: int
    notes: str = ""
    basis: str = ""                      # the table's declared basis ([latency] basis), "" if not declared
    transferred_from: str = ""
    transfer_factor: float | None = None
    overhead_from: str = ""
    overhead_factor: float | None = None
    sources: dict[str, str] = field(default_factory=dict)  # "macs_per_cycle.int8" -> [sources] text
    decode_macs_per_element: dict[str, float] = field(default_factory=lambda: dict(DECODE_MACS_PER_ELEMENT))

    def decode_rate(self, method: str) -> tuple[float, str]:
        """(cycles per decoded element of this decode type, coefficient path); 0 when no MAC rate prices it.

        A decoded element costs decode_macs_per_element[method] of the profile's int8 FULLY_CONNECTED MACs.
        """
        mpc, _ = self.macs_rate("fc_int8")
        factor = self.decode_macs_per_element.get(method, max(self.decode_macs_per_element.values(), default=0.0))
        return (factor / mpc if mpc > 0 else 0.0), f"decode_macs_per_element.{method}"

    def elementwise_rate(self, dtype: str, key: str = "") -> float:
        """Element ops per cycle of an op without MACs: macs_per_cycle[key] ('pool_int8', 'nonlinear_float32'...)
        if fitted, else macs_per_cycle['elementwise_<dtype>'], else elementwise_per_cycle. (int8 ones often
        run in LiteRT's builtin kernels, float ones in XNNPACK: their costs differ a lot.)"""
        return self.elementwise_rate_key(dtype, key)[0]

    def elementwise_rate_key(self, dtype: str, key: str = "") -> tuple[float, str]:
        """(rate, coefficient path) for an op without MACs; path '' when nothing prices it."""
        for cand in (key, f"elementwise_{dtype}"):
            rate = self.macs_per_cycle.get(cand, 0.0) if cand else 0.0
            if rate > 0:
                return rate, f"macs_per_cycle.{cand}"
        if self.elementwise_per_cycle > 0:
            return self.elementwise_per_cycle, "elementwise_per_cycle"
        return 0.0, ""

    def macs_rate(self, key: str) -> tuple[float, str]:
        """MACs per cycle for a class key like 'conv_int8' (falls back: kind_dtype -> dtype -> default)."""
        parts = key.split("_")
        candidates = [key, "_".join(parts[:2]), parts[1] if len(parts) > 1 else key, parts[0], "default"]
        if key.endswith("_sparse"):   # a sparse kernel is a builtin kernel: its timed builtin rate before XNNPACK's
            candidates.insert(1, "_".join(parts[:2]) + "_builtin")
        for cand in candidates:
            if cand in self.macs_per_cycle and self.macs_per_cycle[cand] > 0:
                return self.macs_per_cycle[cand], cand
        return 0.0, ""

    def source_of(self, path: str) -> str:
        """Where one coefficient ('macs_per_cycle.int8', 'overhead_us_per_op') comes from."""
        if path in self.sources:
            return self.sources[path]
        parent = path.split(".", 1)[0]
        if parent != path and parent in self.sources:
            return self.sources[parent]
        if self.fitted and self.fit_source.strip():
            return "fitted: " + self.fit_source
        return ""

    def basis_of(self, path: str) -> str:
        """fitted | transferred | assumption for one coefficient (its [sources] entry, else the table's fit)."""
        return coefficient_basis(self.source_of(path), table_fitted=self.fitted and bool(self.fit_source.strip()),
                                 has_own_source=path in self.sources or path.split(".", 1)[0] in self.sources)


def coefficient_basis(source: str, *, table_fitted: bool = False, has_own_source: bool = True) -> str:
    """Classify a coefficient's source text: 'transferred' (from another device), 'fitted' or 'assumption'.

    A source starting 'assumption: transferred' or 'transferred' is a transfer; 'assumption' anything else
    is an assumption; 'fitted'/'fit to' is fitted; a coefficient of a fitted table without its own
    [sources] entry takes the fit. Anything else on an unfitted table is treated as an assumption.
    """
    text = str(source or "").strip().lower()
    if text.startswith("assumption: transferred") or text.startswith("transferred"):
        return "transferred"
    if text.startswith("assumption"):
        return "assumption"
    if text.startswith("fitted") or text.startswith("fit to"):
        return "fitted"
    if table_fitted and not has_own_source:
        return "fitted"
    return "fitted" if table_fitted and text else "assumption"


def latency_coefficients(profile: Profile) -> LatencyCoefficients | None:
    """The profile's [latency] table as coefficients, or None when it has none."""
    lat = profile.table("latency")
    if not lat:
        return None
    clock = float(lat.get("clock_mhz") or profile.clock_mhz or 0)
    if clock <= 0:
        raise ProfileError("The latency model needs a clock", where=f"{profile.name}: device.clock_mhz",
                           expected="a positive clock in MHz", received=clock,
                           fix="Add clock_mhz to [device]")
    mpc = {str(k): float(v) for k, v in (lat.get("macs_per_cycle") or {}).items()}

    def opt_float(key: str) -> float | None:
        value = lat.get(key)
        return None if value is None else float(value)

    return LatencyCoefficients(
        fitted=bool(lat.get("fitted", False)), fit_source=str(lat.get("fit_source", "")),
        fit_rows=[str(r) for r in (lat.get("fit_rows") or [])], clock_mhz=clock, macs_per_cycle=mpc,
        bytes_per_cycle=float(lat.get("bytes_per_cycle", 0) or 0),
        elementwise_per_cycle=float(lat.get("elementwise_per_cycle", 0) or 0),
        overhead_us_per_op=float(lat.get("overhead_us_per_op", 0) or 0),
        fixed_overhead_us=float(lat.get("fixed_overhead_us", 0) or 0),
        parallel_efficiency=float(lat.get("parallel_efficiency", 0) or 0),
        fit_threads=int(lat.get("fit_threads", 0) or profile.threads),
        notes=str(lat.get("notes", "")), basis=str(lat.get("basis", "") or ""),
        transferred_from=str(lat.get("transferred_from", "") or ""), transfer_factor=opt_float("transfer_factor"),
        overhead_from=str(lat.get("overhead_from", "") or ""), overhead_factor=opt_float("overhead_factor"),
        sources=_decode_sources(profile.sources_of("latency"), lat.get("decode_macs_per_element")),
        decode_macs_per_element={**DECODE_MACS_PER_ELEMENT,
                                 **{str(k).upper(): float(v) for k, v in
                                    (lat.get("decode_macs_per_element") or {}).items()}})


def _decode_sources(sources: dict[str, str], own: Any) -> dict[str, str]:
    """The [sources] of a [latency] table plus the built-in decode coefficients' source (DECODE_SOURCE) for
    each decode type the table does not set itself."""
    out = dict(sources)
    overridden = {str(k).upper() for k in (own or {})}
    for method in DECODE_MACS_PER_ELEMENT:
        if method not in overridden:
            out.setdefault(f"decode_macs_per_element.{method}", DECODE_SOURCE)
    return out


# --------------------------------------------------------------------------- pricing

@dataclass
class OpLatency:
    index: int
    op: str
    kind: str
    dtype: str
    macs: int
    macs_used: int
    bytes_moved: int
    predicted_us: float
    share: float
    coefficient: str
    kernel: str
    flag: str = ""
    elements_decoded: int = 0   # TFLM DECODE: elements it decodes per invoke

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "type": self.kind, "dtype": self.dtype,
                "macs": self.macs, "macs_used": self.macs_used, "bytes": self.bytes_moved,
                "predicted_us": round(self.predicted_us, 3), "share": round(self.share, 4),
                "coefficient": self.coefficient, "kernel": self.kernel, "flag": self.flag,
                "elements_decoded": self.elements_decoded}


@dataclass
class CoefficientUse:
    """One coefficient's part in a prediction: what it is, where it comes from, how much time it prices."""

    coefficient: str     # 'macs_per_cycle.int8', 'overhead_us_per_op', 'fixed_overhead_us'...
    basis: str           # fitted | transferred | assumption
    source: str
    us: float
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {"coefficient": self.coefficient, "basis": self.basis, "source": self.source,
                "us": round(self.us, 4), "share": round(self.share, 4)}


@dataclass
class LatencyEstimate:
    latency_ms: float | None
    basis: str                 # "fitted" | "fitted+transferred" | "transferred" | "assumption" | "none"
    fit_source: str
    threads: int
    ops: list[OpLatency]
    fixed_overhead_us: float
    warnings: list[str] = field(default_factory=list)
    coefficients: list[CoefficientUse] = field(default_factory=list)
    summary: str = ""          # one line: which coefficients are fitted to what, which transferred/assumed
    decode: dict[str, Any] | None = None  # TFLM DECODE work per invoke (see _decode_summary); None: no DECODE

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": None if self.latency_ms is None else round(self.latency_ms, 4),
                "basis": self.basis, "fit_source": self.fit_source, "summary": self.summary,
                "threads": self.threads, "fixed_overhead_us": round(self.fixed_overhead_us, 3),
                "coefficients": [c.to_dict() for c in self.coefficients],
                "ops": [o.to_dict() for o in self.ops], "warnings": list(self.warnings),
                "decode": self.decode}


def thread_factor(coefs: LatencyCoefficients, threads: int, cores: int | None = None) -> float:
    """How much faster compute runs at `threads` than at the fitted thread count (Amdahl-style)."""
    def speed(t: int) -> float:
        t = max(1, min(t, cores or t))
        return 1.0 + coefs.parallel_efficiency * (t - 1)
    return speed(threads) / speed(coefs.fit_threads)


def price_ops(features: Sequence[OpCost], coefs: LatencyCoefficients, threads: int | None = None,
              cores: int | None = None) -> list[tuple[float, str, dict[str, float]]]:
    """Per op: (predicted µs, MAC coefficient used, µs per coefficient path)."""
    speedup = thread_factor(coefs, threads or coefs.fit_threads, cores)
    out = []
    for f in features:
        parts: dict[str, float] = {}
        used = ""
        scale = 1.0 / coefs.clock_mhz / speedup
        if f.macs_used:
            rate, used = coefs.macs_rate(f.coef_key)
            if rate > 0:
                parts[f"macs_per_cycle.{used}"] = f.macs_used / rate * scale
        if f.elementwise_ops:
            rate, path = coefs.elementwise_rate_key(f.dtype, f.coef_key)
            if rate > 0:
                parts[path] = parts.get(path, 0.0) + f.elementwise_ops / rate * scale
        for method, elements in f.decoded.items():
            cycles, path = coefs.decode_rate(method)
            if cycles > 0:
                parts[path] = parts.get(path, 0.0) + elements * cycles / coefs.clock_mhz
        if f.bytes_moved and coefs.bytes_per_cycle > 0:
            parts["bytes_per_cycle"] = f.bytes_moved / coefs.bytes_per_cycle * scale
        if f.coef_key != "once" and f.dispatched and coefs.overhead_us_per_op > 0:
            parts["overhead_us_per_op"] = coefs.overhead_us_per_op
        out.append((sum(parts.values()), used, parts))
    return out


def predict_ops_us(features: Sequence[OpCost], coefs: LatencyCoefficients,
                   threads: int | None = None, cores: int | None = None) -> list[tuple[float, str]]:
    """Predicted µs and the coefficient used, per op."""
    return [(us, used) for us, used, _ in price_ops(features, coefs, threads, cores)]


def _overall_basis(uses: Sequence[CoefficientUse]) -> str:
    """The weakest basis among the coefficients that price this model: never 'fitted' if any is not."""
    priced = [u for u in uses if u.us > 0]
    if not priced:
        return "none"
    if any(u.basis == "assumption" for u in priced):
        return "assumption"
    transferred = sum(u.share for u in priced if u.basis == "transferred")
    if transferred <= 0:
        return "fitted"
    return "transferred" if transferred >= 0.5 else "fitted+transferred"


def _origin(coefs: LatencyCoefficients, path: str) -> str:
    """The device a transferred coefficient comes from: MAC rates from transferred_from, overheads from
    overhead_from (each falling back to the other)."""
    if path in ("overhead_us_per_op", "fixed_overhead_us"):
        return coefs.overhead_from or coefs.transferred_from or "another device"
    if path.startswith("decode_macs_per_element") and coefs.source_of(path) == DECODE_SOURCE:
        return "a host measurement (bench/decode_cost.py)"
    return coefs.transferred_from or coefs.overhead_from or "another device"


def _basis_summary(coefs: LatencyCoefficients, uses: Sequence[CoefficientUse]) -> str:
    """'MACs fitted to ...; per-op overhead transferred from host (assumption) ...' in one line."""
    groups: dict[str, list[CoefficientUse]] = {}
    for u in uses:
        if u.us > 0:
            groups.setdefault(u.basis, []).append(u)
    parts = []
    for basis in ("fitted", "transferred", "assumption"):
        items = groups.get(basis, [])
        if not items:
            continue
        share = sum(u.share for u in items)
        names = ", ".join(u.coefficient for u in items)
        if basis == "fitted":
            wheres = []
            for u in items:
                if coefs.fit_source and u.source == "fitted: " + coefs.fit_source:
                    where = "; ".join(coefs.fit_rows) or coefs.fit_source
                else:
                    where = u.source[len("fitted: "):] if u.source.lower().startswith("fitted: ") else u.source
                if where not in wheres:
                    wheres.append(where)
            where = " | ".join(wheres)
            where = where if len(where) <= 160 else where[:157] + "..."
            parts.append((share, f"fitted ({share:.0%} of the time: {names}) to {where}"))
        elif basis == "transferred":
            by_origin: dict[str, list[CoefficientUse]] = {}
            for u in items:
                by_origin.setdefault(_origin(coefs, u.coefficient), []).append(u)
            for origin, group in by_origin.items():
                factor = coefs.transfer_factor if origin == coefs.transferred_from else coefs.overhead_factor
                how = f" x{factor:.3g}" if factor and origin in (coefs.transferred_from, coefs.overhead_from) else ""
                part_share = sum(u.share for u in group)
                parts.append((part_share, f"transferred from {origin}{how} (assumption; {part_share:.0%} of the "
                                          f"time: {', '.join(u.coefficient for u in group)})"))
        else:
            parts.append((share, f"assumption ({share:.0%} of the time: {names})"))
    return "; ".join(text for _, text in sorted(parts, key=lambda p: -p[0]))


# --------------------------------------------------------------------------- the estimate


def estimate_latency(graph: Any, profile: Profile, *, threads: int | None = None,
                     decode: DecodeWork | None = None) -> LatencyEstimate:
    """Latency of one inference on the profile, per op and in total, with what each figure rests on.

    `threads` (default: the profile's) must be >= 1 (`DataError` otherwise). With no
    [latency] coefficients, or an op class nothing prices, the latency is None, not a guess.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, Integral) or threads < 1):
        raise DataError("--threads (threads) must be >= 1", expected="a whole number of interpreter threads >= 1",
                        received=repr(threads), fix="Pass --threads 1 or more, or leave it out for the profile's")
    features = op_features(graph, profile, decode=decode)
    coefs = latency_coefficients(profile)
    threads = int(threads) if threads is not None else profile.threads
    if coefs is None or not coefs.macs_per_cycle:
        rows = [OpLatency(f.index, f.op, f.kind, f.dtype, f.macs, f.macs_used, f.bytes_moved, 0.0, 0.0,
                          "", f.kernel, "no coefficients") for f in features]
        return LatencyEstimate(None, "none", "", threads, rows, 0.0,
                               [f"profile {profile.name} has no [latency] coefficients: no latency estimate"],
                               summary="no latency coefficients")
    priced = price_ops(features, coefs, threads, profile.cores)
    total_us = sum(us for us, _, _ in priced) + coefs.fixed_overhead_us
    uses = _coefficient_uses(coefs, priced, total_us)
    basis = _overall_basis(uses)
    summary = _basis_summary(coefs, uses)
    warnings = _basis_warnings(profile.name, coefs, basis, uses)
    rows, unpriced = _op_rows(features, priced, coefs, total_us)
    decode_info = _decode_summary(features, priced, coefs)
    if unpriced:
        # A total that leaves MACs unpriced would understate latency (e.g. float32 on an
        # MCU profile fitted to int8 only): say "unknown" rather than print a wrong number.
        warnings.append(f"no latency estimate: {profile.name} has no coefficient for op class(es) "
                        + ", ".join(sorted(unpriced)) + ", so their MACs cannot be priced")
        return LatencyEstimate(None, "none", "", threads, rows, coefs.fixed_overhead_us, warnings,
                               coefficients=uses, summary="incomplete: no coefficient for "
                               + ", ".join(sorted(unpriced)), decode=decode_info)
    if threads != coefs.fit_threads:
        note = (f"coefficients were fitted at {coefs.fit_threads} thread(s); {threads} requested")
        if coefs.parallel_efficiency <= 0:
            note += " and no parallel efficiency was fitted: thread count ignored"
        warnings.append(note)
    fit_source = coefs.fit_source if coefs.fitted and coefs.fit_source else summary
    return LatencyEstimate(total_us / 1000.0, basis, fit_source, threads, rows, coefs.fixed_overhead_us,
                           warnings, coefficients=uses, summary=summary, decode=decode_info)


def _decode_summary(features: Sequence[OpCost], priced: Sequence[tuple[float, str, dict[str, float]]],
                    coefs: LatencyCoefficients) -> dict[str, Any] | None:
    """The DECODE work per invoke: elements by decode type, the time it adds, and its coefficients' basis."""
    rows = [(f, parts) for f, (_, _, parts) in zip(features, priced) if f.decoded]
    if not rows:
        return None
    by_type: dict[str, int] = {}
    for f, _ in rows:
        for method, n in f.decoded.items():
            by_type[method] = by_type.get(method, 0) + n
    decode_us = sum(us for _, parts in rows for path, us in parts.items() if path.startswith("decode_"))
    op_us = sum(sum(parts.values()) for _, parts in rows)
    coefficients = []
    for method in sorted(by_type):
        cycles, path = coefs.decode_rate(method)
        coefficients.append({"type": method, "coefficient": path,
                             "macs_per_element": coefs.decode_macs_per_element.get(method),
                             "cycles_per_element": round(cycles, 4), "basis": coefs.basis_of(path),
                             "source": coefs.source_of(path)})
    return {"ops": len(rows), "elements_per_invoke": sum(by_type.values()), "elements_by_type": by_type,
            "decode_us": round(decode_us, 3), "decode_ms": round(decode_us / 1000.0, 4),
            "ops_us": round(op_us, 3), "coefficients": coefficients}


def _coefficient_uses(coefs: LatencyCoefficients, priced: Sequence[tuple[float, str, dict[str, float]]],
                      total_us: float) -> list[CoefficientUse]:
    """Time priced by each coefficient path over the whole model, with its basis and source."""
    per_path: dict[str, float] = {}
    for _, _, parts in priced:
        for path, us in parts.items():
            per_path[path] = per_path.get(path, 0.0) + us
    if coefs.fixed_overhead_us > 0:
        per_path["fixed_overhead_us"] = coefs.fixed_overhead_us
    return [CoefficientUse(path, coefs.basis_of(path), coefs.source_of(path), us,
                           us / total_us if total_us > 0 else 0.0) for path, us in per_path.items()]


def _basis_warnings(name: str, coefs: LatencyCoefficients, basis: str, uses: Sequence[CoefficientUse]) -> list[str]:
    """The warning a latency not fitted on this device carries."""
    if basis == "assumption":
        return [f"latency coefficients of {name} are NOT fitted to measurements: "
                "the latency, energy and battery figures are assumptions"]
    if basis in ("transferred", "fitted+transferred"):
        moved = [u for u in uses if u.basis == "transferred" and u.us > 0]
        share = sum(u.share for u in moved)
        frm = ", ".join(sorted({_origin(coefs, u.coefficient) for u in moved}))
        return [f"latency of {name}: {share:.0%} of the predicted time rests on coefficients transferred "
                f"from {frm} (assumption, not measured on this device): "
                + ", ".join(u.coefficient for u in moved)]
    return []


def _op_rows(features: Sequence[OpCost], priced: Sequence[tuple[float, str, dict[str, float]]],
             coefs: LatencyCoefficients, total_us: float) -> tuple[list[OpLatency], set[str]]:
    """One row per op with its flag (unpriced, priced by a fallback, assumed, transferred), and the classes
    of ops whose MACs nothing prices."""
    rows = []
    unpriced = set()
    for f, (us, used, parts) in zip(features, priced):
        flag = ""
        if f.macs_used and not used:
            flag = "no coefficient for this op class"
            unpriced.add(f.coef_key)
        elif f.decoded and not any(p.startswith("decode_") for p in parts):
            flag = "no int8 FULLY_CONNECTED rate to price the decode work"
            unpriced.add("decode")
        elif used and used not in (f.coef_key, f.dtype) and f.kind in MAC_CLASSES:
            flag = f"priced with '{used}' (no own coefficient)"
        op_bases = {coefs.basis_of(p) for p, v in parts.items() if v > 0}
        if "assumption" in op_bases or (not parts and not coefs.fitted):
            flag = ("assumption; " + flag) if flag else "assumption"
        elif used and coefs.basis_of(f"macs_per_cycle.{used}") == "transferred":
            note = f"transferred from {coefs.transferred_from or 'another device'} (assumption)"
            flag = (note + "; " + flag) if flag else note
        elif f.decoded and any(coefs.basis_of(p) == "transferred" for p in parts if p.startswith("decode_")):
            flag = "decode cost transferred from a host measurement (assumption)"
        rows.append(OpLatency(f.index, f.op, f.kind, f.dtype, f.macs, f.macs_used, f.bytes_moved, us,
                              us / total_us if total_us > 0 else 0.0, used, f.kernel, flag,
                              sum(f.decoded.values())))
    return rows, unpriced
