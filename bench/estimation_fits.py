"""Part 3 of the estimation benchmark: the published devices' latency fits and every shipped [latency] table.

Why a module of its own: it is arithmetic on published rows
(../shared/calibration/published_latency.csv and
edgesparse/estimate/calibration_extra.csv), the transfer factors derived from
them and the tables written into device_profiles/*.toml through
`edgesparse.profiles.write_latency`; the models it needs come from
bench/estimation_models.py. Raises `SystemExit` when calibration_extra.csv
lacks a row a factor needs, and `ProfileValidationError` when a table would
make a profile invalid.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from estimation_models import MLPERF, SHARED, mobilenet_v1_224, resolve_model

from edgesparse.estimate import check_model
from edgesparse.estimate.calibrate import (
    model_features,
    nnls,
    read_extra_rows,
    transfer_macs_per_cycle,
    transfer_overhead_us,
)
from edgesparse.profiles import PROFILE_DIR, available_profiles, load_profile, write_latency
from edgesparse.tflite.graph import load_graph

__all__ = [
    "EXTRA_REF",
    "PUBLISHED",
    "fit_baseline",
    "fit_family",
    "held_out_rows",
    "leave_one_out",
    "profile_predictions",
    "published_features",
    "published_fit_tables",
    "published_rows",
    "transfer_factors",
    "write_latency_table",
]

PUBLISHED = SHARED / "calibration" / "published_latency.csv"


# --------------------------------------------------------------------------- published rows and the family fits


def published_rows() -> list[dict]:
    with PUBLISHED.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


_DEVICE_PROFILE = {"Nucleo-L4R5ZI": "stm32l4r5", "EK-RA6M4": "ek_ra6m4", "RPi 4 (BCM2711)": "rpi4",
                   "RPi 4 (BCM2711, ARM64)": "rpi4", "Pixel 3": "pixel3", "Pixel 4": "pixel4"}



def _features_row(label: str, profile_name: str, path: Path, ms: float, line: str, use: str = "fit") -> dict:
    """Cost features of one measured row under its profile: MACs split into the family's two classes."""
    profile = load_profile(profile_name)
    feats = model_features(load_graph(path), profile)
    macs = {k: v for k, v in feats.items() if k.split("_")[0] in ("conv", "dwconv", "fc")}
    # the shared-ratio class: depthwise for TFLM (CMSIS-NN depthwise does fewer MACs per cycle),
    # int8 for LiteRT (int8 vs float32 kernels)
    if profile.runtime == "tflm":
        weighted = sum(v for k, v in macs.items() if k.startswith("dwconv"))
    else:
        weighted = sum(v for k, v in macs.items() if "int8" in k)
    return {"line": line, "profile": profile.name, "family": profile.runtime, "kernels": profile.kernels,
            "clock_mhz": float(profile.clock_mhz or 0), "macs": sum(macs.values()),
            "macs_weighted": weighted, "macs_base": sum(macs.values()) - weighted,
            "ops": feats.get("ops", 0.0), "ms": float(ms), "label": label, "use": use, "offset_us": 0.0,
            "path": str(path)}


def published_features() -> list[dict]:
    """One dict per fitted row: ../shared/calibration/published_latency.csv and the 'fit' rows of the extra CSV."""
    out = []
    for i, row in enumerate(published_rows(), start=2):
        if row["model_file"]:
            path = SHARED / row["model_file"]
        else:
            path = mobilenet_v1_224()["int8" if row["precision"].lower() == "int8" else "float32"]
        out.append(_features_row(f"{row['device']} {row['benchmark']}", _DEVICE_PROFILE[row["device"]], path,
                                 float(row["latency_ms"]), f"published_latency.csv line {i}"))
    for row in read_extra_rows():
        if row["use"] in ("fit", "test") and row["profile"]:
            out.append(_features_row(f"{row['device']} {row['benchmark']}", row["profile"],
                                     resolve_model(row["model_file"]), float(row["latency_ms"]),
                                     f"calibration_extra.csv line {row['line']}", use=row["use"]))
    return out


def _nnls_rel(a, y):


    w = 1.0 / y
    aw = a * w[:, None]
    scale = np.maximum(np.abs(aw).max(axis=0), 1e-30)
    return nnls(aw / scale, np.ones_like(y)) / scale


