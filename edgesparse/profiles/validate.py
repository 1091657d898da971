"""Strict validation of a parsed device profile: every problem at once, one line each.

Why strict and exhaustive: a profile is hand-written, and a typo in a key
silently dropped would turn a fact into a default. `validate` reports unknown
keys (with a did-you-mean hint), missing, mistyped and out-of-range values,
impossible combinations across keys, and numbers without a [sources] entry,
each as "<file>: <table.key>: <what is wrong>". It never raises; callers raise
`ProfileValidationError` (a `ProfileError`, exit code 2) with the whole list.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping
from typing import Any

from edgesparse.errors import ProfileError
from edgesparse.profiles.schema import (
    ALL,
    CLASSES,
    INTERPRETER_OF,
    KERNELS,
    KIND_NAMES,
    NAME_PATTERN,
    NPU_MEMORY_KEYS,
    NPU_RUNTIMES,
    NUMERIC_KINDS,
    RUNTIME_FOR_CLASS,
    SCHEMA,
    SCHEMA_VERSIONS,
    SOURCES,
    Key,
)

__all__ = ["ProfileValidationError", "numeric_paths", "validate"]


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


def _fmt(value: float) -> str:
    """A number for a message: integers in full (1048576, not 1.04858e+06), other numbers short."""
    return str(value) if _is_int(value) else f"{value:g}"


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


def numeric_paths(raw: Mapping[str, Any]) -> Iterator[str]:
    """'table.key' of every number in the profile that needs a [sources] entry (numbers of a fitted table
    take the fit as their source)."""
    for table_name, table in SCHEMA.items():
        values = raw if not table_name else raw.get(table_name)
        if not isinstance(values, Mapping) or table.is_fitted(values):
            continue
        for key, spec in table.keys.items():
            if key not in values or not spec.sourced or spec.kind not in NUMERIC_KINDS:
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

    device = _table(raw, "device")
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


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """A table of the profile, {} when it is missing or not a table (reported elsewhere)."""
    value = raw.get(name)
    return value if isinstance(value, Mapping) else {}


def _num(table: Any, key: str) -> float | None:
    """A value that passed its type check, or None (so cross-checks skip bad values)."""
    value = table.get(key) if isinstance(table, Mapping) else None
    return value if _is_number(value) else None


def _cross_checks(raw: Mapping[str, Any], device_class: str | None) -> list[str]:
    """Impossible combinations across keys."""
    t = {name: _table(raw, name) for name in SCHEMA if name}
    return (_identity_checks(raw) + _runtime_checks(t["runtime"], t["device"], device_class)
            + _capacity_checks(t["device"], t["runtime"], t["budget"], device_class)
            + _power_checks(t["power"]) + _latency_checks(t["latency"])
            + _npu_checks(raw, t["runtime"], t["device"], t["power"]))


def _identity_checks(raw: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    name = raw.get("name")
    if isinstance(name, str) and not NAME_PATTERN.match(name):
        out.append(f"name: expected lower-case letters, digits and '_', received {name!r}")
    version = raw.get("schema_version")
    if _is_int(version) and version not in SCHEMA_VERSIONS:
        out.append(f"schema_version: expected one of {', '.join(map(str, SCHEMA_VERSIONS))}, "
                   f"received {version}")
    return out


def _runtime_checks(runtime: Mapping[str, Any], device: Mapping[str, Any], device_class: str | None) -> list[str]:
    """The runtime fits the class, its kernels fit the interpreter, and TFLM's limits hold (also for
    tflm+ethos-u, whose CPU side is TFLM)."""
    out: list[str] = []
    rt = runtime.get("name")
    interpreter = INTERPRETER_OF.get(rt) if isinstance(rt, str) else None
    if device_class and interpreter and interpreter != RUNTIME_FOR_CLASS[device_class]:
        out.append(f"runtime.name: class {device_class!r} runs {RUNTIME_FOR_CLASS[device_class]!r}"
                   + (" (tflm+ethos-u is for class 'mcu')" if rt in NPU_RUNTIMES else "")
                   + f", received {rt!r}")
    kernels = runtime.get("kernels")
    if interpreter and isinstance(kernels, str) and kernels in (SCHEMA["runtime"].keys["kernels"].choices or ()) \
            and kernels not in KERNELS[interpreter]:
        out.append(f"runtime.kernels: {rt} uses one of {', '.join(KERNELS[interpreter])}, received {kernels!r}")
    if interpreter == "tflm":
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
    return out


def _capacity_checks(device: Mapping[str, Any], runtime: Mapping[str, Any], budget: Mapping[str, Any],
                     device_class: str | None) -> list[str]:
    """The budget fits the device and leaves room for the runtime."""
    out: list[str] = []
    capacity_key = "flash_bytes" if device_class == "mcu" else "storage_bytes"
    for budget_key, device_key in (("flash_bytes", capacity_key), ("ram_bytes", "ram_bytes")):
        b, d = _num(budget, budget_key), _num(device, device_key)
        if b and d and b > d:
            out.append(f"budget.{budget_key}: exceeds the device's capacity device.{device_key} "
                       f"({_fmt(d)}), received {_fmt(b)}")
    for budget_key, runtime_key in (("flash_bytes", "code_bytes"), ("ram_bytes", "persistent_ram_bytes")):
        b, r = _num(budget, budget_key), _num(runtime, runtime_key)
        if b and r is not None and r > b:
            out.append(f"budget.{budget_key}: smaller than runtime.{runtime_key} ({_fmt(r)}) alone, "
                       f"so no model fits; received {_fmt(b)}")
    return out


def _power_checks(power: Mapping[str, Any]) -> list[str]:
    """sleep_mw <= idle_mw <= active_mw."""
    out: list[str] = []
    active, idle, sleep = (_num(power, k) for k in ("active_mw", "idle_mw", "sleep_mw"))
    if idle is not None and active is not None and idle > active:
        out.append(f"power.idle_mw: exceeds power.active_mw ({active:g}), received {idle:g}")
    if sleep is not None and idle is not None and sleep > idle:
        out.append(f"power.sleep_mw: exceeds power.idle_mw ({idle:g}), received {sleep:g}")
    elif sleep is not None and active is not None and sleep > active:
        out.append(f"power.sleep_mw: exceeds power.active_mw ({active:g}), received {sleep:g}")
    return out


def _latency_checks(latency: Mapping[str, Any]) -> list[str]:
    """A fitted table says to what; a transferred one says from where and by which factor."""
    out: list[str] = []
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


# Vela reads these with int(): a decimal point in its .ini would stop it, so the profile says whole numbers.
_NPU_INT_KEYS = ("burst_length", "read_latency", "write_latency", "max_reads", "max_writes")


def _npu_checks(raw: Mapping[str, Any], runtime: Mapping[str, Any], device: Mapping[str, Any],
                power: Mapping[str, Any]) -> list[str]:
    """[npu] is there exactly when the runtime drives an NPU, and holds nothing Vela would reject or
    silently replace by a default."""
    rt = runtime.get("name")
    if rt in NPU_RUNTIMES and "npu" not in raw:
        return [f"npu: missing table; runtime.name {rt!r} needs it (the accelerator, clocks and memories "
                "Vela compiles for)"]
    if "npu" in raw and rt in INTERPRETER_OF and rt not in NPU_RUNTIMES:
        return [f"npu: only for runtime.name {' or '.join(map(repr, NPU_RUNTIMES))}, received runtime.name "
                f"{rt!r} (remove [npu], or set runtime.name = \"tflm+ethos-u\")"]
    npu = _table(raw, "npu")
    if not npu:
        return []
    return _npu_memory_checks(npu) + _npu_mode_checks(npu) + _npu_capacity_checks(npu, device, power)


def _npu_memory_checks(npu: Mapping[str, Any]) -> list[str]:
    """axi0_memory/axi1_memory: exactly Vela's six characteristics, in ranges Vela can use."""
    out: list[str] = []
    for port in ("axi0", "axi1"):
        key = f"npu.{port}_memory"
        memory = npu.get(f"{port}_memory")
        if not isinstance(memory, Mapping):
            continue  # missing or mistyped: reported by the schema check
        for name in memory:
            if name not in NPU_MEMORY_KEYS:
                out.append(f"{key}.{name}: unknown key; expected one of {', '.join(NPU_MEMORY_KEYS)}"
                           + _hint(str(name), NPU_MEMORY_KEYS))
        for name in NPU_MEMORY_KEYS:
            if name not in memory:
                out.append(f"{key}.{name}: missing; Vela would silently use its default, so the profile "
                           "must say it")
                continue
            value = memory[name]
            if not _is_number(value):
                continue  # reported by the schema check
            if name == "clock_scale" and not 0 < value <= 1:
                out.append(f"{key}.clock_scale: expected a number > 0 and <= 1 (the memory's bandwidth per "
                           f"NPU cycle relative to the AXI port, which runs at the NPU clock), received {value!r}")
            elif name in _NPU_INT_KEYS and not _is_int(value):
                out.append(f"{key}.{name}: expected a whole number (Vela reads it as an integer), "
                           f"received {value!r}")
            elif name == "burst_length" and (value <= 0 or value & (value - 1)):
                out.append(f"{key}.burst_length: expected a power of two (bytes per AXI burst), "
                           f"received {value!r}")
            elif name == "max_reads" and value < 1:
                out.append(f"{key}.max_reads: the NPU reads from every memory it is given; expected at least 1, "
                           f"received {value!r}")
        arena_port = "axi1" if npu.get("memory_mode") == "Dedicated_Sram" else "axi0"
        writes = memory.get("max_writes")
        if port == arena_port and isinstance(writes, int) and not isinstance(writes, bool) and writes < 1:
            out.append(f"{key}.max_writes: the tensor arena is on {port} (memory_mode "
                       f"{npu.get('memory_mode', 'Sram_Only')}), so the NPU writes there; expected at least 1, "
                       f"received {writes}")
    return out


