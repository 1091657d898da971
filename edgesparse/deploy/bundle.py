"""A deploy bundle: which target, where it goes, writing it atomically, and its manifest (bundle.json).

Why a bundle: what runs on the device must be exactly what was verified here,
and nothing more. A bundle is a self-contained directory with the model,
labels, the on-device code, a test input and the result that code gives for
it here. It is staged beside --out and renamed into place when complete;
`--force` replaces only an earlier bundle (one with our bundle.json), never a
user's files. The targets' own files are written by `rpi`, `android` and `mcu`.

Raises `DeployError` (unknown target or runtime), `OutputExistsError` and
`OutputLocationError` (from edgesparse.fsutil), and what `load_build`,
`resolve_sample` and the target writers raise; all exit 2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgesparse import __version__
from edgesparse._types import Progress, no_progress
from edgesparse.deploy.android import write_android
from edgesparse.deploy.layout import Bundle, write_json
from edgesparse.deploy.mcu import write_mcu
from edgesparse.deploy.rpi import REQUIREMENTS, pick_runtime, write_rpi
from edgesparse.deploy.source import BuildInfo, DeployError, Sample, load_build, resolve_sample
from edgesparse.deploy.ssh import Remote
from edgesparse.fsutil import check_output_free, staged_output_dir
from edgesparse.profiles import available_profiles, load_profile

__all__ = [
    "BUNDLE_KIND",
    "MANIFEST",
    "TARGETS",
    "check_bundle_out",
    "default_out",
    "is_bundle_dir",
    "make_bundle",
    "normalise_target",
    "resolve_target",
]

TARGETS = ("rpi", "android", "mcu")
_TARGET_ALIASES = {"pi": "rpi", "raspberrypi": "rpi", "rpi3": "rpi", "rpi4": "rpi", "rpi5": "rpi",
                   "phone": "android", "microcontroller": "mcu", "tflm": "mcu"}
_TARGET_FOR_CLASS = {"sbc": "rpi", "phone": "android", "mcu": "mcu"}

# Every bundle's manifest; its presence (naming our tool) is how --force recognises an earlier bundle.
MANIFEST = "bundle.json"
BUNDLE_KIND = "edgesparse deploy bundle"


def normalise_target(target: str) -> str:
    """'rpi'|'android'|'mcu', an alias ('rpi4', 'phone'), or a device profile name ('nrf52840')."""
    return resolve_target(target)[0]


def resolve_target(target: str) -> tuple[str, str | None]:
    """(target, profile name or None): a profile name picks its class's target and itself as the profile."""
    name = _TARGET_ALIASES.get(target.lower(), target.lower())
    if name in TARGETS:
        return name, None
    if target in available_profiles():
        device_class = load_profile(target).device_class
        if device_class in _TARGET_FOR_CLASS:
            return _TARGET_FOR_CLASS[device_class], target
    raise DeployError("Unknown deploy target", where="--target",
                      expected=" | ".join(TARGETS) + ", or a phone/sbc/mcu profile name",
                      received=repr(target))


def default_out(build_dir: Path, target: str) -> Path:
    """<BUILD_DIR>-<target> beside the build."""
    build_dir = Path(build_dir)
    return build_dir.parent / f"{build_dir.resolve().name}-{target}"


def is_bundle_dir(path: Path) -> bool:
    """An earlier edgesparse deploy bundle: a directory whose bundle.json names our tool and a target.

    `--force` may replace only such a directory; anything else at --out is the user's.
    """
    manifest = Path(path) / MANIFEST
    if not (Path(path).is_dir() and manifest.is_file()):
        return False
    try:
        document = json.loads(manifest.read_text("utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return (isinstance(document, dict) and isinstance(document.get("tool"), dict)
            and document["tool"].get("name") == "edgesparse" and document.get("target") in TARGETS)


def check_bundle_out(out: Path, force: bool) -> None:
    """Fail before any work unless `out` is new, empty, or (with --force) an earlier bundle."""
    check_output_free(out, force, ours=is_bundle_dir, kind=BUNDLE_KIND)


def make_bundle(build_dir: Path, target: str, out: Path | None = None, *, force: bool = False,
                sample: Path | None = None, labels: Path | None = None, profile: str | None = None,
                runtime: str = "auto", remote: Remote | None = None,
                progress: Progress = no_progress) -> Bundle:
    """Write the bundle for `target` atomically; refuse to replace anything but an earlier bundle (with `force`)."""
    target, target_profile = resolve_target(target)
    profile = profile or target_profile
    info = load_build(build_dir, force=force, labels=labels)
    out = Path(out) if out else default_out(info.path, target)
    if runtime not in REQUIREMENTS:
        raise DeployError("Unknown runtime for the bundle", where="--runtime",
                          expected=" | ".join(REQUIREMENTS), received=repr(runtime))
    check_bundle_out(out, force)
    runtime_notes: list[str] = []
    if target == "rpi":
        runtime, runtime_notes = pick_runtime(info.model_bytes, runtime, force=force)
    progress("stage", {"name": "sample", "description": "Choosing the test input"})
    smp = resolve_sample(info, sample)
    with staged_output_dir(out, force, ours=is_bundle_dir, kind=BUNDLE_KIND) as staging:
        progress("stage", {"name": "bundle", "description": f"Writing the {target} bundle"})
        if target == "rpi":
            bundle = write_rpi(staging, info, smp, runtime=runtime, remote=remote)
            bundle.notes += runtime_notes
        elif target == "android":
            bundle = write_android(staging, info, smp)
        else:
            bundle = write_mcu(staging, info, smp, profile=profile, progress=progress)
        bundle.files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        write_json(staging / MANIFEST, _manifest(bundle, info, smp))
    bundle.path = out
    return bundle


def _manifest(bundle: Bundle, info: BuildInfo, smp: Sample) -> dict[str, Any]:
    """bundle.json: what was bundled from which build, the test input and what it gives here."""
    return {"tool": {"name": "edgesparse", "version": __version__}, "target": bundle.target, "kind": bundle.kind,
            "build_dir": str(info.path.resolve()), "model": info.name,
            "model_sha256": hashlib.sha256(info.model_bytes).hexdigest(),
            "profile": (info.report.get("profile") or {}).get("name"),
            "test_input": bundle.test_input, "test_input_source": smp.source, "test_input_label": smp.label,
            "expected": bundle.expected, "arena_bytes": bundle.arena_bytes,
            "mcu_compile": asdict(bundle.mcu) if bundle.mcu else None, "notes": bundle.notes,
            "files": bundle.files}
