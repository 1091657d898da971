"""Device profiles: load, validate, list.

CONTRACT (other modules rely on these names; extend, do not rename):
    load_profile(name_or_path: str) -> Profile
    available_profiles() -> list[str]
    Profile.name, .path, .sha256, .device_class ("phone"|"sbc"|"mcu"|"host"),
    Profile.runtime ("litert"|"tflm"), .sparse_weights (bool),
    Profile.block_sparsity (tuple[int, int] | None), .raw (the parsed TOML).

The schema is the one declarative table `SCHEMA` below; docs/profiles.md
explains it. To add a key (e.g. a latency coefficient), add one `Key` to the
right `Table` in `SCHEMA`: validation, `profiles show` and the docs' key list
all follow from it. Validation is strict and reports every problem at once,
one line each, as "<file>: <table.key>: <what is wrong>".

Profiles ship in `device_profiles/` at the repository top level and, in a
wheel, as `edgesparse/device_profiles/`; `PROFILE_DIRS` is searched in order.
This module never prints.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from edgesparse.errors import ProfileError

SCHEMA_VERSIONS = (1,)
CLASSES = ("phone", "sbc", "mcu", "host")
ALL = CLASSES

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


# --------------------------------------------------------------------------- schema

@dataclass(frozen=True)
class Key:
    """One key of the schema.

    kind: "int" | "number" | "bool" | "str" | "int_list" | "str_list" | "number_map"
    required: True/False, or the device classes for which it is required.
    only_for: the device classes that may use it (None: all).
    positive: must be > 0; minimum: must be >= minimum.
    choices: allowed values of a str (or of each item of a str_list).
    length: allowed lengths of a list.
    sourced: whether a number here needs a [sources] entry.
    """

    kind: str
    doc: str
    required: bool | tuple[str, ...] = False
    only_for: tuple[str, ...] | None = None
    positive: bool = False
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    length: tuple[int, ...] | None = None
    sourced: bool = True

    def required_for(self, device_class: str | None) -> bool:
        if isinstance(self.required, bool):
            return self.required
        return device_class in self.required


@dataclass(frozen=True)
class Table:
    """One TOML table. `fitted_by` names a bool key: when it is true and `fit_source`
    is filled in, the table's numbers take their source from `fit_source`."""

    doc: str
    keys: dict[str, Key]
    required: tuple[str, ...] = ALL
    fitted_by: str | None = None


SIMD = ("none", "neon", "dotprod", "i8mm", "fp16", "dsp", "helium", "pie",
        "sse4", "avx2", "avx512", "avx512_vnni")
KERNELS = {"litert": ("xnnpack", "builtin"), "tflm": ("cmsis-nn", "esp-nn", "reference")}
RUNTIME_FOR_CLASS = {"phone": "litert", "sbc": "litert", "host": "litert", "mcu": "tflm"}