def fit_family(rows: list[dict]):
    """The published-device cost model for one runtime family: (cycles/MAC per device, shared ratio, predict).

    t = cycles_per_MAC[device] x (MACs_base + r x MACs_weighted) / clock + offset, where the weighted class is
    depthwise conv for TFLM + CMSIS-NN (MCU) rows and int8 ops for LiteRT/XNNPACK rows, r is one number shared
    by the family (one parameter per device plus one per family), and `offset_us` is the row's per-op
    overhead, priced beforehand (it is not identifiable from these rows).
    """

    devices = sorted({r["profile"] for r in rows})
    y = np.array([r["ms"] * 1000.0 - r.get("offset_us", 0.0) for r in rows])
    best = None
    for ratio in np.linspace(0.05, 6.0, 1191):
        a = np.zeros((len(rows), len(devices)))
        for i, r in enumerate(rows):
            a[i, devices.index(r["profile"])] = (r["macs_base"] + ratio * r["macs_weighted"]) / r["clock_mhz"]
        x = _nnls_rel(a, y)
        err = np.sum((a @ x / y - 1.0) ** 2)
        if best is None or err < best[0] - 1e-12:
            best = (err, float(ratio), x)
    _, ratio, x = best
    if not any(r["macs_weighted"] for r in rows):
        ratio = 1.0
    params = {d: {"cycles_per_mac": float(x[j])} for j, d in enumerate(devices)}

    def predict(r):
        cpm = params[r["profile"]]["cycles_per_mac"]
        return (cpm * (r["macs_base"] + ratio * r["macs_weighted"]) / r["clock_mhz"] + r.get("offset_us", 0.0)) / 1000.0
    return params, {"ratio": ratio}, predict


def fit_baseline(rows: list[dict]):
    """Naive baseline: t = c x MACs / clock with one c for the family."""
    a = np.array([[r["macs"] / r["clock_mhz"]] for r in rows])
    y = np.array([r["ms"] * 1000.0 for r in rows])
    c = float(_nnls_rel(a, y)[0])
    return lambda r: c * r["macs"] / r["clock_mhz"] / 1000.0


def _family_rows(rows: list[dict], family: str) -> list[dict]:
    """Rows fitted together: LiteRT/XNNPACK rows; TFLM rows with CMSIS-NN kernels (ESP-NN is fitted alone)."""
    return [r for r in rows if r["use"] == "fit" and r["family"] == family
            and (family != "tflm" or r["kernels"] == "cmsis-nn")]


def leave_one_out(rows: list[dict]) -> list[dict]:
    out = []
    for family in ("tflm", "litert"):
        fam = _family_rows(rows, family)
        for i, r in enumerate(fam):
            train = fam[:i] + fam[i + 1:]
            if not any(t["profile"] == r["profile"] for t in train):
                out.append({**r, "model_ms": None, "baseline_ms": None})
                continue
            _, _, predict = fit_family(train)
            base = fit_baseline(train)
            out.append({**r, "model_ms": predict(r), "baseline_ms": base(r)})
    return out


def write_latency_table(profile_name: str, values: dict, sources: dict | None = None) -> None:
    """Replace a shipped profile's [latency] table and its [sources] "latency.*" entries (re-read right before
    writing; validated; atomic; left alone when unchanged)."""
    write_latency(PROFILE_DIR / f"{profile_name}.toml", values, sources or {})


# ----------------------------------------------------------------- ratios from the extra rows (transfer factors)


