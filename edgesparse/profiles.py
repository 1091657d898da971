"""Device profiles: load, validate, list.

CONTRACT (other modules rely on these names; extend, do not rename):
    load_profile(name_or_path: str) -> Profile
    available_profiles() -> list[str]
    Profile.name, .path, .sha256, .device_class ("phone"|"sbc"|"mcu"|"host"),
    Profile.runtime ("litert"|"tflm"), .sparse_weights (bool),
    Profile.block_sparsity (tuple[int, int] | None), .raw (the parsed TOML).

TOML shape (the full schema is documented in docs/profiles.md):

    schema_version = 1
    name = "rpi4"
    description = "..."
    [device]   class, cpu, cores, clock_mhz, ram_bytes, flash_bytes
    [runtime]  name = "litert"|"tflm", kernels, int8, fp16, sparse_weights,
               block_sparsity = [1, 4] (or [] for none), threads
    [budget]   flash_bytes, ram_bytes, latency_ms, ...
    [sources]  "<table>.<key>" = "where the number comes from"
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ProfileError

PROFILE_DIR = Path(__file__).resolve().parent.parent / "device_profiles"


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    sha256: str
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def device_class(self) -> str:
        return self.raw["device"]["class"]

    @property
    def runtime(self) -> str:
        return self.raw["runtime"]["name"]

    @property
    def sparse_weights(self) -> bool:
        return bool(self.raw["runtime"].get("sparse_weights", False))

    @property
    def block_sparsity(self) -> tuple[int, int] | None:
        block = self.raw["runtime"].get("block_sparsity") or []
        return (int(block[0]), int(block[1])) if block else None


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def _resolve(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists() or "/" in name_or_path:
        if not candidate.is_file():
            raise ProfileError(
                "Profile file not found", where=str(candidate),
                expected="a readable .toml device profile", received="no such file",
            )
        return candidate
    path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        import difflib

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
    path = _resolve(name_or_path)
    data = path.read_bytes()
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError("Profile is not valid TOML", where=str(path), received=str(exc),
                           fix="Fix the syntax at the position shown") from None
    for table, key in (("device", "class"), ("runtime", "name")):
        if key not in raw.get(table, {}):
            raise ProfileError("Profile is missing a required key", where=f"{path}: {table}.{key}",
                               expected=f"[{table}] {key} = ...", received="nothing")
    return Profile(name=raw.get("name", path.stem), path=path.resolve(),
                   sha256=hashlib.sha256(data).hexdigest(), raw=raw)
