"""Shared test set-up. TensorFlow must see TF_USE_LEGACY_KERAS=1 before it is imported."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
MLPERF_TINY = REPO.parent / "shared" / "mlperf_tiny"
CALIBRATION = REPO.parent / "shared" / "calibration"


@pytest.fixture(scope="session")
def mlperf_dir() -> Path:
    """The MLPerf Tiny reference models, read in place (never copied into the repo)."""
    assert MLPERF_TINY.is_dir(), f"expected ../shared/mlperf_tiny beside the repository at {MLPERF_TINY}"
    return MLPERF_TINY


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the demo-model cache per test session, never in the user's home."""
    monkeypatch.setenv("EDGESPARSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
