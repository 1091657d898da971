"""Seeded, reproducible mutants of small real .tflite files, aimed at their flatbuffer structure.

Mutant i of a run is fully determined by (seed, i): its source model (i modulo the number of sources),
its kind and every offset and value come from numpy.random.default_rng([seed, i]). This is the mutator of
the fuzz study behind docs/graph.md "Validation" (scratch/fuzz): with the same three sources in the same
order (kws, ad01, tiny) `Mutator(...).mutant(i, seed)` rebuilds the study's mutant byte for byte, so the
crashes it found are regression cases without committing a binary file.

Kinds (share):
  flip         1-4 bytes XORed with a random non-zero mask: 40% in the first 2 KB, 40% inside a structural
               region (tables, vtables, index and shape vectors, strings), 20% anywhere (weights too)
  word         one aligned 32-bit word of a structural region set to an "interesting" value
  truncate     a cut in the first 2 KB, the structure or anywhere; or to 0, 4, 8, 12 bytes or half
  splice_other 16-512 structural bytes of another source copied over this one (length kept)
  dup_vtable   a table's soffset re-pointed at another table's vtable, or one vtable copied over another
  splice_self  one structural region copied over another of the same file

`structure_map` walks the real flatbuffer with a hand-written table of TFLite schema field ids, so it
needs no generated code; run it on valid files only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["KINDS", "MASTER_SEED", "Mutant", "Mutator", "Region", "study_sources", "structure_map"]

MASTER_SEED = 20261130
KINDS = (("flip", 0.34), ("word", 0.20), ("truncate", 0.14), ("splice_other", 0.12),
         ("dup_vtable", 0.10), ("splice_self", 0.10))
HEAD = 2048
TINY_MODEL = Path(__file__).resolve().parent / "data" / "tiny_int8.tflite"


def study_sources(mlperf_dir: Path) -> dict[str, Path]:
    """The study's three sources, in its order: KWS and AD01 (MLPerf Tiny, int8) and a 3.4 KB int8 CNN."""
    return {"kws": mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite",
            "ad01": mlperf_dir / "anomaly_detection" / "ad01_int8.tflite",
            "tiny": TINY_MODEL}


# --------------------------------------------------------------------------- where the structure is

# field id -> (kind, child); kinds: table, vec_table, vec_scalar (element size), string
SCHEMA: dict[str, dict[int, tuple]] = {
    "Model": {1: ("vec_table", "OperatorCode"), 2: ("vec_table", "SubGraph"), 3: ("string",),
              4: ("vec_table", "Buffer"), 5: ("vec_scalar", 4), 6: ("vec_table", "Metadata"),
              7: ("vec_table", "SignatureDef")},
    "OperatorCode": {1: ("string",)},
    "SubGraph": {0: ("vec_table", "Tensor"), 1: ("vec_scalar", 4), 2: ("vec_scalar", 4),
                 3: ("vec_table", "Operator"), 4: ("string",)},
    "Tensor": {0: ("vec_scalar", 4), 3: ("string",), 4: ("table", "QuantizationParameters"),
               6: ("table", "SparsityParameters"), 7: ("vec_scalar", 4)},
    "QuantizationParameters": {0: ("vec_scalar", 4), 1: ("vec_scalar", 4), 2: ("vec_scalar", 4),
                               3: ("vec_scalar", 8), 5: ("table", "Opaque")},
    "SparsityParameters": {0: ("vec_scalar", 4), 1: ("vec_scalar", 4), 2: ("vec_table", "Opaque")},
    "Operator": {1: ("vec_scalar", 4), 2: ("vec_scalar", 4), 4: ("table", "Opaque"), 5: ("vec_scalar", 1),
                 7: ("vec_scalar", 1), 8: ("vec_scalar", 4)},
    "Buffer": {0: ("vec_scalar", 1)},
    "Metadata": {0: ("string",)},
    "SignatureDef": {0: ("vec_table", "TensorMap"), 1: ("vec_table", "TensorMap"), 2: ("string",)},
    "TensorMap": {0: ("string",)},
    "Opaque": {},
}


@dataclass(frozen=True)
class Region:
    kind: str      # "table:<Type>", "vtable", "vector:<elem>", "vechead", "string", "header"
    start: int
    end: int