def _geomean(values) -> float:

    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def transfer_factors() -> dict:
    """Every transfer factor with the rows it is computed from (calibration_extra.csv)."""
    extra = read_extra_rows()

    def cycles(row):  # cycles per inference (or per event)
        return float(row["latency_ms"]) * 1000.0 * float(row["clock_mhz"])

    def find(device_part, bench_part="", runtime_part=""):
        hits = [r for r in extra if device_part in r["device"] and bench_part in r["benchmark"]
                and runtime_part in r["runtime"]]
        if len(hits) != 1:
            raise SystemExit(f"calibration_extra.csv: expected one row for {device_part!r} {bench_part!r} "
                             f"{runtime_part!r}, found {len(hits)}")
        return hits[0]

    out: dict = {}
    # Cortex-M7 vs Cortex-M4 MAC work, same runtime on both (Bosch HALE 1.0; ST X-CUBE-AI 7.1)
    m7 = []
    for runtime in ("Bosch HALE", "X-CUBE-AI"):
        for bench in ("kws", "ic"):
            h7 = find("H7A3", bench, runtime)
            l4 = find("L4R5", bench, runtime)
            m7.append((cycles(h7) / cycles(l4), h7, l4))
    out["m7_vs_m4"] = {"factor": _geomean(r for r, _, _ in m7),
                       "parts": [(f"{h['runtime']} {h['benchmark']}", r, h["line"], m4["line"]) for r, h, m4 in m7]}
    # Cortex-M0+ vs Cortex-M4, same runtime (Bosch HALE 1.0, STM32G0B1 vs STM32L4R5)
    m0 = []
    for bench in ("kws", "ic"):
        g0 = find("G0B1RE", bench, "Bosch")
        l4 = find("L4R5", bench, "Bosch")
        m0.append((cycles(g0) / cycles(l4), g0, l4))
    out["m0p_vs_m4"] = {"factor": _geomean(r for r, _, _ in m0),
                        "parts": [(f"Bosch HALE {g['benchmark']}", r, g["line"], m4["line"]) for r, g, m4 in m0]}
    # TFLM per-invoke cycles of the same tiny model (hello_world), relative to the nRF52840 DK
    nrf = find("nRF52840 DK", "hello_world")
    for key, dev in (("m0p_overhead", "Raspberry Pi Pico"), ("m7_overhead", "SAMV71"),
                     ("lx6_overhead", "ESP32-S (ESP32)"), ("m4_f429_check", "F429ZI"), ("m0p_samd21_check", "SAMD21")):
        row = find(dev, "hello_world")
        out[key] = {"factor": cycles(row) / cycles(nrf), "parts": [(row["device"], cycles(row) / cycles(nrf),
                                                                     row["line"], nrf["line"])]}
    out["nrf_hello_world"] = nrf
    # single-thread scalar speed (sysbench cpu), time per event relative to the host
    host = find("edgesparse development VM", "sysbench")
    for key, dev in (("pi3", "Raspberry Pi 3+"), ("pi4", "Raspberry Pi 4"), ("pi5", "Raspberry Pi 5")):
        row = find(dev, "sysbench")
        out[f"sysbench_{key}"] = {"factor": float(row["latency_ms"]) / float(host["latency_ms"]),
                                  "parts": [(row["device"], float(row["latency_ms"]) / float(host["latency_ms"]),
                                             row["line"], host["line"])], "clock_mhz": float(row["clock_mhz"])}
    # XNNPACK thread scaling: speed-up of MobileNet v1 at 2 and at 4 threads over 1 thread
    speed = {}
    for dev in ("Pixel (Snapdragon 821)", "Pixel 2 (Snapdragon 835)", "Pixel 3a (Snapdragon 670)"):
        rows = [r for r in extra if r["device"] == dev and r["use"] == "threads"]
        single = next(float(r["latency_ms"]) for r in rows if r["threads"] == "1")
        multi = next(r for r in rows if r["threads"] != "1")
        speed.setdefault(int(multi["threads"]), []).append((single / float(multi["latency_ms"]), multi["line"]))
    out["xnnpack_speedup"] = {t: (_geomean(v for v, _ in vals), [line for _, line in vals])
                              for t, vals in speed.items()}
    return out


# ----------------------------------------------------------------- the [latency] tables of every shipped profile


EXTRA_REF = "edgesparse/calibration_extra.csv"
_CLOCKED = ("stm32l4r5", "ek_ra6m4", "nrf52840", "stm32h7a3", "rp2040", "esp32s3", "rpi4", "rpi3bplus",
            "rpizero2w", "rpi5", "pixel3", "pixel4", "midrange_a76", "host")


def _line_list(factor_entry) -> str:
    return ", ".join(f"{name} {ratio:.3g} (lines {a}/{b})" for name, ratio, a, b in factor_entry["parts"])


def published_fit_tables(rows: list[dict], host_table: dict | None = None) -> dict[str, tuple[dict, dict]]:
    """(values, [sources] latency entries) for every shipped profile except host.

    Fitted: the MAC rates of devices with published rows (LiteRT/XNNPACK family and TFLM + CMSIS-NN family, as
    before; plus the Raspberry Pi 3B+ and the ESP32-S3 from calibration_extra.csv). Transferred: MAC rates of
    devices without rows, from a fitted device of the same core family and runtime, and every device's per-op
    and per-inference overhead (host: LiteRT, nRF52840 hello_world row: TFLM). Every factor names its rows.
    Sets the TFLM rows' `offset_us` (their priced per-op overhead), which the leave-one-out fit uses.
    """
    f = transfer_factors()
    clock = {n: float(load_profile(n).clock_mhz or 0) for n in _CLOCKED}
    if host_table is None:
        host_table = dict(load_profile("host").table("latency"))
    fam = _tflm_family(rows, f, clock)
    tables = _tflm_fitted_tables(fam)
    tables.update(_mcu_transferred_tables(fam, tables["stm32l4r5"][0]["macs_per_cycle"]))
    esp = _esp32s3_table(fam, rows)
    if esp is not None:
        tables["esp32s3"] = esp
    host = _HostOverhead(per_op_us=float(host_table.get("overhead_us_per_op", 0.0)),
                         fixed_us=float(host_table.get("fixed_overhead_us", 0.0)),
                         threads=int(host_table.get("fit_threads", 2)), factors=_litert_overhead_factors(f, clock))
    tables.update(_litert_fitted_tables(rows, host))
    tables.update(_litert_transferred_tables(tables, host, f, clock))
    return tables


# --- TFLM: per-op overhead from the nRF52840 hello_world row; MAC rates from the CMSIS-NN family rows


