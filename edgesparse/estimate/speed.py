"""Is the pruned artifact faster than dense int8 on a device? The estimator's answer, its basis, and the host's.

Why: pruning shrinks files everywhere but makes models faster only where a
kernel skips the zeros, and some sparse kernels are slower than the dense ones
they replace (LiteRT's 1x16 block-sparse int8 FULLY_CONNECTED is a scalar loop
on x86; DENSIFY hands the dense kernel every weight back). A build or `check`
must therefore say, per profile, whether the artifact is expected to be
faster, the same or slower than its dense int8 baseline, what that rests on
(fitted on the device, or transferred from another kernel or device), and call
a pruning that only shrinks the file "size only". Both files are priced by
the same estimator (`check_model`), so its errors common to both largely
cancel in the ratio; a kernel the profile has no coefficient for is priced by
a fallback class, and the claim then says it is a transfer, from where.

`speed_claim` returns report.json's "speed" section (shape in its docstring).
Raises what `check_model` raises (`ModelError`, `ProfileError`) and, for
`measure_host`, what `runtime.measure.compare_latency` raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgesparse._types import is_assumption
from edgesparse.builddir import BASELINES
from edgesparse.errors import ProfileError
from edgesparse.estimate.check import CheckResult, check_model, load_graph_any
from edgesparse.estimate.latency import (
    LatencyCoefficients,
    OpCost,
    estimate_latency,
    latency_coefficients,
    op_features,
    price_ops,
)
from edgesparse.profiles import Profile, load_profile
from edgesparse.runtime.measure import COMPARE_ROUNDS, COMPARE_RUNS_PER_ROUND, compare_latency
from edgesparse.runtime.vela import LATENCY_BASIS

__all__ = [
    "ESTIMATE_BAND",
    "HOST_BAND",
    "HOST_BUDGET_SECONDS",
    "HostTiming",
    "check_speed",
    "default_baseline",
    "kernel_differences",
    "layer_speed",
    "measure_host",
    "speed_claim",
    "verdict",
]

# "same" when the estimated ratio is within 5 %: both files are priced by the same coefficients, so what
# separates them is the ops whose kernels differ; a difference under 5 % is below what the cost model
# resolves (the per-op overhead alone is ~5-15 % of a small model on the LiteRT profiles) and no user
# would notice it.
ESTIMATE_BAND = 0.05
# "same" when the measured ratio of medians is within 8 %: prunings that change no kernel measured
# 0.97-1.07x against dense int8 interleaved on this machine (issue 11's MobileNetV2 study), and rounds
# of the same pair here move by a few percent; 8 % keeps that noise from being called a speed change.
HOST_BAND = 0.08
# The file counts as smaller only by more than 0.5 % (flatbuffer padding and metadata move a few bytes).
_SMALLER = 0.995
_BASIS_ORDER = ("fitted", "fitted+transferred", "transferred", "assumption", "none")


def verdict(ratio: float | None, band: float = ESTIMATE_BAND) -> str:
    """'faster' | 'same' | 'slower' for artifact/dense latency `ratio`; 'unknown' without one."""
    if ratio is None:
        return "unknown"
    if ratio < 1 - band:
        return "faster"
    return "slower" if ratio > 1 + band else "same"


def _weakest(*bases: str) -> str:
    """The least trustworthy of several latency bases (fitted < fitted+transferred < ... < none).

    Ethos-U estimates ("Vela performance model[+<the CPU part's basis>]") stay named as such when every
    basis is one: the weakest of their CPU parts is appended."""
    if bases and all(b.startswith(LATENCY_BASIS) for b in bases):
        worst = _weakest(*[b[len(LATENCY_BASIS):].lstrip("+") or "fitted" for b in bases])
        return LATENCY_BASIS if worst == "fitted" else f"{LATENCY_BASIS}+{worst}"
    known = [b if b in _BASIS_ORDER else "assumption" for b in bases]
    return max(known, key=_BASIS_ORDER.index) if known else "none"


@dataclass(frozen=True)
class HostTiming:
    """The artifact and its dense int8 baseline timed side by side on this machine (`compare_latency`)."""

    runtime: str
    interpreter: str
    threads: int
    dense_int8_ms: float
    artifact_ms: float
    ratio: float               # artifact median / dense int8 median (> 1: slower)
    rounds: int
    runs_per_round: int
    artifact_kernels: tuple[str, ...] = ()

    @classmethod
    def from_comparison(cls, result: dict[str, Any], *, artifact: str = "artifact",
                        baseline: str = "dense_int8") -> HostTiming:
        """From `compare_latency`'s dict, whose models include `artifact` and `baseline`."""
        models = result["models"]
        dense_ms, art_ms = models[baseline]["median_ms"], models[artifact]["median_ms"]
        return cls(runtime=result["runtime"], interpreter=result["interpreter"], threads=result["threads"],
                   dense_int8_ms=dense_ms, artifact_ms=art_ms, ratio=art_ms / dense_ms, rounds=result["rounds"],
                   runs_per_round=result["runs_per_round"], artifact_kernels=tuple(models[artifact]["kernels"]))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(dense_int8_ms=round(self.dense_int8_ms, 5), artifact_ms=round(self.artifact_ms, 5),
                   ratio=round(self.ratio, 3), artifact_kernels=list(self.artifact_kernels),
                   verdict=verdict(self.ratio, HOST_BAND), band=HOST_BAND)
        return out