def structure_map(data: bytes) -> list[Region]:
    """Regions of a valid .tflite's structure. Buffer contents (weights) are left out."""
    regions: list[Region] = [Region("header", 0, 8)]
    seen: set[int] = set()

    def u32(o: int) -> int:
        return struct.unpack_from("<I", data, o)[0]

    def table(tab: int, typ: str) -> None:
        if tab in seen or not 0 < tab < len(data):
            return
        seen.add(tab)
        vt = tab - struct.unpack_from("<i", data, tab)[0]
        vt_size, tab_size = struct.unpack_from("<HH", data, vt)
        regions.append(Region("vtable", vt, vt + vt_size))
        regions.append(Region(f"table:{typ}", tab, tab + tab_size))
        for fid, spec in SCHEMA.get(typ, {}).items():
            slot = 4 + 2 * fid
            off = struct.unpack_from("<H", data, vt + slot)[0] if slot < vt_size else 0
            if off:
                _field(tab + off, typ, spec)

    def _field(p: int, typ: str, spec: tuple) -> None:
        target = p + u32(p)
        kind = spec[0]
        if kind == "table":
            table(target, spec[1])
        elif kind == "string":
            regions.append(Region("string", target, target + 4 + u32(target) + 1))
        elif kind == "vec_scalar":
            n = u32(target)
            if typ == "Buffer":  # weights: only the length word is structure
                regions.append(Region("vechead", target, target + 4))
            else:
                regions.append(Region(f"vector:{spec[1]}", target, target + 4 + n * spec[1]))
        elif kind == "vec_table":
            n = u32(target)
            regions.append(Region("vector:offsets", target, target + 4 + 4 * n))
            for i in range(n):
                q = target + 4 + 4 * i
                table(q + u32(q), spec[1])

    table(u32(0), "Model")
    return sorted(set(regions), key=lambda r: (r.start, r.end, r.kind))


# --------------------------------------------------------------------------- mutations


@dataclass
class Mutant:
    index: int
    seed: int
    source: str
    kind: str
    data: bytes
    edits: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"seed {self.seed} #{self.index} {self.source} {self.kind}: " + "; ".join(self.edits)