@dataclass
class _TflmFamily:
    """The TFLM + CMSIS-NN family fit, with the per-op overhead priced from the nRF52840 hello_world row."""
    rows: list[dict]
    params: dict          # device -> {"cycles_per_mac": ...}
    ratio: float          # depthwise/conv cost ratio shared by the family
    nrf_ovh_us: float     # per-op overhead on the nRF52840, µs
    ovh_note: str         # how it was priced
    sources_m4: str       # the rows the family was fitted to
    overhead: dict        # device -> (cycle factor vs the nRF52840, why)
    clock: dict
    factors: dict         # transfer_factors()


def _tflm_family(rows: list[dict], f: dict, clock: dict) -> _TflmFamily:
    nrf = f["nrf_hello_world"]
    hello = _features_row("nRF52840 DK hello_world", "nrf52840", resolve_model(nrf["model_file"]),
                          float(nrf["latency_ms"]), f"calibration_extra.csv line {nrf['line']}")
    tflm = _family_rows(rows, "tflm")
    ovh_cycles = 0.0
    for _ in range(5):  # the overhead needs the M4's MAC rate and the MAC fit needs the overhead: iterate
        for r in tflm:
            r["offset_us"] = r["ops"] * ovh_cycles / r["clock_mhz"]
        params, shared, _ = fit_family(tflm)
        cpm_m4 = params["stm32l4r5"]["cycles_per_mac"]
        mac_cycles = cpm_m4 * (hello["macs_base"] + shared["ratio"] * hello["macs_weighted"])
        ovh_cycles = max(hello["ms"] * 1000.0 * hello["clock_mhz"] - mac_cycles, 0.0) / hello["ops"]
    lines = "; ".join(f"line {r['line'].split()[-1]} ({r['label']}, {r['ms']:g} ms)" for r in tflm)
    hello_src = (f"{EXTRA_REF} line {nrf['line']}: nRF52840 DK, TFLM hello_world (3 FULLY_CONNECTED, "
                 f"{hello['macs']:.0f} MACs) {float(nrf['latency_ms']) * 1000:g} us per invoke ({nrf['source']})")
    ovh_note = (f"{ovh_cycles:.0f} cycles per op: the nRF52840 DK hello_world invoke ({hello_src}) less its MACs at "
                f"the STM32L4R5's fitted rate, over its 3 ops (all non-MAC time, timer and input quantisation "
                "included, is attributed to per-op overhead; fixed per-inference overhead is not separated)")
    return _TflmFamily(rows=tflm, params=params, ratio=shared["ratio"], nrf_ovh_us=ovh_cycles / clock["nrf52840"],
                       ovh_note=ovh_note,
                       sources_m4="fit to ../shared/calibration/published_latency.csv rows " + lines,
                       overhead=_mcu_overhead_factors(f), clock=clock, factors=f)


def _mcu_overhead_factors(f: dict) -> dict[str, tuple[float, str]]:
    """Device -> (per-op cycles as a multiple of the nRF52840's, why)."""
    f429 = f["m4_f429_check"]
    return {
        "stm32l4r5": (1.0, "same Cortex-M4F core as the nRF52840; the second M4 of the same benchmark, an STM32F429ZI "
                           f"(Arduino), needs {f429['factor']:.2f}x the nRF52840's cycles per invoke ({EXTRA_REF} "
                           f"lines {f429['parts'][0][2]}/{f429['parts'][0][3]})"),
        "ek_ra6m4": (1.0, "Cortex-M33 assumed to need the Cortex-M4's cycles per op (no published comparison found)"),
        "stm32h7a3": (f["m7_overhead"]["factor"], "Cortex-M7 vs Cortex-M4 cycles per invoke of the same TFLM "
                      "hello_world benchmark: ATSAMV71 (M7, Zephyr) vs nRF52840 (M4F, Zephyr), "
                      f"{_line_list(f['m7_overhead'])}"),
        "rp2040": (f["m0p_overhead"]["factor"], "Cortex-M0+ vs Cortex-M4 cycles per invoke of the same TFLM "
                   f"hello_world benchmark: Raspberry Pi Pico vs nRF52840, {_line_list(f['m0p_overhead'])} "
                   f"(SAMD21, the other M0+: {f['m0p_samd21_check']['factor']:.2f}x)"),
        "esp32s3": (f["lx6_overhead"]["factor"], "Xtensa vs Cortex-M4 cycles per invoke of the same TFLM hello_world "
                    f"benchmark: ESP32 (LX6, Arduino) vs nRF52840, {_line_list(f['lx6_overhead'])}; the ESP32-S3's LX7 "
                    "is assumed to need the LX6's cycles"),
    }


