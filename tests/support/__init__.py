"""Helpers shared by test modules (fixtures live in tests/conftest.py): paths, build directories, models,
a headless Chromium client."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MLPERF_TINY = REPO.parent / "shared" / "mlperf_tiny"
CALIBRATION = REPO.parent / "shared" / "calibration"
