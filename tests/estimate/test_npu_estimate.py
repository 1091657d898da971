"""estimate.npu and check_model on Arm Ethos-U profiles, with real Vela 5.2 on tiny int8 models built without
TensorFlow: latency is Vela's cycles at the profile's NPU clock plus the CPU's share priced by the CPU model,
energy weighs NPU and CPU time by their powers, flash and RAM are the compiled file's, budgets include the
NPU's SRAM; a file Vela already compiled is described from the file, saying what cannot be known."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import REPO
from support.npu import (
    TEST_NPU,
    compiled_fallback,
    compiled_tiny,
    env_without_vela,
    fallback_npu_model,
    npu_profile,
    tiny_npu_model,
)

from edgesparse.estimate import check_model, energy_and_battery, latency_coefficients
from edgesparse.estimate.npu import LATENCY_BASIS, npu_estimate
from edgesparse.profiles import Profile
from edgesparse.runtime.vela import VELA_EXTRA, vela_version
from edgesparse.tflite.graph import load_graph

pytestmark = pytest.mark.skipif(vela_version() is None, reason=f"Vela is not installed ({VELA_EXTRA})")


def _without(profile: Profile, *tables: str) -> Profile:
    """The same profile without some tables (a device whose CPU cost model is not known)."""
    raw = {k: v for k, v in profile.raw.items() if k not in tables}
    return Profile(name=profile.name, path=profile.path, sha256=profile.sha256 + "-".join(tables), raw=raw)


def test_an_all_npu_model_takes_velas_cycles_at_the_profiles_npu_clock():
    compilation = compiled_tiny()
    assert not compilation.cpu_ops and compilation.total_cycles > 0
    bare = _without(npu_profile(), "latency")     # no CPU cost model: nothing but the NPU's time
    est = npu_estimate(compilation, bare, int8_model=load_graph(tiny_npu_model()))
    assert est.npu_ms == pytest.approx(compilation.total_cycles / (TEST_NPU.clock_mhz * 1e3), rel=1e-12)
    assert est.latency_ms == pytest.approx(est.npu_ms, rel=1e-12) and est.cpu_ms == 0.0
    assert est.latency.basis.startswith(LATENCY_BASIS)
    assert [row.op for row in est.latency.ops] == ["ETHOS-U"]
    assert any("dispatch overhead around the NPU is not counted" in n for n in est.notes)
    # with a CPU cost model, TFLM's dispatch of the one ethos-u op is added at the profile's per-op overhead
    profile = npu_profile()
    priced = npu_estimate(compilation, profile, int8_model=load_graph(tiny_npu_model()))
    overhead_ms = latency_coefficients(profile).overhead_us_per_op / 1000.0
    assert priced.latency_ms == pytest.approx(est.npu_ms + overhead_ms, rel=1e-9)
    assert priced.cpu_ms == pytest.approx(overhead_ms, rel=1e-9)
    # at twice the NPU clock the NPU part halves
    fast = npu_profile(dataclasses.replace(TEST_NPU, clock_mhz=800.0))
    assert npu_estimate(compilation, fast, int8_model=None).npu_ms == pytest.approx(est.npu_ms / 2, rel=1e-12)


def test_ops_on_the_cpu_are_priced_by_the_cpu_model_and_their_energy_at_the_cpu_power():
    compilation, profile = compiled_fallback(), npu_profile()
    est = npu_estimate(compilation, profile, int8_model=load_graph(fallback_npu_model()))
    cpu_rows = [row for row in est.latency.ops if row.flag.startswith("CPU:")]
    assert sorted(row.op for row in cpu_rows) == ["DEPTHWISE_CONV_2D", "FLOOR"]
    assert all(row.predicted_us > 0 for row in cpu_rows)
    assert "Unsupported opType" in next(r.flag for r in cpu_rows if r.op == "FLOOR")
    assert est.cpu_ms == pytest.approx(sum(r.predicted_us for r in est.latency.ops if r.op != "ETHOS-U") / 1000)
    assert est.latency_ms == pytest.approx(est.npu_ms + est.cpu_ms, rel=1e-9)
    assert sum(r.share for r in est.latency.ops) == pytest.approx(1.0, abs=1e-9)
    assert any("fall back to the CPU" in w and "FLOOR" in w for w in est.warnings)
    # the NpuEstimate reads Vela's figures through its compilation; report.json's names stay
    document = est.to_dict()
    assert (document["accelerator"], document["npu_cycles"], document["total_cycles"]) == (
        compilation.accelerator, compilation.npu_cycles, compilation.total_cycles)
    assert [op["placement"] for op in document["ops"]] == ["npu", "cpu", "cpu", "npu", "npu"]
    assert (document["npu_ops"], document["cpu_ops"]) == (3, 2)
    assert document["int8_model_bytes"] == len(fallback_npu_model())
    assert document["vela_warnings"] == list(compilation.warnings)
    cpu_mw = profile.table("power")["active_mw"]
    expected = (est.npu_ms * TEST_NPU.active_mw + est.cpu_ms * cpu_mw) / 1000.0
    assert est.energy_mj == pytest.approx(expected, rel=1e-9)
    # the battery life is estimate.energy's arithmetic at the time-weighted power
    battery = profile.table("battery")
    rest = profile.table("power")[f"{battery['rest_state']}_mw"]
    _, _, hours, _, _ = energy_and_battery(est.latency_ms, active_mw=expected * 1000 / est.latency_ms,
                                           sleep_mw=rest, rate_per_s=battery["inferences_per_hour"] / 3600,
                                           battery_mah=battery["capacity_mah"], voltage_v=battery["voltage_v"])
    assert est.energy.battery_hours == pytest.approx(hours, rel=1e-9)
    # without the int8 model the CPU ops cannot be priced: no latency, not a guess
    blind = npu_estimate(compilation, profile, int8_model=None)
    assert blind.latency_ms is None and blind.energy_mj is None and blind.latency.basis == "none"


def test_the_check_lists_the_cpu_fallback_and_velas_warnings_once_each():
    compilation = compiled_fallback()
    result = check_model(fallback_npu_model(), npu_profile(), compilation=compilation)
    fallback = [w for w in result.warnings if "fall back to the CPU" in w]
    assert len(fallback) == 1 and "op 1 DEPTHWISE_CONV_2D" in fallback[0] and "op 2 FLOOR" in fallback[0]
    assert compilation.warnings
    assert [w for w in result.warnings if w.startswith("Vela: ")] == [f"Vela: {w}" for w in compilation.warnings]


def test_flash_and_ram_are_the_compiled_files_with_velas_arena():
    compilation, profile = compiled_fallback(), npu_profile()
    est = npu_estimate(compilation, profile, int8_model=load_graph(fallback_npu_model()))
    assert est.flash.model_bytes == len(compilation.model)
    assert est.flash.total_bytes == len(compilation.model) + est.flash.runtime_code_bytes
    # TFLM's planner places Vela's scratch and the NPU's boundary tensors at Vela's offsets; the CPU ops'
    # tensors live inside Vela's arena too, so the planned arena is Vela's SRAM figure
    assert est.ram.planned_bytes == compilation.sram_bytes == compilation.arena_bytes
    assert compiled_tiny().sram_bytes == npu_estimate(compiled_tiny(), profile, int8_model=None).ram.planned_bytes
    assert est.ram.total_bytes == est.ram.planned_bytes + est.ram.persistent_bytes
    assert any("ETHOS-U" in n for n in est.flash.notes)


def test_check_model_compiles_for_an_ethos_u_profile_and_checks_the_npu_sram():
    profile = npu_profile()
    result = check_model(tiny_npu_model(), profile)
    assert result.npu is not None and result.runtime == "tflm+ethos-u"
    assert result.latency_ms == result.npu.latency_ms and result.model_size == len(result.npu.compilation.model)
    sram = next(b for b in result.budgets if b.name == "npu_sram_bytes")
    assert sram.ok and sram.value == result.npu.compilation.sram_bytes and sram.limit == TEST_NPU.sram_bytes
    document = result.to_dict()
    assert document["npu"]["total_cycles"] == result.npu.compilation.total_cycles
    assert document["latency_basis"].startswith(LATENCY_BASIS) and result.fits
    small = npu_profile(dataclasses.replace(TEST_NPU, sram_bytes=1024))
    over = check_model(tiny_npu_model(), small, compilation=compiled_tiny())
    assert not over.fits and next(b for b in over.budgets if b.name == "npu_sram_bytes").status == "FAIL"
    with pytest.raises(ValueError, match="no \\[npu\\] table"):
        check_model(tiny_npu_model(), "nrf52840", compilation=compiled_tiny())


def test_check_on_a_vela_compiled_file_says_what_it_cannot_know(tmp_path: Path):
    compilation = compiled_fallback()
    path = tmp_path / "model_vela.tflite"
    path.write_bytes(compilation.model)
    result = check_model(path, npu_profile())
    assert result.npu is None and result.ethos_u is not None
    assert result.ethos_u.cpu_ops == ("DEPTHWISE_CONV_2D", "FLOOR")
    assert result.latency_ms is None and result.energy_mj is None
    assert next(b for b in result.budgets if b.name == "latency_ms").status == "unknown"
    assert result.flash.model_bytes == len(compilation.model)
    assert result.ram.planned_bytes == npu_estimate(compilation, npu_profile(), int8_model=None).ram.planned_bytes
    text = " ".join(result.warnings)
    assert "not re-estimated" in text and "report.json" in text and "plain int8" in text
    section = result.to_dict()["npu"]
    assert section["compiled_file"] and section["arena_bytes"] == compilation.arena_bytes
    # on a device without an NPU the file cannot run at all
    plain = check_model(path, "nrf52840")
    assert any("will not run there" in w for w in plain.warnings) and plain.latency_ms is None


_WITHOUT_VELA = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from support.npu import npu_profile, tiny_npu_model
    from edgesparse.estimate import check_model
    try:
        check_model(tiny_npu_model(), npu_profile())
    except Exception as exc:
        print(type(exc).__name__, exc.exit_code, exc)
""")


def test_an_ethos_u_check_without_vela_is_exit_2_naming_the_extra(tmp_path: Path):
    """A child process where `ethosu` fails to import, as when edgesparse[npu] is not installed."""
    env = env_without_vela(tmp_path)
    done = subprocess.run([sys.executable, "-c", _WITHOUT_VELA.format(tests=str(REPO / "tests"))], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.startswith("MissingDependency 2 "), done.stdout + done.stderr
    assert VELA_EXTRA in done.stdout
