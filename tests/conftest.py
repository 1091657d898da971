"""Shared fixtures and markers. TensorFlow must see TF_USE_LEGACY_KERAS=1 before it is imported.

Helpers that test modules import (build directories, tiny models, the Chromium client) live in
tests/support/; this file holds only fixtures and the marker rules.

Markers (registered in pyproject.toml, --strict-markers): `tensorflow` (needs TensorFlow: set by the
module, or by using a fixture that builds models), `mlperf` (reads ../shared/mlperf_tiny; skipped with a
reason when it is absent), `network` (starts a local service on 127.0.0.1), `browser` (headless
Chromium), `slow`. `make test` runs them all.
"""

import os
from pathlib import Path

import pytest
from support import MLPERF_TINY
from support.builds import DIGITS_LABELS, KWS_LABELS, build_tiny_models, kws_wav_bytes, make_build_dir

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What makes a test need TensorFlow, a local network service or a browser: the fixtures it uses, or its
# module (every test of tests/pipeline/, and modules whose fixtures build models with tf_keras).
_TENSORFLOW_FIXTURES = {"tiny_models", "kws_build", "digits_build"}
_TENSORFLOW_MODULES = {"test_data_folders", "test_verify", "test_measure", "test_edit", "test_graph",
                       "test_estimate", "test_physical_values", "test_demo_apps", "test_deploy", "test_mcu_project"}
_NETWORK_FIXTURES = {"sshd"}
_BROWSER_FIXTURES = {"chromium"}


def pytest_collection_modifyitems(items):
    """Mark tests by what they use, so `-m "not tensorflow"` or `-m "not mlperf"` select reliably."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        path = Path(str(item.fspath))
        if "mlperf_dir" in names:
            item.add_marker(pytest.mark.mlperf)
        if names & _TENSORFLOW_FIXTURES or path.parent.name == "pipeline" or path.stem in _TENSORFLOW_MODULES:
            item.add_marker(pytest.mark.tensorflow)
        if names & _NETWORK_FIXTURES:
            item.add_marker(pytest.mark.network)
        if names & _BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless Chromium binary; the test is skipped with a reason where it is not installed."""
    from support.chromium import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make system-deps)")
    return CHROMIUM


@pytest.fixture(scope="session")
def mlperf_dir() -> Path:
    """The MLPerf Tiny reference models, read in place (never copied into the repo)."""
    if not MLPERF_TINY.is_dir():
        pytest.skip(f"the MLPerf Tiny reference models are not beside the repository ({MLPERF_TINY})")
    return MLPERF_TINY


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the demo-model cache per test session, never in the user's home."""
    monkeypatch.setenv("EDGESPARSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The tiny int8 models of `build_tiny_models`, built once per session."""
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_models")


@pytest.fixture()
def kws_build(tmp_path, tiny_models):
    """(build directory, a test .wav): the keyword spotter built for nrf52840, with its sample and labels."""
    data, x, y = tiny_models["kws"]
    build = make_build_dir(tmp_path / "build" / "kws-nrf52840", data, name="kws", input_shape=(49, 10, 1),
                           num_classes=12, profile="nrf52840", runtime="tflm", device_class="mcu",
                           labels=KWS_LABELS, sample=(x, y))
    wav = tmp_path / "clip.wav"
    wav.write_bytes(kws_wav_bytes(2))
    return build, wav


@pytest.fixture()
def digits_build(tmp_path, tiny_models):
    """The digits-like CNN built for rpi4, with its sample and labels."""
    data, x, y = tiny_models["digits"]
    return make_build_dir(tmp_path / "build" / "digits-rpi4", data, name="digits", input_shape=(8, 8, 1),
                          num_classes=10, labels=DIGITS_LABELS, sample=(x, y))