#: How long a build's host measurement may take (timed rounds, both models; warm-up and loading aside).
HOST_BUDGET_SECONDS = 6.0


def measure_host(artifact: bytes, dense_int8: bytes, *, threads: int = 1, rounds: int = COMPARE_ROUNDS,
                 runs_per_round: int = COMPARE_RUNS_PER_ROUND,
                 max_seconds: float | None = HOST_BUDGET_SECONDS) -> HostTiming:
    """Time both files interleaved in LiteRT on this machine (only meaningful for LiteRT profiles).

    A build spends at most about `max_seconds` timing: a slow model gets fewer runs per round (the
    section records how many ran), never fewer rounds, so the ratio stays a side-by-side one.
    """
    result = compare_latency({"dense_int8": dense_int8, "artifact": artifact}, runtime="litert", threads=threads,
                             rounds=rounds, runs_per_round=runs_per_round, max_seconds=max_seconds)
    return HostTiming.from_comparison(result)


# --------------------------------------------------------------------------- which kernels differ

def _short(text: str, limit: int = 140) -> str:
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _kernel_source(profile: Profile, f: OpCost) -> str:
    """Where the profile says this sparse kernel comes from (its [sources] entry for the block shape)."""
    key = "runtime.block_sparsity_int8" if f.dtype == "int8" else "runtime.block_sparsity"
    return profile.source(key) or "tensorflow/lite/kernels/fully_connected.cc (LiteRT's sparse FULLY_CONNECTED)"


def _sparse_fc_name(profile: Profile, f: OpCost) -> str:
    block = profile.block_sparsity_int8 if f.dtype == "int8" else profile.block_sparsity
    shape = f"{block[0]}x{block[1]} block-sparse " if block else "sparse "
    return f"{shape}{f.dtype} FULLY_CONNECTED"


def kernel_differences(graph: Any, profile: Profile, coefs: LatencyCoefficients | None = None) -> list[dict[str, Any]]:
    """The artifact's ops whose kernel is not the dense one, each with what prices it and on what basis.

    `priced_by` is the coefficient class the estimator used; when it is not the op's own class
    (`class`), the kernel was never timed on this profile and its cost is transferred from the
    dense kernel's rate: basis 'transferred'.
    """
    coefs = coefs if coefs is not None else latency_coefficients(profile)
    rows = []
    for f in op_features(graph, profile):
        if f.coef_key == "once" or f.kind == "decode":
            continue
        sparse = f.coef_key.endswith("_sparse")
        builtin = f.coef_key.endswith("_builtin")
        densified = "densified by DENSIFY" in f.kernel
        if not (sparse or builtin or densified):
            continue
        used, basis, source = "", "none", ""
        if coefs is not None and f.macs_used:
            _, used = coefs.macs_rate(f.coef_key)
            if used:
                path = f"macs_per_cycle.{used}"
                basis = coefs.basis_of(path) if used == f.coef_key else "transferred"
                source = _short(coefs.source_of(path))
        what = "densified" if densified else ("sparse" if sparse else "builtin")
        rows.append({"index": f.index, "op": f.op, "dtype": f.dtype, "what": what, "kernel": f.kernel,
                     "class": f.coef_key, "priced_by": used, "basis": basis, "coefficient_source": source,
                     "macs": f.macs, "macs_used": f.macs_used,
                     "source": _kernel_source(profile, f) if sparse else ""})
    return rows