class Mutator:
    """Mutants of the given sources (name -> path), the i-th one from source i % len(sources)."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.paths = dict(sources)
        self._sources: dict[str, tuple[bytes, tuple[Region, ...]]] = {}

    def source(self, name: str) -> tuple[bytes, tuple[Region, ...]]:
        """A source's bytes and structure regions, read once."""
        if name not in self._sources:
            data = self.paths[name].read_bytes()
            self._sources[name] = data, tuple(r for r in structure_map(data) if r.end <= len(data))
        return self._sources[name]

    def mutant(self, index: int, seed: int = MASTER_SEED) -> Mutant:
        rng = np.random.default_rng([seed, index])
        name = list(self.paths)[index % len(self.paths)]
        kinds, probs = zip(*KINDS)
        kind = kinds[int(rng.choice(len(kinds), p=np.array(probs) / sum(probs)))]
        data, regions = self.source(name)
        m = Mutant(index, seed, name, kind, b"")
        operation: Callable[..., bytes] = getattr(self, "_" + kind)
        for _ in range(20):  # a mutation that leaves the bytes unchanged is drawn again
            m.edits.clear()
            m.data = operation(rng, data, regions, m)
            if m.data != data:
                break
        return m

    @staticmethod
    def _pick(rng: np.random.Generator, regions: tuple[Region, ...], kinds: tuple[str, ...] | None = None) -> Region:
        pool = [r for r in regions if kinds is None or r.kind.startswith(kinds)]
        return pool[int(rng.integers(len(pool)))]

    def _offset(self, rng: np.random.Generator, data: bytes, regions: tuple[Region, ...]) -> int:
        u = rng.random()
        if u < 0.4:
            return int(rng.integers(0, min(HEAD, len(data))))
        if u < 0.8:
            r = self._pick(rng, regions)
            return int(rng.integers(r.start, max(r.end, r.start + 1)))
        return int(rng.integers(0, len(data)))

    def _flip(self, rng: np.random.Generator, data: bytes, regions: tuple[Region, ...], m: Mutant) -> bytes:
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            pos = self._offset(rng, out, regions)
            mask = int(rng.integers(1, 256))
            out[pos] ^= mask
            m.edits.append(f"flip@{pos}^0x{mask:02x}")
        return bytes(out)

    def _word(self, rng: np.random.Generator, data: bytes, regions: tuple[Region, ...], m: Mutant) -> bytes:
        out = bytearray(data)
        r = self._pick(rng, regions, ("table", "vector", "vechead", "vtable", "header", "string"))
        pos = r.start if r.end - r.start < 4 else r.start + 4 * int(rng.integers(0, (r.end - r.start) // 4))
        pos = min(pos, len(out) - 4)
        old = struct.unpack_from("<i", out, pos)[0]
        choices = [0, 1, -1, 2, 0x7FFFFFFF, -0x80000000, len(data), len(data) + 4, old + 1, old - 1,
                   old * 256, 0xFFFF, 255, 1 << 20]
        new = choices[int(rng.integers(len(choices)))]
        new = (new + (1 << 31)) % (1 << 32) - (1 << 31)
        struct.pack_into("<i", out, pos, new)
        m.edits.append(f"word@{pos}({r.kind}) {old}->{new}")
        return bytes(out)

    def _truncate(self, rng: np.random.Generator, data: bytes, regions: tuple[Region, ...], m: Mutant) -> bytes:
        u = rng.random()
        if u < 0.1:
            fixed = [0, 4, 8, 12, len(data) // 2]
            n = fixed[int(rng.integers(len(fixed)))]
        elif u < 0.45:
            n = int(rng.integers(1, min(HEAD, len(data))))
        elif u < 0.7:
            n = int(rng.integers(1, max(r.end for r in regions if r.kind != "vechead")))
        else:
            n = int(rng.integers(1, len(data)))
        m.edits.append(f"truncate@{n}/{len(data)}")
        return data[:n]

    def _splice_other(self, rng: np.random.Generator, data: bytes, regions: tuple[Region, ...],
                      m: Mutant) -> bytes:
        others = [s for s in self.paths if s != m.source]
        other = others[int(rng.integers(len(others)))]
        odata, oregions = self.source(other)
        src_r = self._pick(rng, oregions, ("table", "vector", "vtable", "string"))
        src = odata[src_r.start:src_r.start + int(rng.integers(16, 513))]
        dst = self._offset(rng, data, regions) if rng.random() < 0.5 else self._pick(rng, regions).start
        out = bytearray(data)
        n = min(len(src), len(out) - dst)
        out[dst:dst + n] = src[:n]
        m.edits.append(f"splice {other}[{src_r.start}:+{n}]({src_r.kind}) -> @{dst}")
        return bytes(out)

    def _dup_vtable(self, rng: np.random.Generator, data: bytes, regions: tuple[Region, ...], m: Mutant) -> bytes:
        out = bytearray(data)
        tables = [r for r in regions if r.kind.startswith("table:")]
        vtables = [r for r in regions if r.kind == "vtable"]
        if rng.random() < 0.5:
            t = tables[int(rng.integers(len(tables)))]
            v = vtables[int(rng.integers(len(vtables)))]
            old = struct.unpack_from("<i", out, t.start)[0]
            struct.pack_into("<i", out, t.start, t.start - v.start)
            m.edits.append(f"repoint {t.kind}@{t.start} soffset {old}->{t.start - v.start} (vtable@{v.start})")
        else:
            a = vtables[int(rng.integers(len(vtables)))]
            b = vtables[int(rng.integers(len(vtables)))]
            n = min(b.end - b.start, len(out) - a.start) if rng.random() < 0.5 else min(a.end - a.start,
                                                                                         b.end - b.start)
            out[a.start:a.start + n] = data[b.start:b.start + n]
            m.edits.append(f"vtable@{b.start}[:{n}] copied over vtable@{a.start}")
        return bytes(out)

    def _splice_self(self, rng: np.random.Generator, data: bytes, regions: tuple[Region, ...], m: Mutant) -> bytes:
        a = self._pick(rng, regions, ("table", "vector", "vtable", "string"))
        b = self._pick(rng, regions, ("table", "vector", "vtable", "string"))
        n = min(a.end - a.start, 256, len(data) - b.start)
        out = bytearray(data)
        out[b.start:b.start + n] = data[a.start:a.start + n]
        m.edits.append(f"{a.kind}@{a.start}[:{n}] copied over {b.kind}@{b.start}")
        return bytes(out)