def _mcu_overhead_entry(fam: _TflmFamily, name: str) -> tuple[float, float, str]:
    """(per-op overhead µs, its time factor vs the nRF52840, its [sources] text) of one MCU."""
    factor, why = fam.overhead[name]
    time_factor = factor * fam.clock["nrf52840"] / fam.clock[name]
    us = transfer_overhead_us(fam.nrf_ovh_us, time_factor)
    src = (f"assumption: transferred from nrf52840 ({fam.nrf_ovh_us:.4g} us per op at 64 MHz) x overhead_factor "
           f"{time_factor:.4g} = {factor:.3g} x the nRF52840's cycles ({why}) x 64/{fam.clock[name]:g} MHz")
    return us, time_factor, src


def _tflm_fitted_tables(fam: _TflmFamily) -> dict[str, tuple[dict, dict]]:
    tables = {}
    for name, p in fam.params.items():
        cpm = p["cycles_per_mac"]
        us, time_factor, src = _mcu_overhead_entry(fam, name)
        tables[name] = ({
            "fitted": True, "basis": "fitted+transferred", "fit_source": fam.sources_m4,
            "fit_rows": [f"{r['line']}: {r['label']}" for r in fam.rows if r["profile"] == name], "fit_threads": 1,
            "overhead_from": "nrf52840", "overhead_factor": time_factor,
            "macs_per_cycle": {"int8": 1.0 / cpm, "dwconv_int8": 1.0 / (cpm * fam.ratio)},
            "overhead_us_per_op": us, "fixed_overhead_us": 0.0,
            "notes": (f"{len(fam.params) + 1} parameters over {len(fam.rows)} MCU rows: cycles/MAC per device "
                      f"({cpm:.3g} here) and a depthwise/conv cost ratio {fam.ratio:.3g} shared by the TFLM+CMSIS-NN "
                      f"family, fitted after subtracting the per-op overhead; per-op overhead transferred "
                      f"({fam.ovh_note}); elementwise ops not priced; leave-one-out errors in docs/estimation.md"),
        }, {"overhead_us_per_op": src, "overhead_factor": src})
    return tables


def _mcu_transferred_table(fam: _TflmFamily, l4: dict, name: str, factor: float, why: str,
                           basis_note: str) -> tuple[dict, dict]:
    """An MCU without rows of its own: the STM32L4R5's MAC rates over `factor`, the overhead from the nRF52840."""
    us, time_factor, ovh_src = _mcu_overhead_entry(fam, name) if name != "nrf52840" else (
        fam.nrf_ovh_us, None, f"fitted: {fam.ovh_note}")
    values = {"fitted": False, "basis": "transferred", "fit_source": "", "fit_threads": 1,
              "transferred_from": "stm32l4r5", "transfer_factor": factor}
    if time_factor is not None:
        values.update({"overhead_from": "nrf52840", "overhead_factor": time_factor})
    values.update({"macs_per_cycle": transfer_macs_per_cycle(l4, factor), "overhead_us_per_op": us,
                   "fixed_overhead_us": 0.0, "notes": basis_note})
    mac_src = (f"assumption: transferred from stm32l4r5 (fitted: {fam.sources_m4}): macs_per_cycle / transfer_factor "
               f"{factor:.4g} ({why})")
    sources = {"fit_threads": "TFLM runs one invoke on one core", "transfer_factor": mac_src,
               "macs_per_cycle": mac_src, "overhead_us_per_op": ovh_src,
               "fixed_overhead_us": "assumption: 0 - per-invoke time beyond MACs is priced as per-op overhead"}
    if time_factor is not None:
        sources["overhead_factor"] = ovh_src
    return values, sources


def _mcu_transferred_tables(fam: _TflmFamily, l4: dict) -> dict[str, tuple[dict, dict]]:
    m7, m0 = fam.factors["m7_vs_m4"], fam.factors["m0p_vs_m4"]
    return {
        "nrf52840": _mcu_transferred_table(
            fam, l4, "nrf52840", 1.0, "same Cortex-M4F core and TFLM + CMSIS-NN; cycles per MAC assumed equal, so "
            "the time scales with the clock (64 vs 120 MHz); flash wait states and caches differ and are not modelled",
            "MAC rates transferred from stm32l4r5 (same core); per-op overhead fitted to the nRF52840 DK hello_world "
            "row of calibration_extra.csv"),
        "stm32h7a3": _mcu_transferred_table(
            fam, l4, "stm32h7a3", m7["factor"], "Cortex-M7 vs Cortex-M4 cycles per inference with the same runtime on "
            f"the NUCLEO-H7A3ZI(-Q) and NUCLEO-L4R5ZI, geometric mean of {_line_list(m7)} in {EXTRA_REF} "
            "(MLPerf Tiny: Bosch HALE 1.0 and ST X-CUBE-AI 7.1); assumed to hold for TFLM + CMSIS-NN",
            "MAC rates transferred from stm32l4r5 with the published M7/M4 cycle ratio; per-op overhead from nrf52840"),
        "rp2040": _mcu_transferred_table(
            fam, l4, "rp2040", m0["factor"], "Cortex-M0+ (no DSP/SIMD) vs Cortex-M4 (DSP) cycles per inference with "
            f"the same runtime: STM32G0B1 vs STM32L4R5, geometric mean of {_line_list(m0)} in {EXTRA_REF} (MLPerf "
            "Tiny v1.1, Bosch HALE 1.0); the RP2040 runs TFLM reference kernels from XIP flash with a cache, "
            "which may be slower still",
            "MAC rates transferred from stm32l4r5 with the published M0+/M4 cycle ratio; per-op overhead from "
            "nrf52840"),
    }