def _kernel_notes(profile: Profile, graph: Any, rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per kind of differing kernel: what runs, what prices it, and whether that is a transfer."""
    notes = []
    for r in (r for r in rows if r["what"] == "sparse"):
        name = _sparse_fc_name(profile, OpCost(r["index"], r["op"], "fc", r["dtype"], r["class"], 0, 0, 0, 0, ""))
        head = (f"op {r['index']}: the {name} runs LiteRT's builtin sparse kernel on {r['macs_used']:,} of its "
                f"{r['macs']:,} MACs (source: {r['source']})")
        if r["basis"] == "transferred" and r["priced_by"].endswith("_builtin"):
            notes.append(f"{head}; {profile.name} has no coefficient for it ({r['class']}): it is priced at LiteRT's "
                         f"builtin dense kernel rate ('{r['priced_by']}', timed on this device), i.e. a stored MAC "
                         "is assumed to cost what a builtin dense MAC costs: a transfer between kernels")
        elif r["basis"] == "transferred" and r["priced_by"]:
            notes.append(f"{head}; {profile.name} has no coefficient for it ({r['class']}): it is priced at the "
                         f"dense '{r['priced_by']}' rate ({r['coefficient_source'] or 'the profile fit'}), i.e. "
                         "a stored MAC is assumed to cost what a dense XNNPACK MAC costs. That is a TRANSFER, "
                         "not a measurement: the kernel is NEON on ARM and a scalar loop on x86, single-threaded "
                         "everywhere, and was never timed on this device")
        else:
            notes.append(f"{head}; priced by '{r['class']}' ({r['basis']}: {r['coefficient_source']})")
    builtin = [r for r in rows if r["what"] == "builtin"]
    if builtin:
        moved = sorted({f"{r['class']} -> {r['priced_by']}" for r in builtin if r["basis"] == "transferred"})
        ops = ", ".join(sorted({r["op"] for r in builtin}))
        text = (f"{len(builtin)} other op(s) ({ops}) are priced as LiteRT's builtin kernels, because XNNPACK "
                "declines a sparse int8 FULLY_CONNECTED" if any(r["what"] == "sparse" for r in rows) else
                f"{len(builtin)} op(s) ({ops}) are priced as LiteRT's builtin kernels (XNNPACK does not take "
                "these int8 ops)")
        notes.append(text + (f"; {profile.name} has no builtin-kernel coefficients, so they are priced at the "
                             f"XNNPACK rates ({', '.join(moved)}): a transfer" if moved else ""))
    densified = [r for r in rows if r["what"] == "densified"]
    if densified:
        notes.append(f"{len(densified)} op(s) read weights DENSIFY expands at load ("
                     + ", ".join(sorted({r['op'] for r in densified}))
                     + "): the dense kernel runs every MAC, so these layers gain file size, not speed")
    if profile.runtime == "tflm" and any(getattr(op, "sparse_weights", False) for op in graph.ops):
        notes.append("TFLite Micro has no sparse kernels: pruning can shrink the file (DECODE), never the MACs")
    return notes


def _host_cross_check(artifact_graph: Any, dense_graph: Any, profile: Profile) -> str | None:
    """The same ratio on the host profile, whose builtin kernels were timed: a check on a transferred claim."""
    if profile.name == "host":
        return None
    try:
        host = load_profile("host")
    except ProfileError:  # an install without the shipped host profile: no cross-check
        return None
    art, dense = estimate_latency(artifact_graph, host), estimate_latency(dense_graph, host)
    if not art.latency_ms or not dense.latency_ms:
        return None
    return (f"cross-check: on the host profile (x86-64 LiteRT, where the builtin kernels were timed; basis "
            f"{art.basis}) the same files are estimated {art.latency_ms / dense.latency_ms:.2f}x dense int8")


# --------------------------------------------------------------------------- one layer, before conversion

def _sparse_key(coefs: LatencyCoefficients, kind: str, dtype: str, xnnpack: bool, encoding: str) -> str:
    """The class that prices a layer's sparse encoding. LiteRT's sparse FULLY_CONNECTED is a builtin kernel,
    and XNNPACK declines an int8 FC fed sparse weights (DENSIFY or not): where the profile has a timed
    builtin rate (host: fc_int8_builtin) and no rate of the sparse kernel's own, the builtin rate prices it."""
    own = f"{kind}_{dtype}_sparse" if encoding == "block" else f"{kind}_{dtype}"
    builtin = f"{kind}_{dtype}_builtin"
    int8_fc = kind == "fc" and dtype == "int8" and xnnpack
    if int8_fc and (encoding == "densify" or own not in coefs.macs_per_cycle) and builtin in coefs.macs_per_cycle:
        return builtin
    return own


def layer_speed(profile: Profile, *, kind: str, macs: int, sparsity: float, dtype: str,
                encoding: str) -> dict[str, Any]:
    """Is one layer's sparse encoding predicted faster, the same or slower than its dense kernel on `profile`?

    The per-layer question `plan_policy(optimize=...)` asks before anything is converted. `kind`: 'fc' or
    'conv'; `encoding`: 'block' (LiteRT's sparse FULLY_CONNECTED reads the stored blocks: MACs x (1 -
    sparsity)) or 'densify' (DENSIFY hands the kernel dense weights: every MAC). Priced with the estimator's
    per-op pricing (`price_ops`) and the profile's coefficients. Returns {ratio, verdict, basis, priced_by,
    note}; verdict 'unknown' without latency coefficients. A kernel priced by another class's rate is a
    transfer (basis 'transferred'), and the note says from which.
    """
    coefs = latency_coefficients(profile)
    if coefs is None or not coefs.macs_per_cycle or macs <= 0:
        return {"ratio": None, "verdict": "unknown", "basis": "none", "priced_by": "",
                "note": f"{profile.name} has no latency coefficients to price this layer"}
    xnnpack = profile.runtime == "litert" and "xnnpack" in profile.kernels.lower()
    width = 1 if dtype == "int8" else 4
    kept = max(0.0, 1.0 - sparsity)
    dense = OpCost(0, kind.upper(), kind, dtype, f"{kind}_{dtype}", macs, macs, 0, macs * width, "dense")
    key = _sparse_key(coefs, kind, dtype, xnnpack, encoding)
    used_macs = round(macs * kept) if encoding == "block" else macs
    stored = int(macs * width * kept) if encoding == "block" else macs * width
    sparse = OpCost(1, kind.upper(), kind, dtype, key, macs, used_macs, 0, stored, encoding)
    (dense_us, dense_used, _), (sparse_us, used, _) = price_ops([dense, sparse], coefs)
    ratio = sparse_us / dense_us if dense_us > 0 else None
    basis = coefs.basis_of(f"macs_per_cycle.{used}") if used else "none"
    what = "the sparse kernel" if encoding == "block" else "the dense kernel reading DENSIFY's output"
    wanted = f"{kind}_{dtype}_sparse" if encoding == "block" else dense_used
    if used.endswith("_builtin") and encoding == "densify":
        note = (f"XNNPACK declines an int8 FULLY_CONNECTED fed by DENSIFY: LiteRT's builtin dense kernel runs it, "
                f"priced at '{used}' ({basis})")
    elif used and used != wanted:
        basis = "transferred"
        note = (f"{what} has no rate of its own on {profile.name} ({wanted}): priced at '{used}'"
                + (" (LiteRT's builtin kernel, timed on this profile)" if used.endswith("_builtin")
                   else " (the dense rate): a transfer, not measured"))
    else:
        note = f"{what} priced at '{used}' ({basis})"
    return {"ratio": None if ratio is None else round(ratio, 3), "verdict": verdict(ratio), "basis": basis,
            "priced_by": used, "note": note}


# --------------------------------------------------------------------------- the claim

def speed_claim(artifact: bytes, dense_int8: bytes, profile: Profile | str, *, host: HostTiming | None = None,
                threads: int | None = None) -> dict[str, Any]:
    """report.json's "speed" section: the artifact against dense int8 on `profile`, estimated (and on the host).

    Shape: {profile, runtime, artifact_bytes, dense_int8_bytes, file_ratio, band,
    estimated: {dense_int8_ms, artifact_ms, ratio, verdict, basis, notes, kernels},
    host: HostTiming.to_dict() | None, size_only, claim}. Ratios are artifact / dense
    (< 1: faster); on an Ethos-U profile the byte counts are Vela's compiled files and the
    latencies Vela's (pass the plain int8 artifact: a compiled one cannot be priced). `host` belongs
    to LiteRT profiles only: on TFLite Micro the
    wheel's interpreter (reference kernels, x86) says nothing about the device.
    """
    prof = profile if isinstance(profile, Profile) else load_profile(str(profile))
    art_graph, art_bytes, _ = load_graph_any(artifact)
    dense_graph, dense_bytes, _ = load_graph_any(dense_int8)
    art_check, dense_check = (check_model(art_bytes, prof, threads=threads),
                              check_model(dense_bytes, prof, threads=threads))
    estimated = _estimated(prof, art_graph, dense_graph, art_check, dense_check)
    # on an Ethos-U profile the file flashed is Vela's compilation of each (its encoded weights shrink)
    art_size, dense_size = ((art_check.model_size, dense_check.model_size) if prof.npu is not None
                            else (len(art_bytes), len(dense_bytes)))
    file_ratio = art_size / dense_size
    host_dict = host.to_dict() if host is not None else None
    deciding = estimated["verdict"] if estimated["verdict"] != "unknown" else (
        host_dict["verdict"] if host_dict else "unknown")
    size_only = file_ratio < _SMALLER and deciding in ("same", "slower")
    return {"profile": prof.name, "runtime": prof.runtime_name, "artifact_bytes": art_size,
            "dense_int8_bytes": dense_size, "file_ratio": round(file_ratio, 4), "band": ESTIMATE_BAND,
            "estimated": estimated, "host": host_dict, "size_only": size_only,
            "claim": _claim(prof.name, estimated, host_dict, file_ratio, size_only)}


def _estimated(prof: Profile, art_graph: Any, dense_graph: Any, art: CheckResult,
               dense: CheckResult) -> dict[str, Any]:
    a_ms, d_ms = art.latency_ms, dense.latency_ms
    ratio = a_ms / d_ms if a_ms is not None and d_ms else None
    rows = kernel_differences(art_graph, prof)
    notes = _kernel_notes(prof, art_graph, rows)
    basis = _weakest(art.latency.basis, dense.latency.basis)
    if any(r["basis"] == "transferred" for r in rows):
        basis = _weakest(basis, "transferred")
        cross = _host_cross_check(art_graph, dense_graph, prof) if prof.runtime == "litert" else None
        if cross:
            notes.append(cross)
    decode = (art.latency.decode or {})
    if decode.get("decode_ms"):
        notes.append(f"DECODE expands {decode.get('elements_per_invoke', 0):,} weights on every invoke: "
                     f"+{decode['decode_ms']:.3g} ms (decode cost transferred from a host measurement)")
        basis = _weakest(basis, "transferred")
    if ratio is None:
        notes.append(f"{prof.name} has no latency estimate for "
                     + ("either file" if a_ms is None and d_ms is None else "one of the files"))
    return {"dense_int8_ms": None if d_ms is None else round(d_ms, 5),
            "artifact_ms": None if a_ms is None else round(a_ms, 5),
            "ratio": None if ratio is None else round(ratio, 3), "verdict": verdict(ratio), "basis": basis,
            "assumed": is_assumption(basis), "notes": notes, "kernels": rows}


def _times(ratio: float) -> str:
    """'1.72x slower than' / '1.25x faster than' / 'as fast as' (within the band's wording)."""
    if ratio > 1:
        return f"{ratio:.2f}x slower than"
    return f"{1 / ratio:.2f}x faster than"


def _claim(profile: str, est: dict[str, Any], host: dict[str, Any] | None, file_ratio: float,
           size_only: bool) -> str:
    """One sentence a person can repeat: the verdict, what it rests on, the file, the host measurement."""
    v, ratio, basis = est["verdict"], est["ratio"], est["basis"]
    transferred_kernel = any(k["basis"] == "transferred" for k in est["kernels"])
    if v == "unknown":
        text = f"On {profile} the estimator cannot price both files, so no speed claim is made"
    else:
        how = "about as fast as" if v == "same" else _times(ratio)
        rests = basis + (": the sparse kernel's cost is a transfer, see the notes" if transferred_kernel else "")
        text = f"On {profile} the artifact is expected to be {how} dense int8 (x{ratio:.2f}, estimated; {rests})"
    if file_ratio < _SMALLER:
        text += f"; its file is {1 / file_ratio:.2f}x smaller" + (": size only" if size_only else "")
    elif file_ratio > 2 - _SMALLER:
        text += f"; its file is {file_ratio:.2f}x LARGER than dense int8"
    text += "."
    if host:
        hv = host["verdict"]
        how = "about as fast as" if hv == "same" else _times(host["ratio"])
        text += (f" On this host it measured {how} dense int8 in {host['runtime']} (x{host['ratio']:.2f}, "
                 f"ratio of medians, {host['rounds']} interleaved rounds, {host['threads']} thread"
                 + ("s)." if host["threads"] != 1 else ")."))
    return text


# --------------------------------------------------------------------------- check --baseline

def default_baseline(model: str | Path) -> Path | None:
    """baselines/dense_int8.tflite beside a build directory's model.tflite, if it is there."""
    candidate = Path(model).parent / BASELINES["dense_int8"]
    return candidate if candidate.is_file() else None


def check_speed(model: str | Path, baseline: str | Path, profiles: Iterable[Profile | str], *,
                threads: int | None = None) -> list[dict[str, Any]]:
    """`edgesparse check MODEL --baseline DENSE`: one speed section per profile (estimated only)."""
    art, dense = Path(model).read_bytes(), Path(baseline).read_bytes()
    return [speed_claim(art, dense, p, threads=threads) for p in profiles]
