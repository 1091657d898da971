"""The `Profile` type: one loaded, validated device profile, and where profiles are found.

Why typed accessors: the estimator, deploy and the CLI read the same values
(the runtime, the core, the threads, the sources); reading them here once, with
one default each, keeps them from re-implementing profile access in their own
shapes. `Profile.raw` stays available for tables read as a whole.

Profiles ship in `device_profiles/` at the repository top level and, in a
wheel, as `edgesparse/device_profiles/`; `PROFILE_DIRS` is searched in order.
`load_profile` raises `ProfileError` (exit code 2) for an unknown name or a
missing file (with a did-you-mean hint) and `ProfileValidationError` (a
`ProfileError`) listing every problem of an invalid profile. This module never
prints.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

# Re-exported (`X as X`) so that `from edgesparse.profiles.profile import ...` keeps working for these names.
from edgesparse.errors import ProfileError as ProfileError
from edgesparse.profiles.schema import INTERPRETER_OF, NPU_RUNTIMES, SOURCES, core_from_cpu
from edgesparse.profiles.schema import SCHEMA as SCHEMA
from edgesparse.profiles.validate import ProfileValidationError as ProfileValidationError
from edgesparse.profiles.validate import validate as validate

__all__ = [
    "PROFILE_DIR",
    "NpuConfig",
    "PROFILE_DIRS",
    "Profile",
    "available_profiles",
    "display_path",
    "load_profile",
]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Wheel first (package data), then the source checkout / editable install.
PROFILE_DIRS = (_PACKAGE_DIR / "device_profiles", _PACKAGE_DIR.parent / "device_profiles")


def _profile_dir() -> Path:
    """The first of PROFILE_DIRS that holds profiles (the last one if none does)."""
    for directory in PROFILE_DIRS:
        if directory.is_dir() and any(directory.glob("*.toml")):
            return directory
    return PROFILE_DIRS[-1]


PROFILE_DIR = _profile_dir()


@dataclass(frozen=True)
class NpuConfig:
    """A profile's [npu] table, typed: what Vela needs to compile for this device's Ethos-U, and the
    power while it runs. Keys and meanings: `edgesparse.profiles.schema.SCHEMA["npu"]`."""

    accelerator: str                  # Vela --accelerator-config, e.g. "ethos-u55-128"
    clock_mhz: float                  # NPU core clock
    memory_mode: str                  # "Sram_Only" | "Shared_Sram" | "Dedicated_Sram"
    axi0: str                         # memory area on AXI0 ("Sram")
    axi1: str                         # memory area on AXI1, where weights live ("OffChipFlash", ...)
    axi0_memory: Mapping[str, float]  # clock_scale, burst_length, read/write_latency, max_reads/writes
    axi1_memory: Mapping[str, float]
    sram_bytes: int                   # SRAM the NPU's arena may use
    arena_cache_bytes: int | None     # Dedicated_Sram: Vela's arena_cache_size
    active_mw: float                  # power while the NPU runs an inference

    @property
    def macs_per_cycle(self) -> int:
        """The configuration's int8 MACs per cycle, the number in its name (ethos-u55-128 -> 128)."""
        return int(self.accelerator.rsplit("-", 1)[1])

    @property
    def product(self) -> str:
        """'Ethos-U55' or 'Ethos-U65', as Arm names it."""
        return "Ethos-" + self.accelerator.split("-")[1].upper()


