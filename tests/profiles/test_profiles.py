"""Device profiles: every shipped profile validates; bad profiles fail with every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

import edgesparse.profiles.profile as profile_module  # to point PROFILE_DIRS elsewhere
from edgesparse.cli.commands import main
from edgesparse.errors import EXIT_BAD_INPUT, ProfileError
from edgesparse.profiles import (
    CLASSES,
    PROFILE_DIR,
    RUNTIME_FOR_CLASS,
    SCHEMA,
    Key,
    ProfileValidationError,
    available_profiles,
    check_profile_text,
    load_profile,
    numeric_paths,
    schema_keys,
    set_sources,
    set_table,
    validate,
    write_latency,
)

REQUIRED = {"pixel4", "pixel3", "midrange_a76", "rpi3bplus", "rpi4", "rpi5", "rpizero2w", "stm32l4r5",
            "ek_ra6m4", "stm32h7a3", "nrf52840", "esp32s3", "rp2040", "host"}

# A small valid MCU profile; each bad case below edits its text.
BASE = '''
schema_version = 1
name = "tiny"
description = "test board"

[device]
class = "mcu"
cpu = "Cortex-M4F"
cores = 1
clock_mhz = 64
ram_bytes = 262144
flash_bytes = 1048576
simd = ["dsp"]

[runtime]
name = "tflm"
kernels = "cmsis-nn"
int8 = true
fp16 = false
sparse_weights = false
block_sparsity = []
threads = 1
code_bytes = 81920
persistent_ram_bytes = 4096

[budget]
flash_bytes = 524288
ram_bytes = 131072
latency_ms = 1000

[power]
active_mw = 9.9
idle_mw = 0.01
sleep_mw = 0.01

[battery]
capacity_mah = 225
voltage_v = 3.0
inferences_per_hour = 3600
rest_state = "sleep"

[latency]
fitted = false
fit_source = ""

[sources]
"device.cores" = "datasheet, p. 1"
"device.clock_mhz" = "datasheet, p. 1"
"device.ram_bytes" = "datasheet, p. 1"
"device.flash_bytes" = "datasheet, p. 1"
"runtime.threads" = "TFLM is single-threaded"
"runtime.code_bytes" = "assumption: not measured"
"runtime.persistent_ram_bytes" = "assumption: not measured"
"budget.flash_bytes" = "assumption: half of flash"
"budget.ram_bytes" = "assumption: half of RAM"
"budget.latency_ms" = "assumption: one per second"
"power.active_mw" = "datasheet, table 5"
"power.idle_mw" = "datasheet, table 5"
"power.sleep_mw" = "datasheet, table 5"
"battery.capacity_mah" = "assumption: CR2032"
"battery.voltage_v" = "assumption: CR2032"
"battery.inferences_per_hour" = "assumption: one per second"
'''


def _edit(text: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert old in text, f"test bug: {old!r} not in the base profile"
        text = text.replace(old, new, 1)
    return text


def _write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ProfileValidationError) as info:
        load_profile(str(_write(tmp_path, text)))
    return info.value.problems


# ----------------------------------------------------------------------------- shipped profiles

def test_required_devices_are_shipped():
    assert set(available_profiles()) >= REQUIRED


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_profile_validates(name):
    p = load_profile(name)
    assert p.name == name == p.path.stem
    assert p.device_class in CLASSES
    assert p.runtime == RUNTIME_FOR_CLASS[p.device_class]
    assert len(p.sha256) == 64
    for dotted, _ in p.items():  # every value can be looked up again
        assert p.get(dotted) is not None


@pytest.mark.parametrize("name", available_profiles())
def test_every_number_of_a_shipped_profile_has_a_source(name):
    p = load_profile(name)
    for path in numeric_paths(p.raw):
        assert p.source(path), path


def test_contract_properties():
    rpi4, nrf = load_profile("rpi4"), load_profile("nrf52840")
    assert (rpi4.device_class, rpi4.runtime, rpi4.sparse_weights) == ("sbc", "litert", True)
    assert rpi4.block_sparsity == (1, 4) and rpi4.block_sparsity_int8 == (1, 16)
    assert (nrf.device_class, nrf.runtime, nrf.sparse_weights, nrf.block_sparsity) == ("mcu", "tflm", False, None)
    assert nrf.raw["device"]["clock_mhz"] == 64


def test_assumptions_are_listed_and_sources_resolve():
    p = load_profile("rpi4")
    assert "budget.ram_bytes" in p.assumptions()
    assert "power.active_mw" not in p.assumptions()
    assert "published_power.csv" in p.source("power.active_mw")
    assert p.source("device.board") is None
    # one rule for "assumed": a source saying so, or none at all
    assert p.is_assumption("budget.ram_bytes") and not p.is_assumption("power.active_mw")
    assert p.is_assumption("device.board")
    assert [k for k in p.sources if p.is_assumption(k)] == [k for k in p.sources if k in p.assumptions()]


@pytest.mark.parametrize("name", available_profiles())
def test_latency_says_whether_it_is_fitted_and_to_what(name):
    """Shipped with fitted = false; the estimator fits them, and then must say to what."""
    p = load_profile(name)
    latency = p.table("latency")
    if p.latency_fitted:
        assert latency["fit_source"].strip() and latency["fit_rows"]
        assert p.source("latency.fit_source").startswith("fitted: ")
    else:
        assert latency["fitted"] is False


def test_host_has_no_power_or_battery():
    host = load_profile("host")
    assert host.table("power") == {} and host.table("battery") == {}  # optional for class host


def test_unknown_profile_name_suggests_a_close_match():
    with pytest.raises(ProfileError) as info:
        load_profile("rpi44")
    assert "Did you mean 'rpi4'?" in info.value.message
    assert not isinstance(info.value, ProfileValidationError)


def test_user_paths_work(tmp_path, monkeypatch):
    _write(tmp_path, BASE, "my.toml")
    monkeypatch.chdir(tmp_path)
    assert load_profile("./my.toml").name == "tiny"
    assert load_profile("my.toml").name == "tiny"
    with pytest.raises(ProfileError, match="not found"):
        load_profile("./missing.toml")


def test_profile_dirs_wheel_copy_wins(tmp_path, monkeypatch):
    wheel, checkout = tmp_path / "wheel", tmp_path / "checkout"
    wheel.mkdir()
    checkout.mkdir()
    (checkout / "a.toml").write_text(BASE)
    monkeypatch.setattr(profile_module, "PROFILE_DIRS", (wheel, checkout))
    assert available_profiles() == ["a"]  # empty wheel dir: fall back to the checkout
    (wheel / "b.toml").write_text(BASE)
    assert available_profiles() == ["b"]


# ----------------------------------------------------------------------------- bad profiles

BAD = [
    ("typo_with_hint", [("clock_mhz = 64", "clok_mhz = 64")],
     ["device.clok_mhz: unknown key; did you mean 'clock_mhz'?", "device.clock_mhz: missing"]),
    ("missing_required", [("cores = 1\n", "")],
     ["device.cores: missing; expected an integer", "sources.'device.cores': no such key in this profile"]),
    ("wrong_type", [("cores = 1", 'cores = "one"')],
     ["device.cores: expected a positive integer, received 'one'"]),
    ("negative", [("clock_mhz = 64", "clock_mhz = -5")],
     ["tiny.toml: device.clock_mhz: expected a positive number, received -5"]),
    ("bool_is_not_a_number", [("ram_bytes = 262144", "ram_bytes = true")],
     ["device.ram_bytes: expected a positive integer, received true (a boolean)"]),
    ("float_is_not_an_int", [("cores = 1", "cores = 1.0")],
     ["device.cores: expected a positive integer (no decimal point), received 1.0"]),
    ("zero_cores", [("cores = 1", "cores = 0")],
     ["device.cores: expected a positive integer, received 0"]),
    ("budget_above_capacity", [("ram_bytes = 131072", "ram_bytes = 300000")],
     ["budget.ram_bytes: exceeds the device's capacity device.ram_bytes (262144), received 300000"]),
    ("budget_below_runtime", [("flash_bytes = 524288", "flash_bytes = 1000")],
     ["budget.flash_bytes: smaller than runtime.code_bytes (81920)"]),
    ("unknown_runtime_with_hint", [('name = "tflm"', 'name = "tlfm"')],
     ["runtime.name: expected one of litert, tflm, tflm+ethos-u, received 'tlfm'; did you mean 'tflm'?"]),
    ("unknown_kernels_with_hint", [('kernels = "cmsis-nn"', 'kernels = "cmsisnn"')],
     ["runtime.kernels: expected one of", "did you mean 'cmsis-nn'?"]),
    ("mcu_must_use_tflm", [('name = "tflm"', 'name = "litert"'), ('kernels = "cmsis-nn"', 'kernels = "xnnpack"')],
     ["runtime.name: class 'mcu' runs 'tflm', received 'litert'"]),
    ("tflm_cannot_densify", [("sparse_weights = false", "sparse_weights = true")],
     ["runtime.sparse_weights: TFLM cannot run DENSIFY"]),
    ("threads_above_cores", [("threads = 1", "threads = 2")],
     ["runtime.threads: TFLM is single-threaded", "runtime.threads: expected at most device.cores (1)"]),
    ("sleep_above_active", [("sleep_mw = 0.01", "sleep_mw = 20")],
     ["power.sleep_mw: exceeds power.idle_mw (0.01), received 20"]),
    ("missing_source", [('"device.cores" = "datasheet, p. 1"\n', "")],
     ["device.cores: no source; add sources.'device.cores'"]),
    ("source_for_missing_key", [("[sources]\n", '[sources]\n"device.foo" = "x"\n')],
     ["sources.'device.foo': no such key in this profile"]),
    ("empty_source", [('"device.cores" = "datasheet, p. 1"', '"device.cores" = ""')],
     ["sources.'device.cores': expected a non-empty string"]),
    ("unknown_table_with_hint", [("[latency]", "[powr]\nactive_mw = 1\n\n[latency]")],
     ["powr: unknown key or table; did you mean 'power'?"]),
    ("missing_table", [("[budget]\nflash_bytes = 524288\nram_bytes = 131072\nlatency_ms = 1000\n", "")],
     ["budget: missing table; it is required in every profile"]),
    ("mcu_without_power", [("[power]\nactive_mw = 9.9\nidle_mw = 0.01\nsleep_mw = 0.01\n", "")],
     ["power: missing table; it is required for class 'mcu'"]),
    ("storage_on_an_mcu", [("flash_bytes = 1048576", "storage_bytes = 1048576")],
     ["device.storage_bytes: not used for class 'mcu'", "device.flash_bytes: missing"]),
    ("unknown_class_with_hint", [('class = "mcu"', 'class = "mcus"')],
     ["device.class: expected one of phone, sbc, mcu, host, received 'mcus'; did you mean 'mcu'?"]),
    ("simd_unknown", [('simd = ["dsp"]', 'simd = ["neom"]')],
     ["device.simd: item 0: expected one of", "did you mean 'neon'?"]),
    ("block_shape_length", [("block_sparsity = []", "block_sparsity = [1, 4, 4]")],
     ["runtime.block_sparsity: expected a list of 0 or 2 items, received 3"]),
    ("fitted_without_source", [("fitted = false", "fitted = true")],
     ["latency.fit_source: latency.fitted is true", "latency.fit_rows: latency.fitted is true"]),
    ("bad_name", [('name = "tiny"', 'name = "Tiny Board"')],
     ["name: expected lower-case letters, digits and '_', received 'Tiny Board'"]),
    ("schema_version", [("schema_version = 1", "schema_version = 2")],
     ["schema_version: expected one of 1, received 2"]),
    ("table_is_not_a_table", [("[budget]\nflash_bytes = 524288\nram_bytes = 131072\nlatency_ms = 1000\n", ""),
                              ('description = "test board"\n', 'description = "test board"\nbudget = 5\n')],
     ["budget: expected a table, received 5"]),
    ("not_toml", [("cores = 1", "cores = ")],
     ["tiny.toml: not valid TOML"]),
    ("several_at_once", [("clock_mhz = 64", "clock_mhz = -5"), ("cores = 1", "coers = 1"),
                         ('"power.active_mw" = "datasheet, table 5"\n', "")],
     ["device.clock_mhz: expected a positive number, received -5",
      "device.coers: unknown key; did you mean 'cores'?",
      "power.active_mw: no source"]),
]


def test_base_profile_is_valid(tmp_path):
    assert load_profile(str(_write(tmp_path, BASE))).assumptions()[0] == "battery.capacity_mah"


@pytest.mark.parametrize("edits, expected", [(e, x) for _, e, x in BAD], ids=[i for i, _, _ in BAD])
def test_bad_profile_reports_every_problem(tmp_path, edits, expected):
    problems = _problems(tmp_path, _edit(BASE, *edits))
    text = "\n".join(problems)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert all(p.startswith(str(tmp_path / "tiny.toml")) or p.startswith("tiny.toml") for p in problems)


def test_one_error_lists_every_problem_one_per_line(tmp_path):
    edits = [("clock_mhz = 64", "clock_mhz = -5"), ("ram_bytes = 262144", "ram_bytes = true"),
             ('kernels = "cmsis-nn"', 'kernels = "cmsisnn"')]
    with pytest.raises(ProfileValidationError) as info:
        load_profile(str(_write(tmp_path, _edit(BASE, *edits))))
    lines = info.value.message.splitlines()
    assert lines[0] == f"Invalid device profile: {len(info.value.problems)} problems."
    assert len(info.value.problems) >= 3 and len(lines) == len(info.value.problems) + 2
    assert info.value.exit_code == EXIT_BAD_INPUT


# ----------------------------------------------------------------------------- the latency table

LATENCY_FITTED = '''[latency]
fitted = true
fit_source = "../shared/calibration/published_latency.csv, least squares"
fit_rows = ["Nucleo-L4R5ZI mlperf-tiny-ic", "Nucleo-L4R5ZI mlperf-tiny-kws"]
macs_per_cycle = { conv_int8 = 0.9, fc_int8 = 0.7 }
bytes_per_cycle = 2.5
overhead_us_per_op = 30
fixed_overhead_us = 100
notes = "fitted on two rows"
'''


def test_fitted_latency_needs_no_per_key_sources(tmp_path):
    text = _edit(BASE, ('[latency]\nfitted = false\nfit_source = ""\n', LATENCY_FITTED))
    p = load_profile(str(_write(tmp_path, text)))
    assert p.latency_fitted
    assert p.source("latency.macs_per_cycle.conv_int8").startswith("fitted: ../shared/calibration")


def test_unfitted_latency_numbers_need_sources(tmp_path):
    unfitted = LATENCY_FITTED.replace("fitted = true", "fitted = false")
    text = _edit(BASE, ('[latency]\nfitted = false\nfit_source = ""\n', unfitted))
    problems = "\n".join(_problems(tmp_path, text))
    assert "latency.macs_per_cycle.conv_int8: no source" in problems
    assert "latency.bytes_per_cycle: no source" in problems
    # One source for the whole map covers its entries.
    text += '"latency.macs_per_cycle" = "assumption: guess"\n'
    problems = "\n".join(_problems(tmp_path, text))
    assert "macs_per_cycle" not in problems and "latency.bytes_per_cycle: no source" in problems


def test_latency_map_values_are_checked(tmp_path):
    text = _edit(BASE, ('[latency]\nfitted = false\nfit_source = ""\n', LATENCY_FITTED),
                 ("fc_int8 = 0.7", "fc_int8 = -1"))
    assert any("latency.macs_per_cycle: entry 'fc_int8': expected a positive number, received -1" in p
               for p in _problems(tmp_path, text))


def test_schema_is_extendable(tmp_path, monkeypatch):
    text = _edit(BASE, ("fit_source = \"\"\n", 'fit_source = ""\ncycles_per_byte = 3.0\n'))
    assert any("latency.cycles_per_byte: unknown key" in p for p in _problems(tmp_path, text))
    monkeypatch.setitem(SCHEMA["latency"].keys, "cycles_per_byte", Key("number", "Test key.", positive=True))
    assert any("latency.cycles_per_byte: no source" in p for p in _problems(tmp_path, text))
    text += '"latency.cycles_per_byte" = "assumption: test"\n'
    assert load_profile(str(_write(tmp_path, text))).get("latency.cycles_per_byte") == 3.0


def test_docs_list_every_schema_key():
    """docs/profiles.md documents the format: a key added to SCHEMA needs a row there."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "profiles.md").read_text()
    missing = [k for k in schema_keys() if f"| `{k.rsplit('.', 1)[-1]}` |" not in docs]
    assert not missing, f"add rows for {missing} to the key tables in docs/profiles.md"


