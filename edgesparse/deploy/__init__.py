"""Deployment bundles for a build, per target, and pushing them to a device over ssh.

The modules: `source` (the checked build and its test input), `layout` (the
Bundle record and demo templates), `rpi`, `android` and `mcu` (each target's
files; `mcu_ethos_u` adds the Arm Ethos-U NPU operator, driver set-up and notes
to the mcu project for a Vela-compiled model), `bundle` (target names, --out, atomic writing, bundle.json), `ssh`
(push and run on a device), `command` (`deploy()`, what the CLI calls).
Import the public names from here: `from edgesparse.deploy import deploy, DeployOptions`.
Raises `DeployError` and the errors of edgesparse.errors it names (see each module); all exit 2.
"""

from __future__ import annotations

from edgesparse.deploy.bundle import (
    BUNDLE_KIND,
    MANIFEST,
    TARGETS,
    check_bundle_out,
    default_out,
    is_bundle_dir,
    make_bundle,
    normalise_target,
    resolve_target,
)
from edgesparse.deploy.command import DeployOptions, DeployResult, deploy
from edgesparse.deploy.layout import Bundle, demos_dir, device_dir_name
from edgesparse.deploy.mcu import (
    ARENA_MARGIN_FRACTION,
    ARENA_MARGIN_MIN_BYTES,
    CORE_FLAGS,
    McuCompile,
    arena_size,
    compile_model_data,
    quantize_input,
    resolver_method,
)
from edgesparse.deploy.rpi import REQUIREMENTS, pick_runtime, tflite_runtime_hazards
from edgesparse.deploy.source import BuildInfo, DeployError, Sample, load_build, resolve_sample
from edgesparse.deploy.ssh import Remote, RemoteRun, parse_host, push_and_run, ssh_options

__all__ = [
    "ARENA_MARGIN_FRACTION",
    "ARENA_MARGIN_MIN_BYTES",
    "BUNDLE_KIND",
    "CORE_FLAGS",
    "MANIFEST",
    "REQUIREMENTS",
    "TARGETS",
    "BuildInfo",
    "Bundle",
    "DeployError",
    "DeployOptions",
    "DeployResult",
    "McuCompile",
    "Remote",
    "RemoteRun",
    "Sample",
    "arena_size",
    "check_bundle_out",
    "compile_model_data",
    "default_out",
    "demos_dir",
    "deploy",
    "device_dir_name",
    "is_bundle_dir",
    "load_build",
    "make_bundle",
    "normalise_target",
    "parse_host",
    "pick_runtime",
    "push_and_run",
    "quantize_input",
    "resolve_sample",
    "resolve_target",
    "resolver_method",
    "ssh_options",
    "tflite_runtime_hazards",
]