def _esp32s3_table(fam: _TflmFamily, rows: list[dict]) -> tuple[dict, dict] | None:
    """ESP32-S3: one published row (person detection, ESP-NN) fits its int8 MAC rate; depthwise ratio transferred."""
    esp = [r for r in rows if r["profile"] == "esp32s3" and r["use"] == "fit"]
    if not esp:
        return None
    us_esp, tf_esp, src_esp = _mcu_overhead_entry(fam, "esp32s3")
    r, ratio = esp[0], fam.ratio
    mac_us = r["ms"] * 1000.0 - r["ops"] * us_esp
    cpm = mac_us * r["clock_mhz"] / (r["macs_base"] + ratio * r["macs_weighted"])
    return ({
        "fitted": True, "basis": "fitted+transferred",
        "fit_source": f"fit to {EXTRA_REF} line {r['line'].split()[-1]} ({r['label']}, {r['ms']:g} ms)",
        "fit_rows": [f"{r['line']}: {r['label']}"], "fit_threads": 1,
        "transferred_from": "stm32l4r5", "transfer_factor": 1.0,
        "overhead_from": "nrf52840", "overhead_factor": tf_esp,
        "macs_per_cycle": {"int8": 1.0 / cpm, "dwconv_int8": 1.0 / (cpm * ratio)},
        "overhead_us_per_op": us_esp, "fixed_overhead_us": 0.0,
        "notes": (f"one published row: cycles/MAC {cpm:.3g} fitted to it with the depthwise/conv ratio {ratio:.3g} "
                  "of the TFLM+CMSIS-NN family (transferred: ESP-NN's own ratio is not identifiable from one "
                  "model); per-op overhead from nrf52840"),
    }, {"macs_per_cycle.dwconv_int8": ("assumption: transferred from the TFLM+CMSIS-NN family fit (stm32l4r5, "
                                        f"ek_ra6m4): depthwise costs {ratio:.3g}x a conv MAC, assumed for ESP-NN; "
                                        "transfer_factor 1.0 applies to this ratio only"),
        "transfer_factor": "assumption: 1.0 - only the depthwise/conv ratio is transferred, not a MAC rate",
        "overhead_us_per_op": src_esp, "overhead_factor": src_esp})


# --- LiteRT/XNNPACK: MAC rates from the family fit; per-op and per-inference overhead from the host


@dataclass
class _HostOverhead:
    """The host's fitted overheads and, per device, the time factor that transfers them."""
    per_op_us: float
    fixed_us: float
    threads: int
    factors: dict  # device -> (time factor vs the host, why)


def _litert_overhead_factors(f: dict, clock: dict) -> dict[str, tuple[float, str]]:
    pi3, pi4, pi5 = f["sysbench_pi3"], f["sysbench_pi4"], f["sysbench_pi5"]
    single = "sysbench cpu single-thread time per event"
    a76 = f"the Raspberry Pi 5's (Cortex-A76) sysbench ratio ({_line_list(pi5)}) x {pi5['clock_mhz']:g}"
    return {
        "rpi4": (pi4["factor"], f"{single}, Raspberry Pi 4 vs this host: {_line_list(pi4)}"),
        "rpi3bplus": (pi3["factor"], f"{single}, Raspberry Pi 3+ vs this host: {_line_list(pi3)}"),
        "rpizero2w": (pi3["factor"] * pi3["clock_mhz"] / clock["rpizero2w"],
                      f"the Raspberry Pi 3+'s sysbench ratio ({_line_list(pi3)}) x {pi3['clock_mhz']:g}/"
                      f"{clock['rpizero2w']:g} MHz (same Cortex-A53 at a lower clock)"),
        "rpi5": (pi5["factor"], f"{single}, Raspberry Pi 5 vs this host: {_line_list(pi5)}"),
        "pixel4": (pi5["factor"] * pi5["clock_mhz"] / clock["pixel4"], f"{a76}/{clock['pixel4']:g} MHz"),
        "pixel3": (pi5["factor"] * pi5["clock_mhz"] / clock["pixel3"],
                   f"{a76}/{clock['pixel3']:g} MHz; the Cortex-A75 assumed as fast per clock as the A76"),
        "midrange_a76": (pi5["factor"] * pi5["clock_mhz"] / clock["midrange_a76"],
                         f"{a76}/{clock['midrange_a76']:g} MHz"),
    }


