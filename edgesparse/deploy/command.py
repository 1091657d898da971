"""`edgesparse deploy` as a function: make the bundle, and with --host push it, run it there and compare.

Why a function apart from the CLI: the command's order matters and is tested
(every check that can fail fast runs before any bundle is written: the build,
--out, and with --host one ssh login), and the CLI only renders its result.

Raises `DeployError`, `OutputExistsError`, `OutputLocationError`, `ModelError`
and `DataError` (exit 2); the caller compares `RemoteRun.matches_local`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgesparse._types import Progress, no_progress
from edgesparse.deploy.bundle import check_bundle_out, default_out, make_bundle, resolve_target
from edgesparse.deploy.layout import Bundle, device_dir_name
from edgesparse.deploy.source import DeployError, load_build
from edgesparse.deploy.ssh import KNOWN_HOSTS, Remote, RemoteRun, parse_host, probe, push_and_run, ssh_options

__all__ = ["DeployOptions", "DeployResult", "deploy"]


@dataclass
class DeployOptions:
    """Every knob of `edgesparse deploy`."""

    build_dir: Path
    target: str = "rpi"
    out: Path | None = None
    force: bool = False
    host: str | None = None
    port: int = 22
    identity: Path | None = None
    sample: Path | None = None
    labels: Path | None = None
    profile: str | None = None          # mcu: the TFLM profile that picks the core and sizes the arena
    runtime: str = "auto"               # rpi requirements: auto | tflite-runtime | ai-edge-litert
    remote_python: str = "python3"
    remote_venv: str | None = None      # default: <remote path>/venv; an existing venv is reused
    fresh_venv: bool = False
    skip_install: bool = False
    connect_timeout: int = 10
    run_timeout: int = 900


@dataclass
class DeployResult:
    """The bundle written, and with --host what the device answered."""

    bundle: Bundle
    remote: RemoteRun | None = None


def _pin_host_key(options: DeployOptions, remote: Remote, progress: Progress) -> Path:
    """Log in once before any work (an unreachable host or a refused key fails in seconds); the key's file."""
    pinned = Path(tempfile.mkdtemp(prefix="edgesparse-ssh-")) / KNOWN_HOSTS
    progress("stage", {"name": "connect", "description": f"Checking ssh access to {remote.destination}"})
    try:
        probe(remote, ssh_options(pinned, options.port, options.identity, options.connect_timeout),
              port=options.port, identity=options.identity, connect_timeout=options.connect_timeout)
    except BaseException:
        shutil.rmtree(pinned.parent, ignore_errors=True)
        raise
    return pinned


def deploy(options: DeployOptions, progress: Progress = no_progress) -> DeployResult:
    """Make the bundle, and with --host push it, run it there and compare with the local result."""
    target, target_profile = resolve_target(options.target)
    if options.host and target != "rpi":
        raise DeployError("--host deploys only the rpi target", where="--target", expected="rpi",
                          received=target, fix="Drop --host: the mcu and android bundles are built here only")
    remote = None
    pinned = None
    out = Path(options.out) if options.out else default_out(Path(options.build_dir), target)
    if options.host:
        info = load_build(options.build_dir, force=options.force, labels=options.labels)
        remote = parse_host(options.host, device_dir_name(info))
        check_bundle_out(out, options.force)
        pinned = _pin_host_key(options, remote, progress)
    try:
        bundle = make_bundle(options.build_dir, target, out, force=options.force, sample=options.sample,
                             labels=options.labels, profile=options.profile or target_profile,
                             runtime=options.runtime, remote=remote, progress=progress)
        if pinned is not None and pinned.is_file():
            shutil.copyfile(pinned, bundle.path / KNOWN_HOSTS)
    finally:
        if pinned is not None:
            shutil.rmtree(pinned.parent, ignore_errors=True)
    result = DeployResult(bundle=bundle)
    if remote is not None:
        result.remote = push_and_run(bundle, remote, port=options.port, identity=options.identity,
                                     remote_python=options.remote_python, remote_venv=options.remote_venv,
                                     fresh_venv=options.fresh_venv, skip_install=options.skip_install,
                                     connect_timeout=options.connect_timeout, run_timeout=options.run_timeout,
                                     progress=progress)
    return result