def _npu_mode_checks(npu: Mapping[str, Any]) -> list[str]:
    """The memory mode, the ports and the accelerator agree the way Vela requires."""
    out: list[str] = []
    mode, accelerator = npu.get("memory_mode"), npu.get("accelerator")
    axi0, axi1 = npu.get("axi0"), npu.get("axi1")
    if axi0 is not None and axi0 != "Sram":
        out.append(f"npu.axi0: Vela keeps the arena's cache (and, outside Dedicated_Sram, the arena) on AXI0, "
                   f"which must be SRAM; expected 'Sram', received {axi0!r}")
    if mode == "Dedicated_Sram":
        if isinstance(accelerator, str) and accelerator.startswith("ethos-u55"):
            out.append(f"npu.memory_mode: Dedicated_Sram (SRAM as a cache of a DRAM arena) is for the "
                       f"Ethos-U65; expected Sram_Only or Shared_Sram for {accelerator!r}")
        if axi1 is not None and axi1 != "Dram":
            out.append(f"npu.axi1: Dedicated_Sram puts the arena on AXI1, so expected 'Dram', received {axi1!r}")
        if "arena_cache_bytes" not in npu:
            out.append("npu.arena_cache_bytes: missing; memory_mode Dedicated_Sram needs the SRAM Vela may use "
                       "as the arena's cache")
    elif mode in ("Sram_Only", "Shared_Sram") and "arena_cache_bytes" in npu:
        out.append(f"npu.arena_cache_bytes: only for memory_mode Dedicated_Sram; in {mode} the arena is in "
                   "SRAM and npu.sram_bytes bounds it")
    if mode == "Shared_Sram" and axi1 == "Sram":
        out.append("npu.axi1: Shared_Sram reads the weights over AXI1 from flash or DRAM; expected OffChipFlash, "
                   "OnChipFlash or Dram, received 'Sram' (memory_mode Sram_Only keeps the weights in SRAM)")
    if mode == "Sram_Only":
        if axi1 is not None and axi1 != "Sram":
            out.append(f"npu.axi1: memory_mode Sram_Only keeps the weights in SRAM too (Vela then ignores AXI1's "
                       f"memory), so expected 'Sram', received {axi1!r}")
        elif isinstance(npu.get("axi0_memory"), Mapping) and npu.get("axi1_memory") != npu.get("axi0_memory"):
            out.append("npu.axi1_memory: axi0 and axi1 are the same SRAM in Sram_Only, so expected the same "
                       "characteristics as npu.axi0_memory")
    return out