def _litert_overhead(host: _HostOverhead, name: str) -> tuple[float, float, float, str]:
    """(per-op µs, per-inference µs, time factor, [sources] text) of one LiteRT device, from the host's."""
    factor, why = host.factors[name]
    src = (f"assumption: transferred from host (fitted by timing: {host.per_op_us:.4g} us per op, {host.fixed_us:.4g} "
           f"us per inference at {host.threads} threads) x overhead_factor {factor:.4g} ({why}); a scalar integer "
           "benchmark stands in for the interpreter's dispatch code, and the host was timed at its own thread count")
    return (transfer_overhead_us(host.per_op_us, factor), transfer_overhead_us(host.fixed_us, factor), factor, src)


def _litert_fitted_tables(rows: list[dict], host: _HostOverhead) -> dict[str, tuple[dict, dict]]:
    lit = _family_rows(rows, "litert")
    params, shared, _ = fit_family(lit)
    ratio = shared["ratio"]
    lines = "; ".join(f"{r['line']} ({r['label']}, {r['ms']:g} ms)" for r in lit)
    tables = {}
    for name, p in params.items():
        cpm = p["cycles_per_mac"]
        ovh, fixed, factor, src = _litert_overhead(host, name)
        tables[name] = ({
            "fitted": True, "basis": "fitted+transferred",
            "fit_source": ("fit to ../shared/calibration/published_latency.csv and edgesparse/calibration_extra.csv "
                           "rows " + lines),
            "fit_rows": [f"{r['line']}: {r['label']}" for r in lit if r["profile"] == name], "fit_threads": 4,
            "overhead_from": "host", "overhead_factor": factor,
            "macs_per_cycle": {"float32": 1.0 / cpm, "int8": 1.0 / (cpm * ratio)},
            "overhead_us_per_op": ovh, "fixed_overhead_us": fixed,
            "notes": (f"{len(params) + 1} parameters over {len(lit)} LiteRT/XNNPACK rows: cycles/MAC per device "
                      f"(float32 {cpm:.3g} here, all threads together) and an int8/float32 cost ratio {ratio:.3g} "
                      "shared by the family; the rows are XNNPACK/benchmark_model timings of large models, so per-op "
                      "and per-inference overhead are transferred from the host; elementwise ops not priced; "
                      "leave-one-out errors in docs/estimation.md"),
        }, {"overhead_us_per_op": src, "fixed_overhead_us": src, "overhead_factor": src})
    return tables


def _litert_transferred_table(tables: dict, host: _HostOverhead, name: str, source: str, factor: float, why: str,
                              threads: int) -> tuple[dict, dict]:
    """A LiteRT device without rows of its own: `source`'s MAC rates over `factor`, the overhead from the host."""
    ovh, fixed, ofactor, src = _litert_overhead(host, name)
    mac_src = (f"assumption: transferred from {source} (fitted: {tables[source][0]['fit_source'][:120]}...): "
               f"macs_per_cycle / transfer_factor {factor:.4g} ({why})")
    return ({
        "fitted": False, "basis": "transferred", "fit_source": "", "fit_threads": threads,
        "transferred_from": source, "transfer_factor": factor, "overhead_from": "host", "overhead_factor": ofactor,
        "macs_per_cycle": transfer_macs_per_cycle(tables[source][0]["macs_per_cycle"], factor),
        "overhead_us_per_op": ovh, "fixed_overhead_us": fixed,
        "notes": f"MAC rates transferred from {source}; per-op and per-inference overhead from host",
    }, {"fit_threads": f"the profile's [runtime] threads ({threads})", "transfer_factor": mac_src,
        "macs_per_cycle": mac_src, "overhead_us_per_op": src, "fixed_overhead_us": src, "overhead_factor": src})


