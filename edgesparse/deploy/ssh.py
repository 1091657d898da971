"""Pushing an rpi bundle to a device over ssh, running it there and comparing with here.

Why ssh and not an agent: a Raspberry Pi image has sshd, rsync and Python;
nothing else needs installing. Every ssh call is non-interactive (BatchMode),
pins the host key in the bundle's own known_hosts, and never echoes key
material, the environment or the command line in an error.

Raises `DeployError` (bad --host, unreachable host, refused key, a failed copy
or a failed app on the device), exit 2.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesparse._types import Progress, no_progress
from edgesparse.deploy.layout import Bundle
from edgesparse.deploy.source import DeployError

__all__ = [
    "KNOWN_HOSTS",
    "Remote",
    "RemoteRun",
    "parse_host",
    "probe",
    "push_and_run",
    "ssh_options",
]

_HOST_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<path>.*))?$")
# The host key is pinned in this file inside the bundle (it is never copied to the device).
KNOWN_HOSTS = "known_hosts"


@dataclass
class Remote:
    """USER@HOST:PATH of --host."""

    user: str
    host: str
    path: str

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


@dataclass
class RemoteRun:
    """What the app printed on the device for the bundle's test input, and whether it equals here."""

    destination: str
    path: str
    venv: str
    result: dict[str, Any]
    matches_local: bool
    transfer: str                        # "rsync" | "tar over ssh"


def parse_host(text: str, default_dir: str) -> Remote:
    """'user@host[:path]' -> Remote; the path defaults to ~/<default_dir> (relative to the login's home)."""
    match = _HOST_RE.match(text.strip())
    if not match:
        raise DeployError("Bad --host", where="--host", expected="USER@HOST[:PATH], e.g. pi@raspberrypi.local",
                          received=repr(text))
    path = (match.group("path") or "").rstrip("/") or default_dir
    if path in ("", "~", ".", "/") or path.startswith("-"):
        raise DeployError("The remote path must be a directory of its own", where="--host",
                          expected="USER@HOST:DIR, e.g. pi@raspberrypi.local:edgesparse-kws", received=repr(text))
    return Remote(user=match.group("user") or "", host=match.group("host").strip("[]"), path=path)


