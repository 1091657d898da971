"""Sweep families with Ethos-U profiles: Vela compiles per accelerator configuration, so each Ethos-U profile is
built on its own; DECODE options go to plain TFLM families only, --cluster to TFLM and Ethos-U ones."""

from __future__ import annotations

import pytest

from edgesparse.errors import DataError
from edgesparse.pipeline.build import BuildOptions
from edgesparse.pipeline.sweep_families import check_family_options, families, family_options
from edgesparse.profiles import load_profile


def _families(*names: str):
    return families([load_profile(n) for n in names])


def test_each_ethos_u_profile_is_its_own_family_and_keeps_tflm_rules():
    fams = _families("nrf52840", "alif_e7_he", "himax_we2", "stm32l4r5")
    assert [[p.name for p in f.profiles] for f in fams] == [["nrf52840", "stm32l4r5"], ["alif_e7_he"], ["himax_we2"]]
    assert all(f.runtime == "tflm" for f in fams)


def test_decode_goes_to_plain_tflm_families_and_clustering_to_both():
    plain, npu = _families("nrf52840", "alif_e7_he")
    base = BuildOptions(mcu_compression="lut", cluster=16)
    assert (family_options(base, plain).mcu_compression, family_options(base, plain).cluster) == ("lut", 16)
    assert (family_options(base, npu).mcu_compression, family_options(base, npu).cluster) == (None, 16)
    check_family_options(base, [plain, npu])   # a mixed sweep: each family takes what applies to it


def test_decode_without_a_plain_tflm_family_is_refused_before_any_work():
    with pytest.raises(DataError, match="--mcu-compression applies only to TFLite Micro profiles without an NPU"):
        check_family_options(BuildOptions(mcu_compression="lut"), _families("alif_e7_he"))
    check_family_options(BuildOptions(cluster=16), _families("alif_e7_he"))
    with pytest.raises(DataError, match="--cluster applies only"):
        check_family_options(BuildOptions(cluster=16), _families("rpi4"))