def _npu_capacity_checks(npu: Mapping[str, Any], device: Mapping[str, Any], power: Mapping[str, Any]) -> list[str]:
    """The NPU's SRAM fits the device's RAM, its cache fits its SRAM, and its power is at least idle's."""
    out: list[str] = []
    sram, ram, cache = _num(npu, "sram_bytes"), _num(device, "ram_bytes"), _num(npu, "arena_cache_bytes")
    if sram and ram and sram > ram:
        out.append(f"npu.sram_bytes: exceeds the device's RAM device.ram_bytes ({_fmt(ram)}), received {_fmt(sram)}")
    if cache and sram and cache > sram:
        out.append(f"npu.arena_cache_bytes: the cache is in the NPU's SRAM, so expected at most npu.sram_bytes "
                   f"({_fmt(sram)}), received {_fmt(cache)}")
    active, idle = _num(npu, "active_mw"), _num(power, "idle_mw")
    if active is not None and idle is not None and active < idle:
        out.append(f"npu.active_mw: below power.idle_mw ({idle:g}); the device runs an inference awake, so "
                   f"expected at least that, received {active:g}")
    return out


def _source_checks(raw: Mapping[str, Any]) -> list[str]:
    """Every number has a source; every source names a key that exists."""
    out: list[str] = []
    sources = raw.get(SOURCES)
    if sources is None:
        sources = {}
        if any(True for _ in numeric_paths(raw)):
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
    for path in numeric_paths(raw):
        parent = path.rsplit(".", 1)[0]
        if path not in sources and not (parent in existing and parent in sources and path.count(".") == 2):
            out.append(f"{path}: no source; add {SOURCES}.{path!r} = \"<datasheet, section>\" "
                       "or \"assumption: <why>\"")
    return out