def ssh_options(known_hosts: Path, port: int, identity: Path | None, connect_timeout: int) -> list[str]:
    """Non-interactive ssh options: no password prompts, host key pinned in the bundle's own file."""
    options = ["-p", str(port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
               "-o", "StrictHostKeyChecking=accept-new",
               "-o", f"UserKnownHostsFile={Path(known_hosts).resolve()}",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
    if identity is not None:
        options += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    return options


def _remote_dir_expr(path: str) -> str:
    """A shell word for the remote directory: ~/x stays relative to the home directory."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    if path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path)


def _classify_ssh_failure(stderr: str, remote: Remote, port: int, identity: Path | None) -> DeployError:
    """One clear message for the common ways ssh fails; never echoes key material or the environment."""
    text = stderr.strip()
    lines = [line for line in text.splitlines() if line.strip() and "Warning: Permanently added" not in line]
    where = f"{remote.destination} port {port}"
    if "Permission denied" in text:
        return DeployError("The host refused the ssh key", where=where,
                           expected="a key listed in the login's ~/.ssh/authorized_keys",
                           received=lines[-1] if lines else "Permission denied",
                           fix=("Check --identity " + str(identity) if identity else "Pass --identity KEY") +
                               " and install its public half with ssh-copy-id")
    if any(s in text for s in ("Connection refused", "timed out", "No route to host", "Could not resolve",
                               "Network is unreachable", "Connection closed", "Name or service not known")):
        return DeployError("Cannot reach the host over ssh", where=where,
                           expected="an ssh server answering on that port",
                           received=lines[-1] if lines else "no answer",
                           fix="Check the host name, --port, and that sshd runs on the device")
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return DeployError("The host's key differs from the one pinned for this bundle", where=where,
                           received="host key verification failed",
                           fix=f"If the device was reinstalled, delete {KNOWN_HOSTS} in the bundle directory")
    return DeployError("ssh failed", where=where, received=lines[-1] if lines else "no message",
                       fix="Run ssh by hand with the same user, host, port and key to see why")


def _ssh(options: list[str], remote: Remote, command: str, *, timeout: int, port: int,
         identity: Path | None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    ssh = shutil.which("ssh")
    if ssh is None:
        raise DeployError("The ssh client is not installed", expected="ssh on PATH",
                          received="no ssh", fix="Install it (Debian: apt-get install openssh-client)")
    try:
        proc = subprocess.run([ssh, *options, remote.destination, command], input=stdin, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployError("The remote command did not finish in time", where=remote.destination,
                          received=f"still running after {timeout} s",
                          fix="Check the device; pip installs on a slow Pi can take minutes") from None
    if proc.returncode == 255:
        raise _classify_ssh_failure(proc.stderr.decode("utf-8", "replace"), remote, port, identity)
    return proc


def probe(remote: Remote, options: list[str], *, port: int, identity: Path | None,
          connect_timeout: int) -> None:
    """Log in once and create the remote directory: fails fast on an unreachable host or a refused key."""
    if identity is not None and not Path(identity).is_file():
        raise DeployError("The ssh key file does not exist", where="--identity", expected="a private key file",
                          received="no such file")
    proc = _ssh(options, remote, f"mkdir -p {_remote_dir_expr(remote.path)}", timeout=connect_timeout + 30,
                port=port, identity=identity)
    if proc.returncode != 0:
        raise DeployError("Cannot create the remote directory", where=f"{remote.destination}:{remote.path}",
                          received=(proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1],
                          fix="Pick a directory the login can write (USER@HOST:PATH)")


def push_and_run(bundle: Bundle, remote: Remote, *, port: int = 22, identity: Path | None = None,
                 remote_python: str = "python3", remote_venv: str | None = None, fresh_venv: bool = False,
                 skip_install: bool = False, connect_timeout: int = 10, run_timeout: int = 900,
                 progress: Progress = no_progress) -> RemoteRun:
    """Copy the bundle to the host, set up its venv, run the app on the test input, compare with here."""
    if bundle.target != "rpi":
        raise DeployError("--host deploys only the rpi target", where="--target", expected="rpi",
                          received=bundle.target,
                          fix="Flash the mcu project with your toolchain; add the android bundle to an app")
    options = ssh_options(bundle.path / KNOWN_HOSTS, port, identity, connect_timeout)
    progress("stage", {"name": "connect", "description": f"Connecting to {remote.destination}"})
    probe(remote, options, port=port, identity=identity, connect_timeout=connect_timeout)

    progress("stage", {"name": "push", "description": f"Copying the bundle to {remote.destination}"})
    transfer = _push(bundle.path, remote, options, port=port, identity=identity, timeout=run_timeout)

    venv = remote_venv or f"{remote.path}/venv"
    venv_expr = _remote_dir_expr(venv)
    steps = [f"cd {_remote_dir_expr(remote.path)}"]
    if fresh_venv:
        steps.append(f"rm -rf {venv_expr}")
    env = f"PYTHON={shlex.quote(remote_python)} EDGESPARSE_VENV={venv_expr}"
    if skip_install:
        env += " EDGESPARSE_SKIP_INSTALL=1"
    steps.append(f"{env} sh ./run.sh {shlex.quote(bundle.test_input or '')} --json")
    progress("stage", {"name": "run", "description": "Installing the runtime and running the app on the device"})
    result = _run_remote_app(options, remote, " && ".join(steps), timeout=run_timeout, port=port, identity=identity)
    expected = bundle.expected or {}
    matches = bool(expected) and result.get("label") == expected.get("label") and \
        result.get("scores") == expected.get("scores")
    return RemoteRun(destination=remote.destination, path=remote.path, venv=venv, result=result,
                     matches_local=matches, transfer=transfer)


def _run_remote_app(options: list[str], remote: Remote, command: str, *, timeout: int, port: int,
                    identity: Path | None) -> dict[str, Any]:
    """Run the app's command line on the host; its last JSON line is the result."""
    proc = _ssh(options, remote, command, timeout=timeout, port=port, identity=identity)
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    where = f"{remote.destination}:{remote.path}"
    if proc.returncode != 0:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
        raise DeployError("The app failed on the device", where=where, expected="exit status 0 and one JSON line",
                          received=" | ".join(tail) or f"exit {proc.returncode}",
                          fix="Log in and run ./run.sh by hand in that directory to see the full output")
    result = _last_json(stdout)
    if result is None:
        raise DeployError("The app printed no result on the device", where=where,
                          expected="one JSON line on stdout", received=(stdout.strip()[-200:] or "nothing"))
    return result


# Never copied to the device: the pinned host key stays here, a venv is made there.
_EXCLUDES = (KNOWN_HOSTS, "venv", "__pycache__")


def _push(bundle_dir: Path, remote: Remote, options: list[str], *, port: int, identity: Path | None,
          timeout: int) -> str:
    """rsync when both ends have it, else a tar stream over ssh."""
    rsync = shutil.which("rsync")
    if rsync is not None:
        has_rsync = _ssh(options, remote, "command -v rsync", timeout=60, port=port, identity=identity)
        if has_rsync.returncode == 0:
            _rsync(rsync, bundle_dir, remote, options, port=port, identity=identity, timeout=timeout)
            return "rsync"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(Path(bundle_dir).rglob("*")):
            rel = path.relative_to(bundle_dir)
            if path.is_file() and not any(part in _EXCLUDES for part in rel.parts):
                tar.add(path, arcname=str(rel))
    proc = _ssh(options, remote, f"tar -xzf - -C {_remote_dir_expr(remote.path)}", timeout=timeout, port=port,
                identity=identity, stdin=buffer.getvalue())
    if proc.returncode != 0:
        raise DeployError("Unpacking the bundle on the host failed", where=remote.destination,
                          received=(proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1])
    return "tar over ssh"


def _rsync(rsync: str, bundle_dir: Path, remote: Remote, options: list[str], *, port: int, identity: Path | None,
           timeout: int) -> None:
    """rsync -e "ssh <the same options>" into the remote directory (~/x is relative to the login's home)."""
    ssh_command = " ".join(shlex.quote(part) for part in ["ssh", *options])
    path = remote.path.removeprefix("~/")
    args = [rsync, "-rlptz", "--protect-args", "-e", ssh_command]
    for pattern in _EXCLUDES:
        args += ["--exclude", pattern]
    try:
        proc = subprocess.run([*args, f"{bundle_dir}/", f"{remote.destination}:{path}/"], capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployError("Copying the bundle timed out", where=remote.destination,
                          received=f"rsync still running after {timeout} s") from None
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace")
        if "Permission denied" in stderr or "Connection" in stderr:
            raise _classify_ssh_failure(stderr, remote, port, identity)
        raise DeployError("rsync could not copy the bundle", where=remote.destination,
                          received=(stderr.strip().splitlines() or ["no message"])[-1])


def _last_json(text: str) -> dict[str, Any] | None:
    """The last line of `text` that is a JSON object (the app prints one per input)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None
