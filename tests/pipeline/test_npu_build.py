"""`edgesparse build` for an Arm Ethos-U profile end to end: real TFMOT, converter, TFLite Micro and Vela.

One digits build (1 epoch, sparsity 0.8) is shared by the module; the refusals run before any work and cost
no training.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support.npu import TEST_NPU, env_without_vela

from edgesparse.builddir import BASELINES, interpreter_model_name, load_report, read_interpreter_model
from edgesparse.cli.commands import main
from edgesparse.errors import VerificationError
from edgesparse.profiles.profile import available_profiles, load_profile
from edgesparse.profiles.writer import set_sources, set_table
from edgesparse.runtime.verify import run_tflite
from edgesparse.tflite.ethos_u import describe_ethos_u, is_ethos_u_model
from edgesparse.tflite.graph import load_graph

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHIPPED = "corstone_300"


def _write_profile(path: Path) -> Path:
    """An Ethos-U55-128 profile: nrf52840's budgets and power with a Cortex-M55 and tests/support/npu.py's NPU."""
    import tomllib

    text = (REPO / "device_profiles" / "nrf52840.toml").read_text()
    raw = tomllib.loads(text)
    text = text.replace('name = "nrf52840"', 'name = "test_ethos_u55"')
    text = set_table(text, "runtime", {**raw["runtime"], "name": "tflm+ethos-u"})
    text = set_table(text, "device", {**raw["device"], "cpu": "Cortex-M55", "ram_bytes": 1 << 20,
                                      "flash_bytes": 4 << 20})
    npu = {"accelerator": TEST_NPU.accelerator, "clock_mhz": TEST_NPU.clock_mhz, "memory_mode": TEST_NPU.memory_mode,
           "axi0": TEST_NPU.axi0, "axi1": TEST_NPU.axi1, "axi0_memory": dict(TEST_NPU.axi0_memory),
           "axi1_memory": dict(TEST_NPU.axi1_memory), "sram_bytes": TEST_NPU.sram_bytes,
           "active_mw": TEST_NPU.active_mw}
    text = set_table(text, "npu", npu)
    text = set_sources(text, "npu", {key: "assumption: tests/support/npu.py TEST_NPU, test only" for key in npu})
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def npu_profile_arg(tmp_path_factory) -> str:
    """The shipped Corstone-300 profile when it is there, else an Ethos-U profile written for the test."""
    if SHIPPED in available_profiles():
        return SHIPPED
    return str(_write_profile(tmp_path_factory.mktemp("profile") / "test_ethos_u55.toml"))


@pytest.fixture(scope="module")
def npu_build(npu_profile_arg, tmp_path_factory):
    out = tmp_path_factory.mktemp("npu") / "digits-ethos-u"
    result = CliRunner().invoke(main, ["build", "--profile", npu_profile_arg, "--epochs", "1",
                                       "--max-accuracy-drop", "100", "--out", str(out)], catch_exceptions=False)
    return result, out


def test_the_artifact_is_velas_compilation_and_the_verified_int8_is_kept_beside_it(npu_build):
    result, out = npu_build
    assert result.exit_code == 0, result.output
    report = load_report(out)
    artifact = (out / "model.tflite").read_bytes()
    graph = load_graph(artifact)
    assert is_ethos_u_model(graph) and describe_ethos_u(graph).npu_ops >= 1
    assert report["files"]["model.tflite"]["sha256"] == hashlib.sha256(artifact).hexdigest()
    assert report["options"]["mcu_compression"] == "off" and report["compression"] is None
    # The plain int8 model is the file TFLM verified, recorded with its sha256, and it is what Vela compiled.
    assert interpreter_model_name(report) == BASELINES["pruned_int8"]
    _, plain = read_interpreter_model(out, report)
    assert not is_ethos_u_model(load_graph(plain))
    verification = report["verification"]
    assert "TFLite Micro" in verification["interpreter"] and verification["npu_command_stream_verified"] is False
    assert "not verified" in verification["not_verified"] and BASELINES["pruned_int8"] in verification["scope"]
    assert report["accuracy"]["agreement_pruned_keras_vs_tflite"] >= 0.9
    x = np.load(out / "sample.npz")["x"][:4]
    assert run_tflite(plain, x, runtime="tflm").outputs.shape == (4, 10)
    with pytest.raises(VerificationError, match="Ethos-U"):
        run_tflite(artifact, x, runtime="tflm")
    said = " ".join(result.output.split())
    assert "NPU command stream" in said
    assert "encoded weights (Vela)" in said and "NPU not verified" in said   # the summary's NPU rows (render.npu_rows)


def test_the_npu_section_shows_velas_encoding_and_cycles_dense_against_pruned(npu_build):
    _, out = npu_build
    report = json.loads((out / "report.json").read_text())
    assert report["sparsity"]["overall"] >= 0.79
    policy = {p["name"]: p for p in report["pruning"]["policy"]}
    assert policy["fc1"]["prune"] and "Vela" in policy["fc1"]["reason"]
    npu, dense = report["npu"], report["npu"]["dense"]   # the artifact's figures, and the dense int8 baseline's
    assert npu["encoded_weight_bytes"] < npu["raw_weight_bytes"]
    assert npu["encoded_weight_bytes"] < dense["encoded_weight_bytes"] / 2
    assert npu["raw_weight_bytes"] == dense["raw_weight_bytes"]   # same tensors, only zeros differ
    assert 0 < npu["total_cycles"] <= dense["total_cycles"]
    assert npu["dense_over_artifact"]["encoded_weight_bytes"] > 2
    assert npu["verified"] and BASELINES["pruned_int8"] in npu["verified"]
    assert report["check"]["npu"] is not None and report["check"]["latency_ms"] > 0
    profile = load_profile(report["profile"]["path"])
    assert npu["accelerator"] == profile.npu.accelerator


def test_mcu_compression_and_float_models_are_refused_before_any_work(npu_profile_arg, tmp_path):
    runner = CliRunner()
    for args, words in ((["--mcu-compression", "lut"], "Vela compresses the weights itself"),
                        (["--mcu-compression", "auto"], "DECODE"),
                        (["--quantize", "float16"], "int8")):
        out = tmp_path / args[-1]
        result = runner.invoke(main, ["build", "--profile", npu_profile_arg, "--out", str(out), *args])
        assert result.exit_code == 2, result.output
        assert words in " ".join(result.output.split()) and not out.exists()
        assert "Loading" not in result.output


_WITHOUT_VELA = """
import sys
from edgesparse.cli.commands import main
sys.argv = ["edgesparse", "build", "--profile", {profile!r}, "--out", {out!r}]
main()
"""


def test_an_ethos_u_build_without_vela_exits_2_naming_the_extra_before_training(npu_profile_arg, tmp_path):
    """A child process where `ethosu` fails to import, as when edgesparse[npu] is not installed."""
    env = env_without_vela(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _WITHOUT_VELA.format(profile=npu_profile_arg, out=str(out))],
                          env=env, capture_output=True, text=True, timeout=180)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said
    assert "edgesparse[npu]" in said and "Loading" not in said and not out.exists()


def test_check_and_battery_on_the_ethos_u_build(npu_build, npu_profile_arg):
    """`check` on the compiled file adds the build's NPU figures from report.json; `battery` prices the plain int8
    model Vela compiled against the dense baseline, both through Vela's estimate."""
    _, out = npu_build
    runner = CliRunner()
    checked = runner.invoke(main, ["check", str(out / "model.tflite"), "--profile", npu_profile_arg])
    text = " ".join(checked.output.split())
    assert checked.exit_code in (0, 1), checked.output
    assert "the build's NPU figures" in text and "encoded weights (Vela)" in text
    battery = runner.invoke(main, ["battery", str(out), "--json"])
    assert battery.exit_code == 0, battery.output
    rows = {row["variant"]: row for row in json.loads(battery.output)[0]["variants"]}
    assert rows["pruned artifact"]["latency_ms"] < rows["dense int8"]["latency_ms"]