@dataclass(frozen=True)
class Profile:
    """A device profile. `load_profile` validates it, so the defaults below matter only for a
    `Profile` built by hand (tests); they are the ones the estimator has always assumed."""

    name: str
    path: Path
    sha256: str
    raw: Mapping[str, Any] = field(repr=False)

    # ----------------------------------------------------------------- tables

    def table(self, name: str) -> Mapping[str, Any]:
        """A table of the profile ({} when the profile has none, e.g. host power)."""
        value = self.raw.get(name)
        return value if isinstance(value, Mapping) else {}

    @property
    def device(self) -> Mapping[str, Any]:
        """The [device] table."""
        return self.table("device")

    @property
    def runtime_table(self) -> Mapping[str, Any]:
        """The [runtime] table (`runtime` is the runtime's name)."""
        return self.table("runtime")

    @property
    def budget(self) -> Mapping[str, Any]:
        """The [budget] table: what a model may use on this device."""
        return self.table("budget")

    @property
    def sources(self) -> Mapping[str, str]:
        """The [sources] table: "table.key" -> where the value comes from."""
        return self.table(SOURCES)

    def sources_of(self, table: str) -> dict[str, str]:
        """The [sources] entries of one table, keyed without the table prefix ("latency.x" -> "x")."""
        prefix = table + "."
        return {str(k)[len(prefix):]: str(v) for k, v in self.sources.items() if str(k).startswith(prefix)}

    # ----------------------------------------------------------------- [device]

    @property
    def device_class(self) -> str:
        return str(self.device.get("class", ""))

    @property
    def cpu(self) -> str:
        """The core type as the profile writes it, e.g. 'Cortex-M4F'."""
        return str(self.device.get("cpu", ""))

    @property
    def core(self) -> str | None:
        """The core as compilers name it, read from `cpu`: 'cortex-m4', 'cortex-m0plus', 'xtensa-lx7',
        'cortex-a72'; None when `cpu` names no Arm Cortex or Xtensa core (the x86 host)."""
        return core_from_cpu(self.cpu)

    @property
    def cores(self) -> int | None:
        return int(self.device.get("cores", 0) or 0) or None

    @property
    def clock_mhz(self) -> float | None:
        """Max clock of the cores inference runs on ([latency] clock_mhz may override it for the model)."""
        return float(self.device.get("clock_mhz", 0) or 0) or None

    @property
    def simd(self) -> tuple[str, ...]:
        """SIMD/DSP features, lower case; () when the profile lists none."""
        return tuple(str(s).lower() for s in (self.device.get("simd") or ()))

    # ----------------------------------------------------------------- [runtime]

    @property
    def runtime(self) -> str:
        """The interpreter that runs the model's CPU side and verifies it here: 'litert' or 'tflm'.

        An Ethos-U profile (runtime.name 'tflm+ethos-u') answers 'tflm': TFLM runs the Vela-compiled
        model, the NPU's command stream being one custom operator. `npu` says whether there is an NPU;
        `runtime_name` is the name as the profile writes it, for display."""
        return INTERPRETER_OF.get(self.runtime_name, self.runtime_name)

    @property
    def runtime_name(self) -> str:
        """runtime.name as written: 'litert', 'tflm' or 'tflm+ethos-u'."""
        return str(self.runtime_table.get("name", "litert"))

    @property
    def npu(self) -> NpuConfig | None:
        """The Ethos-U NPU this device compiles for with Vela; None for a device without one."""
        table = self.table("npu")
        if self.runtime_name not in NPU_RUNTIMES or not table:
            return None
        cache = table.get("arena_cache_bytes")
        return NpuConfig(
            accelerator=str(table["accelerator"]), clock_mhz=float(table["clock_mhz"]),
            memory_mode=str(table["memory_mode"]), axi0=str(table["axi0"]), axi1=str(table["axi1"]),
            axi0_memory={str(k): float(v) for k, v in table["axi0_memory"].items()},
            axi1_memory={str(k): float(v) for k, v in table["axi1_memory"].items()},
            sram_bytes=int(table["sram_bytes"]),
            arena_cache_bytes=None if cache is None else int(cache),
            active_mw=float(table["active_mw"]))

    @property
    def kernels(self) -> str:
        """Kernel library: xnnpack, builtin, cmsis-nn, esp-nn or reference."""
        return str(self.runtime_table.get("kernels", ""))

    @property
    def threads(self) -> int:
        return int(self.runtime_table.get("threads", 1) or 1)

    @property
    def sparse_weights(self) -> bool:
        return bool(self.runtime_table.get("sparse_weights", False))

    @property
    def block_sparsity(self) -> tuple[int, int] | None:
        """Block shape the float sparse FULLY_CONNECTED kernel exploits."""
        return _block(self.runtime_table.get("block_sparsity"))

    @property
    def block_sparsity_int8(self) -> tuple[int, int] | None:
        """Block shape the int8 sparse FULLY_CONNECTED kernel exploits (LiteRT: 1x16)."""
        return _block(self.runtime_table.get("block_sparsity_int8"))

    @property
    def code_bytes(self) -> int | None:
        """The runtime's own code; None when the profile does not say."""
        value = self.runtime_table.get("code_bytes")
        return None if value is None else int(value)

    @property
    def persistent_ram_bytes(self) -> int:
        """Runtime RAM beyond the tensor arena (0 when the profile does not say)."""
        return int(self.runtime_table.get("persistent_ram_bytes", 0) or 0)

    @property
    def alt_decompression_bytes(self) -> int:
        """TFLM's separate memory for decoded (DECODE) tensors, outside the arena; 0 when the device has none."""
        return int(self.runtime_table.get("alt_decompression_bytes", 0) or 0)

    @property
    def kernel_code_bytes(self) -> Mapping[str, float]:
        """Per-op kernel code by builtin op name (or 'default'); {} when the profile gives none."""
        value = self.runtime_table.get("kernel_code_bytes")
        return value if isinstance(value, Mapping) else {}

    # ----------------------------------------------------------------- [latency], sources

    @property
    def latency_fitted(self) -> bool:
        return bool(self.table("latency").get("fitted", False))

    def get(self, dotted: str, default: Any = None) -> Any:
        """A value by 'table.key' (or 'table.key.entry' inside a map)."""
        node: Any = self.raw
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def source(self, dotted: str) -> str | None:
        """Where a value comes from: its [sources] entry, the entry of its map, or the fit."""
        sources = self.sources
        if dotted in sources:
            return sources[dotted]
        parent = dotted.rsplit(".", 1)[0]
        if parent != dotted and parent in sources:
            return sources[parent]
        table = dotted.split(".", 1)[0]
        if table in SCHEMA and SCHEMA[table].is_fitted(self.table(table)):
            return "fitted: " + self.raw[table]["fit_source"]
        return None

    def is_assumption(self, dotted: str) -> bool:
        """Whether a value rests on an assumption: its source (see `source`) is missing or starts with
        'assumption'. One rule, so the estimates' bases, their notes and `assumptions()` agree on what is
        measured and what is assumed."""
        text = str(self.source(dotted) or "").strip().lower()
        return not text or text.startswith("assumption")

    def assumptions(self) -> list[str]:
        """Keys whose source starts with 'assumption', so reports can say so."""
        return sorted(k for k in self.sources if self.is_assumption(k))

    def items(self) -> Iterator[tuple[str, Any]]:
        """(dotted key, value) for every value in the profile, in schema order."""
        for table_name, table in SCHEMA.items():
            values = self.raw if not table_name else self.table(table_name)
            for key in table.keys:
                if key in values:
                    yield (f"{table_name}.{key}" if table_name else key), values[key]


def _block(value: Any) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if value else None


def available_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in _profile_dir().glob("*.toml"))


def display_path(path: Path) -> str:
    """A path as the user should see it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _resolve(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists() or "/" in name_or_path:
        if not candidate.is_file():
            raise ProfileError(
                "Profile file not found", where=str(candidate),
                expected="a readable .toml device profile", received="no such file",
            )
        return candidate
    path = _profile_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        names = available_profiles()
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        raise ProfileError(
            "Unknown device profile", where=name_or_path,
            expected="one of: " + ", ".join(names), received=repr(name_or_path),
            fix=hint + "Run `edgesparse profiles list`, or pass a path to your own .toml",
        )
    return path


def load_profile(name_or_path: str) -> Profile:
    """Load and strictly validate a shipped profile (by name) or a .toml file (by path)."""
    path = _resolve(name_or_path)
    data = path.read_bytes()
    where = display_path(path)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileValidationError([f"{where}: not valid TOML: {exc}"]) from None
    problems = validate(raw, where)
    if problems:
        raise ProfileValidationError(problems)
    return Profile(name=raw["name"], path=path.resolve(),
                   sha256=hashlib.sha256(data).hexdigest(), raw=raw)