SCHEMA: dict[str, Table] = {
    "": Table("Top-level keys.", {
        "schema_version": Key("int", "Version of this schema; 1.", required=True, sourced=False),
        "name": Key("str", "Profile name: lower case, digits, '_' (the file name without .toml).",
                    required=True),
        "description": Key("str", "One line: the board, its SoC and cores.", required=True),
    }),
    "device": Table("What the device is.", {
        "class": Key("str", "Device class.", required=True, choices=CLASSES),
        "cpu": Key("str", "Core type inference runs on, e.g. 'Cortex-A72'.", required=True),
        "board": Key("str", "Board or product the numbers were read for."),
        "core_layout": Key("str", "Clusters of a big.LITTLE SoC, e.g. '1x A76 @2.84 + 3x A76 @2.42'."),
        "cores": Key("int", "CPU cores.", required=True, positive=True),
        "clock_mhz": Key("number", "Max clock of the cores inference runs on.", required=True, positive=True),
        "ram_bytes": Key("int", "RAM (SRAM on an MCU) the model may share.", required=True, positive=True),
        "flash_bytes": Key("int", "Flash holding code and the model (MCU).", required=("mcu",),
                           only_for=("mcu",), positive=True),
        "storage_bytes": Key("int", "Storage holding the .tflite (phone, SBC, host).",
                             required=("phone", "sbc", "host"), only_for=("phone", "sbc", "host"),
                             positive=True),
        "simd": Key("str_list", "SIMD/DSP features the kernels can use; ['none'] if none.",
                    required=True, choices=SIMD),
        "fpu": Key("str", "Floating-point unit: none, sp (single), dp (double).",
                   choices=("none", "sp", "dp")),
    }),
    "runtime": Table("Which interpreter runs the model and what it can exploit.", {
        "name": Key("str", "litert (phones, SBCs, host) or tflm (MCUs).", required=True,
                    choices=("litert", "tflm")),
        "kernels": Key("str", "Kernel library.", required=True,
                       choices=tuple(k for ks in KERNELS.values() for k in ks)),
        "version": Key("str", "Runtime version the numbers refer to."),
        "int8": Key("bool", "Runs full-int8 models.", required=True),
        "fp16": Key("bool", "Runs models with float16 weights.", required=True),
        "sparse_weights": Key("bool", "Can load sparse tensors (DENSIFY).", required=True),
        "block_sparsity": Key("int_list", "Block shape the float sparse FULLY_CONNECTED kernel "
                              "exploits, [] for none.", required=True, length=(0, 2), positive=True),
        "block_sparsity_int8": Key("int_list", "Block shape the int8 sparse FULLY_CONNECTED kernel "
                                   "exploits, [] for none.", length=(0, 2), positive=True),
        "threads": Key("int", "Threads the interpreter uses.", required=True, positive=True),
        "code_bytes": Key("int", "The runtime's own code (flash/storage).", required=True, minimum=0),
        "persistent_ram_bytes": Key("int", "Runtime RAM beyond the tensor arena.", required=True,
                                    minimum=0),
        "kernel_code_bytes": Key("number_map", "Per-op kernel code added to code_bytes for the op "
                                 "types a model uses (builtin op name or 'default').", minimum=0),
    }),
    "budget": Table("What a model may use on this device (a policy, not a fact).", {
        "flash_bytes": Key("int", "Model + runtime code.", required=True, positive=True),
        "ram_bytes": Key("int", "Peak arena + runtime persistent RAM.", required=True, positive=True),
        "latency_ms": Key("number", "One inference.", required=True, positive=True),
        "energy_mj": Key("number", "One inference.", positive=True),
    }),
    "power": Table("Power by state, at the supply.", {
        "supply_v": Key("number", "Voltage the currents were converted at.", positive=True),
        "active_mw": Key("number", "While running inference.", required=True, positive=True),
        "idle_mw": Key("number", "Awake, waiting.", required=True, minimum=0),
        "sleep_mw": Key("number", "Lowest state that keeps the model ready.", required=True, minimum=0),
    }, required=("phone", "sbc", "mcu")),
    "battery": Table("A typical battery for battery-life estimates.", {
        "kind": Key("str", "e.g. 'CR2032 coin cell'."),
        "capacity_mah": Key("number", "Capacity.", required=True, positive=True),
        "voltage_v": Key("number", "Nominal voltage.", required=True, positive=True),
        "inferences_per_hour": Key("number", "Default rate.", required=True, positive=True),
        "rest_state": Key("str", "Power state between inferences.", required=True,
                          choices=("idle", "sleep")),
    }, required=("phone", "sbc", "mcu")),
    # Owned by the estimator: add coefficients here as Keys.
    "latency": Table("Latency-model coefficients (defined and fitted by estimate.py).", {
        "fitted": Key("bool", "Whether the coefficients were fitted to measurements.", required=True),
        "fit_source": Key("str", "What they were fitted to ('' until fitted).", required=True),
        "fit_rows": Key("str_list", "The measurement rows used for the fit."),
        "macs_per_cycle": Key("number_map", "Per dtype/op class, e.g. conv_int8, fc_int8.",
                              positive=True),
        "clock_mhz": Key("number", "Clock the coefficients assume (default: device.clock_mhz).",
                         positive=True),
        "bytes_per_cycle": Key("number", "Memory traffic per cycle.", positive=True),
        "elementwise_per_cycle": Key("number", "Elementwise/pooling/reduction element ops per cycle.",
                                     positive=True),
        "fit_threads": Key("int", "Thread count the coefficients were fitted at.", positive=True),
        "parallel_efficiency": Key("number", "Speed-up per extra thread (0: thread count ignored).",
                                   minimum=0),
        "overhead_us_per_op": Key("number", "Per-op dispatch cost.", minimum=0),
        "fixed_overhead_us": Key("number", "Per-inference fixed cost.", minimum=0),
        "basis": Key("str", "What the table rests on: fitted (to this device's rows), fitted+transferred "
                     "(some coefficients from another device), transferred, assumption.",
                     choices=("fitted", "fitted+transferred", "transferred", "assumption")),
        "transferred_from": Key("str", "Profile the MAC coefficients were transferred from."),
        "transfer_factor": Key("number", "Cycles this device needs per cycle of the source device for the "
                               "same MACs: macs_per_cycle = source's / transfer_factor.", positive=True),
        "overhead_from": Key("str", "Profile the per-op and per-inference overhead were transferred from."),
        "overhead_factor": Key("number", "Time ratio of the overhead: overhead_us = source's x overhead_factor.",
                               positive=True),
        "notes": Key("str", "Free text."),
    }, fitted_by="fitted"),
}
SOURCES = "sources"  # the table mapping "table.key" -> where the value comes from
KIND_NAMES = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
              "int_list": "a list of integers", "str_list": "a list of strings",
              "number_map": "a table of numbers"}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_NUMERIC = ("int", "number", "int_list", "number_map")