def _litert_transferred_tables(tables: dict, host: _HostOverhead, f: dict, clock: dict) -> dict[str, tuple[dict, dict]]:
    out = {"rpizero2w": _litert_transferred_table(
        tables, host, "rpizero2w", "rpi3bplus", 1.0, "same 4x Cortex-A53 and XNNPACK (RP3A0 = BCM2710A1, the Pi 3's "
        "SoC family): cycles per MAC assumed equal, time scales with the clock (1000 vs 1400 MHz); 512 MB vs 1 GB "
        "LPDDR2", 4)}
    p4_clock_sum = 2840 + 3 * 2420  # Pixel 4: 1x A76 @ 2.84 + 3x A76 @ 2.42 GHz (profile core_layout), 4 threads
    # The Pixel 4's rates are per cycle of its 2840 MHz prime core while its 4 threads run on cores summing
    # p4_clock_sum MHz. With equal work per core-cycle, the target's throughput is the Pixel 4's x (its cores'
    # summed MHz / p4_clock_sum) x (per-thread efficiency ratio), so its per-cycle rate (own clock) is the Pixel
    # 4's / factor with factor = clock_target x p4_clock_sum / (2840 x summed_target x efficiency).
    rpi5_factor = clock["rpi5"] * p4_clock_sum / (clock["pixel4"] * 4 * clock["rpi5"])
    out["rpi5"] = _litert_transferred_table(
        tables, host, "rpi5", "pixel4", rpi5_factor, "same Cortex-A76 and XNNPACK at 4 threads: equal work per "
        "core-cycle assumed; the Pixel 4's rates are per cycle of its 2840 MHz prime core while its 4 threads run on "
        f"cores summing {p4_clock_sum} MHz, the Pi 5's on 4x {clock['rpi5']:g} MHz, so the factor is "
        f"{p4_clock_sum} / (4 x 2840); memory systems differ (not modelled)", 4)
    s2, s2_lines = f["xnnpack_speedup"][2]
    s4, s4_lines = f["xnnpack_speedup"][4]
    efficiency = (s2 / 2) / (s4 / 4)  # per-thread speed at 2 threads relative to 4 threads
    mid_factor = clock["midrange_a76"] * p4_clock_sum / (clock["pixel4"] * 2 * clock["midrange_a76"] * efficiency)
    out["midrange_a76"] = _litert_transferred_table(
        tables, host, "midrange_a76", "pixel4", mid_factor, "same Cortex-A76 and XNNPACK: 2 threads on 2x "
        f"{clock['midrange_a76']:g} MHz vs the Pixel 4's 4 threads on cores summing {p4_clock_sum} MHz, with "
        f"XNNPACK's per-thread efficiency at 2 vs 4 threads ({s2:.3g}x vs {s4:.3g}x speed-up over one thread, "
        f"MobileNet v1 on Pixel phones, {EXTRA_REF} lines {', '.join(s2_lines + s4_lines)}); equal work per "
        "core-cycle assumed", 2)
    return out


# --------------------------------------------------------------------------- held-out rows, predictions


def held_out_rows(rows: list[dict], tables: dict) -> list[dict]:
    """Published rows not used to fit ('test' rows: a second model), predicted with the final tables."""
    out = []
    for r in rows:
        if r["use"] != "test":
            continue
        values = tables[r["profile"]][0]
        mpc = values["macs_per_cycle"]
        key_base, key_w = ("float32", "int8")
        us = (r["macs_base"] / mpc[key_base] + r["macs_weighted"] / mpc[key_w]) / r["clock_mhz"]
        us += r["ops"] * values.get("overhead_us_per_op", 0.0) + values.get("fixed_overhead_us", 0.0)
        out.append({**r, "predicted_ms": us / 1000.0, "error": us / 1000.0 / r["ms"] - 1.0})
    return out


def profile_predictions() -> tuple[list[dict], list[dict], dict]:
    """The latency basis of every shipped profile and its predicted latency for the digits demo and MLPerf KWS."""
    digits = resolve_model("bench:digits_int8")
    kws = MLPERF / "keyword_spotting" / "kws_ref_model.tflite"
    dg, kg = load_graph(digits), load_graph(kws)
    basis_rows, pred_rows = [], []
    for name in available_profiles():
        prof = load_profile(name)
        lat = prof.table("latency")
        d = check_model(digits, prof)
        k = check_model(kws, prof)
        basis = lat.get("basis") or ("fitted" if lat.get("fitted") else "assumption")
        basis_rows.append({"profile": name, "basis": basis,
                           "fit_rows": lat.get("fit_rows") or [], "transferred_from": lat.get("transferred_from", ""),
                           "transfer_factor": lat.get("transfer_factor"), "overhead_from": lat.get("overhead_from", ""),
                           "overhead_factor": lat.get("overhead_factor")})
        pred_rows.append({"profile": name, "digits_ms": d.latency_ms, "digits_basis": d.latency.basis,
                          "kws_ms": k.latency_ms, "kws_basis": k.latency.basis,
                          "digits_overhead_share": sum(
                              c.share for c in d.latency.coefficients
                              if c.coefficient in ("overhead_us_per_op", "fixed_overhead_us"))})
    meta = {"digits_ops": len(dg.ops), "digits_macs": dg.total_macs, "kws_ops": len(kg.ops), "kws_macs": kg.total_macs}
    return basis_rows, pred_rows, meta