def test_validate_is_pure():
    raw = tomllib.loads(BASE)
    assert validate(raw, "x.toml") == []
    raw["device"]["cores"] = -1
    assert validate(raw, "x.toml")[0].startswith("x.toml: device.cores: expected a positive integer")


# ----------------------------------------------------------------------------- CLI

def test_cli_profiles_list():
    result = CliRunner().invoke(main, ["profiles", "list"])
    assert result.exit_code == 0, result.output
    for name in REQUIRED:
        assert name in result.output
    assert "tflm/cmsis-nn" in result.output


def test_cli_profiles_show(tmp_path):
    result = CliRunner().invoke(main, ["profiles", "show", str(_write(tmp_path, BASE))])
    assert result.exit_code == 0, result.output
    assert "clock_mhz" in result.output and "datasheet, p. 1" in result.output
    assert "assumption" in result.output and "not fitted yet" in result.output
    assert "budget.ram_bytes" in result.output  # listed among the assumptions


def test_cli_profiles_show_shipped():
    result = CliRunner().invoke(main, ["profiles", "show", "rpi4"])
    assert result.exit_code == 0, result.output
    assert "Cortex-A72" in result.output and "published_power.csv" in result.output


def test_cli_profiles_show_unknown_exits_2():
    result = CliRunner().invoke(main, ["profiles", "show", "rpi44"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "Did you mean 'rpi4'?" in result.output


def test_cli_profiles_validate_ok():
    files = [str(PROFILE_DIR / f"{n}.toml") for n in ("rpi4", "nrf52840")]
    result = CliRunner().invoke(main, ["profiles", "validate", *files])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == 2


def test_cli_profiles_validate_reports_all_problems_in_all_files(tmp_path):
    bad1 = _write(tmp_path, _edit(BASE, ("clock_mhz = 64", "clock_mhz = -5")), "bad1.toml")
    bad2 = _write(tmp_path, _edit(BASE, ('name = "tflm"', 'name = "tlfm"')), "bad2.toml")
    good = _write(tmp_path, BASE, "good.toml")
    result = CliRunner().invoke(main, ["profiles", "validate", str(good), str(bad1), str(bad2),
                                       str(tmp_path / "none.toml")])
    assert result.exit_code == EXIT_BAD_INPUT
    out = result.output
    assert "ok " in out and "Invalid device profile: 3 problems." in out
    assert "bad1.toml: device.clock_mhz: expected a positive number, received -5" in out
    assert ("bad2.toml: runtime.name: expected one of litert, tflm, tflm+ethos-u, received 'tlfm'; "
            "did you mean 'tflm'?") in out
    assert "none.toml: Profile file not found" in out
    assert "Traceback" not in out


# ----------------------------------------------------------------------------- typed accessors

@pytest.mark.parametrize("name, core", [("nrf52840", "cortex-m4"), ("stm32l4r5", "cortex-m4"),
                                        ("ek_ra6m4", "cortex-m33"), ("stm32h7a3", "cortex-m7"),
                                        ("rp2040", "cortex-m0plus"), ("esp32s3", "xtensa-lx7"),
                                        ("rpi4", "cortex-a72"), ("host", None)])
def test_core_is_read_from_the_profiles_own_cpu(name, core):
    assert load_profile(name).core == core


def test_core_of_a_user_profile_follows_its_cpu(tmp_path):
    text = _edit(BASE, ('cpu = "Cortex-M4F"', 'cpu = "Arm Cortex-M0+"'), ('name = "tiny"', 'name = "renamed"'))
    assert load_profile(str(_write(tmp_path, text))).core == "cortex-m0plus"  # by its data, not its name


def test_typed_accessors():
    rpi4, nrf = load_profile("rpi4"), load_profile("nrf52840")
    assert (rpi4.cpu, rpi4.cores, rpi4.clock_mhz, rpi4.threads, rpi4.kernels) == ("Cortex-A72", 4, 1500.0, 4, "xnnpack")
    assert rpi4.simd == ("neon",) and rpi4.code_bytes == 26_360_224 and rpi4.persistent_ram_bytes == 13_361_152
    assert rpi4.device["class"] == "sbc" and rpi4.runtime_table["name"] == "litert"
    assert rpi4.budget["latency_ms"] == 100 and rpi4.kernel_code_bytes == {}
    assert rpi4.sources["device.cores"].startswith("Raspberry Pi 4")
    assert nrf.sources_of("latency")["fixed_overhead_us"].startswith("assumption: 0")
    assert all("." not in k or k.startswith("macs_per_cycle.") for k in nrf.sources_of("latency"))


def test_accessors_of_a_hand_built_profile_use_the_estimators_defaults():
    p = profile_module.Profile(name="t", path=Path("t.toml"), sha256="0" * 64, raw={"device": {"class": "mcu"}})
    assert (p.runtime, p.threads, p.cores, p.clock_mhz, p.code_bytes, p.persistent_ram_bytes) == \
        ("litert", 1, None, None, None, 0)
    assert p.sources == {} and p.sources_of("latency") == {} and p.core is None and p.table("power") == {}


# ----------------------------------------------------------------------------- the writer

def test_set_table_keeps_comments_and_other_tables():
    text = _edit(BASE, ("cores = 1", "cores = 1   # one core"), ("[latency]", "# the model\n[latency]"))
    new = set_table(text, "latency", {"fitted": True, "fit_source": "rows", "fit_rows": ["a"],
                                      "macs_per_cycle": {"int8": 1 / 3}})
    assert "cores = 1   # one core" in new and "# the model\n[latency]" in new
    assert "macs_per_cycle = { int8 = 0.333333 }" in new  # 6 significant digits, padded inline table
    raw = tomllib.loads(new)
    assert raw["latency"] == {"fitted": True, "fit_source": "rows", "fit_rows": ["a"],
                              "macs_per_cycle": {"int8": 0.333333}}
    assert raw["sources"] == tomllib.loads(BASE)["sources"] and raw["device"] == tomllib.loads(BASE)["device"]
    assert set_table(text, "latency", tomllib.loads(text)["latency"]) == text  # same values: same text
    with pytest.raises(ValueError):
        set_table(text, "latency", {"bytes_per_cycle": float("inf")})


def test_set_sources_replaces_one_tables_entries_only():
    new = set_sources(BASE, "power", {"active_mw": "measured"})
    sources = tomllib.loads(new)["sources"]
    assert sources["power.active_mw"] == "measured" and "power.idle_mw" not in sources
    assert {k: v for k, v in sources.items() if not k.startswith("power.")} == \
        {k: v for k, v in tomllib.loads(BASE)["sources"].items() if not k.startswith("power.")}


def test_write_latency_validates_before_writing(tmp_path):
    src = _write(tmp_path, BASE)
    out = tmp_path / "out.toml"
    with pytest.raises(ProfileValidationError) as info:  # fitted without fit_rows: invalid, nothing written
        write_latency(src, {"fitted": True, "fit_source": "x"}, out=out)
    assert "latency.fit_rows" in "\n".join(info.value.problems) and not out.exists()
    assert write_latency(src, {"fitted": True, "fit_source": "x", "fit_rows": ["r"], "notes": "n",
                               "macs_per_cycle": {"int8": 2}}, out=out)
    assert load_profile(str(out)).get("latency.macs_per_cycle.int8") == 2.0
    assert list(tomllib.loads(out.read_text())["latency"]) == ["fitted", "fit_source", "fit_rows",
                                                                "macs_per_cycle", "notes"]  # LATENCY_ORDER
    assert not write_latency(out, tomllib.loads(out.read_text())["latency"])  # unchanged: not rewritten
    with pytest.raises(ProfileValidationError):
        check_profile_text(BASE.replace("cores = 1", "cores = 0"), "x.toml")