def schema_keys() -> list[str]:
    """Every key of the schema as 'table.key' (top-level keys bare), in schema order."""
    return [f"{t}.{k}" if t else k for t, table in SCHEMA.items() for k in table.keys]


# --------------------------------------------------------------------------- profile

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
    def kernels(self) -> str:
        return self.raw["runtime"]["kernels"]

    @property
    def threads(self) -> int:
        return int(self.raw["runtime"]["threads"])

    @property
    def sparse_weights(self) -> bool:
        return bool(self.raw["runtime"].get("sparse_weights", False))

    @property
    def block_sparsity(self) -> tuple[int, int] | None:
        """Block shape the float sparse FULLY_CONNECTED kernel exploits."""
        return _block(self.raw["runtime"].get("block_sparsity"))

    @property
    def block_sparsity_int8(self) -> tuple[int, int] | None:
        """Block shape the int8 sparse FULLY_CONNECTED kernel exploits (LiteRT: 1x16)."""
        return _block(self.raw["runtime"].get("block_sparsity_int8"))

    @property
    def latency_fitted(self) -> bool:
        return bool(self.raw.get("latency", {}).get("fitted", False))

    def table(self, name: str) -> Mapping[str, Any]:
        """A table of the profile ({} when the profile has none, e.g. host power)."""
        return self.raw.get(name, {})

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
        sources = self.raw.get(SOURCES, {})
        if dotted in sources:
            return sources[dotted]
        parent = dotted.rsplit(".", 1)[0]
        if parent != dotted and parent in sources:
            return sources[parent]
        table = dotted.split(".", 1)[0]
        if table in SCHEMA and SCHEMA[table].fitted_by and _fitted(self.raw.get(table, {})):
            return "fitted: " + self.raw[table]["fit_source"]
        return None

    def assumptions(self) -> list[str]:
        """Keys whose source starts with 'assumption', so reports can say so."""
        return sorted(k for k, v in self.raw.get(SOURCES, {}).items()
                      if str(v).strip().lower().startswith("assumption"))

    def items(self) -> Iterator[tuple[str, Any]]:
        """(dotted key, value) for every value in the profile, in schema order."""
        for table_name, table in SCHEMA.items():
            values = self.raw if not table_name else self.raw.get(table_name, {})
            for key in table.keys:
                if key in values:
                    yield (f"{table_name}.{key}" if table_name else key), values[key]


def _block(value: Any) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if value else None


def _fitted(table: Mapping[str, Any]) -> bool:
    return table.get("fitted") is True and bool(str(table.get("fit_source", "")).strip())


# --------------------------------------------------------------------------- errors

class ProfileValidationError(ProfileError):
    """Every problem found in one or more profiles, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in device profile(s)",
                         fix="Fix each key listed; the format is in docs/profiles.md")

    @property
    def message(self) -> str:
        lines = [f"Invalid device profile: {len(self.problems)} "
                 f"problem{'s' if len(self.problems) != 1 else ''}."]
        lines += [f"  {p}" for p in self.problems]
        lines.append("Fix each key listed; the format is documented in docs/profiles.md.")
        return "\n".join(lines)


# --------------------------------------------------------------------------- validation

def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"the list {value!r}"
    return repr(value)


def _hint(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and not (isinstance(v, float) and not math.isfinite(v))


def _a(words: str) -> str:
    return ("an " if words[:1] in "aeiou" else "a ") + words


def _check_number(spec: Key, value: Any, want_int: bool) -> str | None:
    """Why `value` is not acceptable for a numeric key, or None."""
    noun = "integer" if want_int else "number"
    wanted = _a(("positive " if spec.positive else "non-negative " if spec.minimum == 0 else "") + noun)
    ok_type = _is_int(value) if want_int else _is_number(value)
    if not ok_type:
        if want_int and isinstance(value, float) and value.is_integer():
            return f"expected {wanted} (no decimal point), received {value!r}"
        return f"expected {wanted}, received {_describe(value)}"
    if spec.positive and value <= 0:
        return f"expected {wanted}, received {value!r}"
    if spec.minimum is not None and value < spec.minimum:
        return f"expected {wanted}, received {value!r}" if spec.minimum == 0 else \
            f"expected {_a(noun)} >= {spec.minimum:g}, received {value!r}"
    return None


def _check_value(spec: Key, value: Any) -> str | None:
    """Type and range of one value; None when it is fine."""
    kind = spec.kind
    if kind in ("int", "number"):
        return _check_number(spec, value, want_int=kind == "int")
    if kind == "bool":
        return None if isinstance(value, bool) else f"expected true or false, received {_describe(value)}"
    if kind == "str":
        if not isinstance(value, str):
            return f"expected a string, received {_describe(value)}"
        if spec.choices and value not in spec.choices:
            return (f"expected one of {', '.join(spec.choices)}, received {value!r}"
                    + _hint(value, spec.choices))
        return None
    if kind in ("int_list", "str_list"):
        if not isinstance(value, list):
            return f"expected a list, received {_describe(value)}"
        if spec.length is not None and len(value) not in spec.length:
            return (f"expected a list of {' or '.join(map(str, spec.length))} items, "
                    f"received {len(value)} ({value!r})")
        for i, item in enumerate(value):
            if kind == "int_list":
                why = _check_number(spec, item, want_int=True)
            elif not isinstance(item, str):
                why = f"expected a string, received {_describe(item)}"
            elif spec.choices and item not in spec.choices:
                why = f"expected one of {', '.join(spec.choices)}, received {item!r}" + _hint(item, spec.choices)
            else:
                why = None
            if why:
                return f"item {i}: {why}"
        return None
    if kind == "number_map":
        if not isinstance(value, dict):
            return f"expected a table of numbers, received {_describe(value)}"
        for k, item in value.items():
            why = _check_number(spec, item, want_int=False)
            if why:
                return f"entry {k!r}: {why}"
        return None
    raise AssertionError(f"unknown schema kind {kind!r}")  # a bug in SCHEMA, not in the profile


def _numeric_paths(raw: Mapping[str, Any]) -> Iterator[str]:
    """'table.key' of every number in the profile that needs a source."""
    for table_name, table in SCHEMA.items():
        values = raw if not table_name else raw.get(table_name)
        if not isinstance(values, Mapping) or (table.fitted_by and _fitted(values)):
            continue
        for key, spec in table.keys.items():
            if key not in values or not spec.sourced or spec.kind not in _NUMERIC:
                continue
            value = values[key]
            dotted = f"{table_name}.{key}" if table_name else key
            if spec.kind == "number_map" and isinstance(value, dict):
                yield from (f"{dotted}.{k}" for k in value)
            elif spec.kind == "int_list":
                if value:
                    yield dotted
            elif not isinstance(value, bool):
                yield dotted


def _existing_paths(raw: Mapping[str, Any]) -> set[str]:
    """Every 'table.key' (and 'table.map.entry') present in the profile."""
    paths: set[str] = set()
    for table_name, table in SCHEMA.items():
        values = raw if not table_name else raw.get(table_name)
        if not isinstance(values, Mapping):
            continue
        for key, spec in table.keys.items():
            if key in values:
                dotted = f"{table_name}.{key}" if table_name else key
                paths.add(dotted)
                if spec.kind == "number_map" and isinstance(values[key], dict):
                    paths.update(f"{dotted}.{k}" for k in values[key])
    return paths


def validate(raw: Mapping[str, Any], where: str) -> list[str]:
    """Every problem in a parsed profile, each as '<where>: <key>: <problem>'. [] if valid."""
    problems: list[str] = []

    def bad(key: str, why: str) -> None:
        problems.append(f"{where}: {key}: {why}")

    device = raw.get("device") if isinstance(raw.get("device"), Mapping) else {}
    device_class = device.get("class") if device.get("class") in CLASSES else None

    # Unknown tables and top-level keys.
    known_top = [k for k in SCHEMA[""].keys] + [t for t in SCHEMA if t] + [SOURCES]
    for key, value in raw.items():
        if key in SCHEMA[""].keys or key == SOURCES:
            continue
        if key in SCHEMA:
            if not isinstance(value, Mapping):
                bad(key, f"expected a table, received {_describe(value)}")
            continue
        bad(key, "unknown key or table" + _hint(key, known_top))

    for table_name, table in SCHEMA.items():
        values = raw if not table_name else raw.get(table_name)
        prefix = f"{table_name}." if table_name else ""
        if table_name and values is None:
            if table.required == ALL or device_class in table.required:
                need = f"for class {device_class!r}" if table.required != ALL else "in every profile"
                bad(table_name, f"missing table; it is required {need}")
            continue
        if not isinstance(values, Mapping):
            continue
        if table_name:
            for key in values:
                if key not in table.keys:
                    bad(prefix + key, "unknown key" + _hint(key, list(table.keys)))
        for key, spec in table.keys.items():
            if key not in values:
                if spec.required_for(device_class):
                    bad(prefix + key, f"missing; expected {KIND_NAMES[spec.kind]} ({spec.doc.rstrip('.')})")
                continue
            if spec.only_for and device_class and device_class not in spec.only_for:
                bad(prefix + key, f"not used for class {device_class!r} (only for "
                                  f"{', '.join(spec.only_for)})")
                continue
            why = _check_value(spec, values[key])
            if why:
                bad(prefix + key, why)

    problems += [f"{where}: {p}" for p in _cross_checks(raw, device_class)]
    problems += [f"{where}: {p}" for p in _source_checks(raw)]
    return problems


def _num(table: Any, key: str) -> float | None:
    """A value that passed its type check, or None (so cross-checks skip bad values)."""
    value = table.get(key) if isinstance(table, Mapping) else None
    return value if _is_number(value) else None


def _cross_checks(raw: Mapping[str, Any], device_class: str | None) -> list[str]:
    """Impossible combinations across keys."""
    out: list[str] = []
    t = {name: raw.get(name) if isinstance(raw.get(name), Mapping) else {} for name in SCHEMA if name}
    device, runtime, budget, power = t["device"], t["runtime"], t["budget"], t["power"]

    name = raw.get("name")
    if isinstance(name, str) and not _NAME_RE.match(name):
        out.append(f"name: expected lower-case letters, digits and '_', received {name!r}")
    version = raw.get("schema_version")
    if _is_int(version) and version not in SCHEMA_VERSIONS:
        out.append(f"schema_version: expected one of {', '.join(map(str, SCHEMA_VERSIONS))}, "
                   f"received {version}")

    rt = runtime.get("name")
    if device_class and rt in KERNELS and rt != RUNTIME_FOR_CLASS[device_class]:
        out.append(f"runtime.name: class {device_class!r} runs {RUNTIME_FOR_CLASS[device_class]!r}, "
                   f"received {rt!r}")
    kernels = runtime.get("kernels")
    if rt in KERNELS and isinstance(kernels, str) and kernels in SCHEMA["runtime"].keys["kernels"].choices \
            and kernels not in KERNELS[rt]:
        out.append(f"runtime.kernels: {rt} uses one of {', '.join(KERNELS[rt])}, received {kernels!r}")
    if rt == "tflm":
        if runtime.get("sparse_weights") is True:
            out.append("runtime.sparse_weights: TFLM cannot run DENSIFY; expected false, received true")
        for key in ("block_sparsity", "block_sparsity_int8"):
            if runtime.get(key):
                out.append(f"runtime.{key}: TFLM has no sparse kernels; expected [], "
                           f"received {runtime[key]!r}")
        if _is_int(runtime.get("threads")) and runtime["threads"] != 1:
            out.append(f"runtime.threads: TFLM is single-threaded; expected 1, received {runtime['threads']}")
    if runtime.get("sparse_weights") is False:
        for key in ("block_sparsity", "block_sparsity_int8"):
            if runtime.get(key):
                out.append(f"runtime.{key}: sparse_weights is false, so expected [], "
                           f"received {runtime[key]!r}")
    threads, cores = _num(runtime, "threads"), _num(device, "cores")
    if threads and cores and threads > cores:
        out.append(f"runtime.threads: expected at most device.cores ({cores:g}), received {threads:g}")
    simd = device.get("simd")
    if isinstance(simd, list) and "none" in simd and len(simd) > 1:
        out.append(f"device.simd: 'none' cannot be combined with other features, received {simd!r}")

    capacity_key = "flash_bytes" if device_class == "mcu" else "storage_bytes"
    checks = (("flash_bytes", capacity_key), ("ram_bytes", "ram_bytes"))
    for budget_key, device_key in checks:
        b, d = _num(budget, budget_key), _num(device, device_key)
        if b and d and b > d:
            out.append(f"budget.{budget_key}: exceeds the device's capacity device.{device_key} "
                       f"({d:g}), received {b:g}")
    for budget_key, runtime_key in (("flash_bytes", "code_bytes"), ("ram_bytes", "persistent_ram_bytes")):
        b, r = _num(budget, budget_key), _num(runtime, runtime_key)
        if b and r is not None and r > b:
            out.append(f"budget.{budget_key}: smaller than runtime.{runtime_key} ({r:g}) alone, "
                       f"so no model fits; received {b:g}")

    active, idle, sleep = (_num(power, k) for k in ("active_mw", "idle_mw", "sleep_mw"))
    if idle is not None and active is not None and idle > active:
        out.append(f"power.idle_mw: exceeds power.active_mw ({active:g}), received {idle:g}")
    if sleep is not None and idle is not None and sleep > idle:
        out.append(f"power.sleep_mw: exceeds power.idle_mw ({idle:g}), received {sleep:g}")
    elif sleep is not None and active is not None and sleep > active:
        out.append(f"power.sleep_mw: exceeds power.active_mw ({active:g}), received {sleep:g}")

    latency = t["latency"]
    if latency.get("fitted") is True:
        if not str(latency.get("fit_source", "")).strip():
            out.append("latency.fit_source: latency.fitted is true, so expected what the "
                       "coefficients were fitted to, received ''")
        if not latency.get("fit_rows"):
            out.append("latency.fit_rows: latency.fitted is true, so expected the rows used for the fit")
    basis = latency.get("basis")
    if basis == "transferred" and latency.get("fitted") is True:
        out.append("latency.fitted: latency.basis is 'transferred', so expected false (a transferred "
                   "coefficient is never a fitted one), received true")
    if basis in ("transferred", "fitted+transferred") and not (latency.get("transferred_from")
                                                                or latency.get("overhead_from")):
        out.append(f"latency.transferred_from: latency.basis is {basis!r}, so expected the profile the "
                   "coefficients come from (transferred_from or overhead_from)")
    if latency.get("transferred_from") and latency.get("transfer_factor") is None:
        out.append("latency.transfer_factor: latency.transferred_from is set, so expected the stated factor")
    if latency.get("overhead_from") and latency.get("overhead_factor") is None:
        out.append("latency.overhead_factor: latency.overhead_from is set, so expected the stated factor")
    return out


def _source_checks(raw: Mapping[str, Any]) -> list[str]:
    """Every number has a source; every source names a key that exists."""
    out: list[str] = []
    sources = raw.get(SOURCES)
    if sources is None:
        sources = {}
        if any(True for _ in _numeric_paths(raw)):
            out.append(f"{SOURCES}: missing table; every number needs a source "
                       "(\"table.key\" = \"datasheet ... / assumption: ...\")")
            return out
    if not isinstance(sources, Mapping):
        return [f"{SOURCES}: expected a table, received {_describe(sources)}"]
    existing = _existing_paths(raw)
    for key, text in sources.items():
        if not isinstance(text, str) or not text.strip():
            out.append(f"{SOURCES}.{key!r}: expected a non-empty string, received {_describe(text)}")
        if key not in existing:
            out.append(f"{SOURCES}.{key!r}: no such key in this profile" + _hint(key, sorted(existing)))
    for path in _numeric_paths(raw):
        parent = path.rsplit(".", 1)[0]
        if path not in sources and not (parent in existing and parent in sources and path.count(".") == 2):
            out.append(f"{path}: no source; add {SOURCES}.{path!r} = \"<datasheet, section>\" "
                       "or \"assumption: <why>\"")
    return out


# --------------------------------------------------------------------------- loading

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
