"""`edgesparse deploy`: bundles, and a real push over ssh to a throwaway sshd on 127.0.0.1.

The build directories here are made by `make_build_dir` (model.tflite + report.json
in the shape `pipeline.build` writes) from two tiny int8 models built in the test
session: a DS-CNN-like keyword spotter (1, 49, 10, 1) -> 12 and a digits-like
CNN (1, 8, 8, 1) -> 10. The other deploy test modules import these helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgesparse.data import audio

KWS_LABELS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown"]
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- tiny models

def _tone_clip(seed: int) -> np.ndarray:
    """A 1 s 'utterance': two chirped tones in noise, different per seed (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(audio.CLIP_SAMPLES) / audio.SAMPLE_RATE
    f0, f1 = 200 + 60 * (seed % 12), 900 + 40 * (seed % 7)
    envelope = np.exp(-((t - 0.5) / (0.12 + 0.01 * (seed % 5))) ** 2)
    x = envelope * (np.sin(2 * np.pi * f0 * t * (1 + 0.3 * t)) + 0.5 * np.sin(2 * np.pi * f1 * t))
    return (0.6 * x + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def kws_wav_bytes(seed: int) -> bytes:
    return audio.wav_bytes(_tone_clip(seed))


def _convert_int8(model, representative: np.ndarray, sparse: bool = False) -> bytes:
    from edgesparse.pipeline.tf_env import import_tf

    tf, _ = import_tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT] + ([tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
    converter.representative_dataset = lambda: ([representative[i:i + 1]] for i in range(len(representative)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def build_tiny_models(cache: Path) -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    """{'kws' | 'digits' | 'sparse_fc': (tflite, x_val, y_val)}; built once per session, cached as files.

    'sparse_fc' is an 8x8 MLP whose hidden Dense kernels are 80% zero in blocks of 16
    inputs, converted with EXPERIMENTAL_SPARSITY: FULLY_CONNECTED reads 1x16 block-sparse
    int8 weights itself (no DENSIFY), as in a real rpi4 build of the digits demo.
    """
    names = ("kws", "digits", "sparse_fc")
    files = {name: (cache / f"{name}.tflite", cache / f"{name}.npz") for name in names}
    if all(a.is_file() and b.is_file() for a, b in files.values()):
        out = {}
        for name, (model_path, npz_path) in files.items():
            with np.load(npz_path) as npz:
                out[name] = (model_path.read_bytes(), npz["x_val"], npz["y_val"])
        return out
    from edgesparse.pipeline.tf_env import import_tf

    tf, keras = import_tf()
    keras.utils.set_random_seed(0)
    layers = keras.layers

    # DS-CNN-like: conv, depthwise-separable block, average pool, dense, softmax.
    inputs = keras.Input((49, 10, 1))
    x = layers.Conv2D(16, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.AveragePooling2D((25, 5))(x)
    x = layers.Flatten()(x)
    outputs = layers.Softmax()(layers.Dense(12)(x))
    kws_model = keras.Model(inputs, outputs)
    kws_x = np.stack([audio.features_for_model(_tone_clip(i)) for i in range(24)]).astype(np.float32)
    kws_y = np.arange(24) % 12

    # Digits-like: 8x8x1 on the 0..16 scale of scikit-learn's digits.
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Softmax()(layers.Dense(10)(x))
    digits_model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    digits_x = rng.integers(0, 17, size=(24, 8, 8, 1)).astype(np.float32)
    digits_y = np.arange(24) % 10

    inputs = keras.Input((8, 8, 1))
    x = layers.Flatten()(inputs)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(128, activation="relu")(x)
    sparse_model = keras.Model(inputs, layers.Softmax()(layers.Dense(10)(x)))
    for layer in sparse_model.layers:
        if isinstance(layer, layers.Dense) and layer.units > 10:
            kernel, bias = layer.get_weights()
            keep = rng.random((kernel.shape[0] // 16, kernel.shape[1])) < 0.2
            layer.set_weights([kernel * np.repeat(keep, 16, axis=0), bias])

    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, model, xs, ys in (("kws", kws_model, kws_x, kws_y), ("digits", digits_model, digits_x, digits_y),
                                ("sparse_fc", sparse_model, digits_x, digits_y)):
        data = _convert_int8(model, xs, sparse=name == "sparse_fc")
        files[name][0].write_bytes(data)
        np.savez(files[name][1], x_train=xs, y_train=ys, x_val=xs, y_val=ys)
        out[name] = (data, xs, ys)
    return out


def make_build_dir(path: Path, model_bytes: bytes, *, name: str, input_shape, num_classes: int,
                   profile: str = "rpi4", runtime: str = "litert", device_class: str = "sbc",
                   data_source: str | None = None, passed: bool = True, labels: list[str] | None = None) -> Path:
    """A build directory shaped like `pipeline.build`'s: model.tflite + report.json."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.tflite").write_bytes(model_bytes)
    report = {
        "schema_version": 1,
        "tool": {"name": "edgesparse", "version": "test"},
        "profile": {"name": profile, "runtime": runtime, "class": device_class},
        "model": {"name": name, "input_shape": list(input_shape), "num_classes": num_classes,
                  "source": data_source or f"test:{name}"},
        "data": {"source": data_source or f"test:{name}", "num_classes": num_classes},
        "sizes": {"artifact_bytes": len(model_bytes)},
        "accuracy": {}, "verification": {}, "check": None,
        "passed": passed, "failures": [] if passed else ["accuracy drop 9.00 points exceeds --max-accuracy-drop 2"],
        "files": {"model.tflite": {"bytes": len(model_bytes), "sha256": hashlib.sha256(model_bytes).hexdigest()}},
    }
    if labels:
        report["data"]["labels"] = labels
    (path / "report.json").write_text(json.dumps(report, indent=2))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_models")


@pytest.fixture()
def kws_build(tmp_path, tiny_models):
    data, x, y = tiny_models["kws"]
    npz = tmp_path / "kws_data.npz"
    np.savez(npz, x_val=x, y_val=y)
    build = make_build_dir(tmp_path / "build" / "kws-nrf52840", data, name="kws", input_shape=(49, 10, 1),
                           num_classes=12, profile="nrf52840", runtime="tflm", device_class="mcu",
                           data_source=str(npz), labels=KWS_LABELS)
    wav = tmp_path / "clip.wav"
    wav.write_bytes(kws_wav_bytes(2))
    return build, wav


@pytest.fixture()
def digits_build(tmp_path, tiny_models):
    data, x, y = tiny_models["digits"]
    npz = tmp_path / "digits_data.npz"
    np.savez(npz, x_val=x, y_val=y)
    return make_build_dir(tmp_path / "build" / "digits-rpi4", data, name="digits", input_shape=(8, 8, 1),
                          num_classes=10, data_source=str(npz))


# ----------------------------------------------------------------------------- a throwaway sshd

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
needs_sshd = pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None or os.geteuid() != 0,
                                reason="needs Debian's openssh-server and openssh-client, run as root "
                                       "(make system-deps installs them)")


def _device_python() -> str:
    """The interpreter the 'device' makes its venv with: Debian's python3 (as on Raspberry Pi OS) when it
    can (python3-venv), else the base interpreter of this test run."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True)
    if probe.returncode == 0:
        return "/usr/bin/python3"
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgesparse-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


class Sshd:
    """sshd -D on 127.0.0.1:<free port> with a throwaway host key and authorized_keys in tmp."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.host_key = _keygen(root / "ssh_host_ed25519_key")
        self.user_key = _keygen(root / "id_user")
        self.stranger_key = _keygen(root / "id_stranger")            # never authorized
        (root / "authorized_keys").write_text((root / "id_user.pub").read_text())
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "AllowTcpForwarding no", "X11Forwarding no", "PrintMotd no", "LogLevel ERROR", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)                       # privilege separation directory
        self.log = open(root / "sshd.log", "wb")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited: " + (root / "sshd.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def _cli(*args: str) -> subprocess.CompletedProcess:
    # A clean environment, less anything that looks like a secret, so the output check below means something.
    env = {k: v for k, v in os.environ.items() if not any(s in k.upper() for s in ("TOKEN", "SECRET", "KEY", "PASS"))}
    return subprocess.run([sys.executable, "-m", "edgesparse", "deploy", *args], capture_output=True, text=True,
                          env={**env, "COLUMNS": "200"}, timeout=1200)


def _assert_no_secrets(sshd: Sshd, text: str) -> None:
    for key in (sshd.user_key, sshd.stranger_key, sshd.host_key):
        body = key.read_text().splitlines()[1]
        assert body not in text
    assert "PRIVATE KEY" not in text
    assert "PATH=" not in text and "HOME=" not in text       # no environment dumps


# ----------------------------------------------------------------------------- remote tests

@needs_sshd
def test_kws_bundle_runs_remotely_in_a_fresh_tflite_runtime_venv(sshd, kws_build, tmp_path):
    """Deploy over ssh; the host's venv holds only tflite-runtime 2.14 + numpy<2, like a Pi image."""
    from edgesparse.runtime import verify

    build, wav = kws_build
    remote_dir = tmp_path / "device" / "edgesparse-kws"
    out = tmp_path / "bundle"
    proc = _cli(str(build), "--target", "rpi", "--sample", str(wav), "--out", str(out),
                "--host", f"root@127.0.0.1:{remote_dir}", "--port", str(sshd.port),
                "--identity", str(sshd.user_key), "--runtime", "tflite-runtime", "--remote-python", _device_python(),
                "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_no_secrets(sshd, proc.stdout + proc.stderr)
    document = json.loads(proc.stdout)
    remote = document["remote"]
    assert remote["matches_local"] is True
    assert remote["result"]["runtime"].startswith("tflite_runtime 2.14.0")
    assert remote["result"]["latency_ms"] > 0

    # The fresh venv holds the runtime and numpy<2 and nothing of TensorFlow.
    venv_python = remote_dir / "venv" / "bin" / "python"
    listing = subprocess.run([str(venv_python), "-m", "pip", "list", "--format=json"], capture_output=True,
                             text=True, check=True).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(listing)}
    assert installed["tflite-runtime"] == "2.14.0"
    assert int(installed["numpy"].split(".")[0]) < 2
    assert not any(name.startswith(("tensorflow", "ai-edge-litert", "tf-keras")) for name in installed)

    # Remote predictions equal verify.run_tflite (ai_edge_litert) on the same input, features included.
    samples, rate = audio.read_wav(wav)
    x = audio.features_for_model(samples, rate)
    local = verify.run_tflite((build / "model.tflite").read_bytes(), x[None], runtime="litert")
    scores = np.asarray(local.outputs, np.float32).reshape(-1)
    assert remote["result"]["scores"] == [float(s) for s in scores]
    assert remote["result"]["index"] == int(np.argmax(scores))
    assert remote["result"]["features_sha256"] == hashlib.sha256(x.astype(np.float32).tobytes()).hexdigest()
    assert (out / "known_hosts").is_file()                        # the host key was pinned in the bundle


@needs_sshd
def test_unreachable_host_is_one_clear_error(sshd, kws_build, tmp_path):
    build, wav = kws_build
    closed = _free_port()
    started = time.monotonic()
    proc = _cli(str(build), "--target", "rpi", "--sample", str(wav), "--out", str(tmp_path / "b"),
                "--host", f"root@127.0.0.1:{tmp_path / 'r'}", "--port", str(closed),
                "--identity", str(sshd.user_key), "--connect-timeout", "5")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Cannot reach the host over ssh" in proc.stderr
    assert "Connection refused" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()                           # checked before any bundle was written
    assert time.monotonic() - started < 60
    _assert_no_secrets(sshd, proc.stdout + proc.stderr)


@needs_sshd
def test_refused_key_is_one_clear_error(sshd, kws_build, tmp_path):
    build, wav = kws_build
    proc = _cli(str(build), "--target", "rpi", "--sample", str(wav), "--out", str(tmp_path / "b"),
                "--host", f"root@127.0.0.1:{tmp_path / 'r'}", "--port", str(sshd.port),
                "--identity", str(sshd.stranger_key))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "The host refused the ssh key" in proc.stderr
    assert "Permission denied (publickey)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()                           # checked before any bundle was written
    _assert_no_secrets(sshd, proc.stdout + proc.stderr)


# ----------------------------------------------------------------------------- bundles (no network)

def test_rpi_bundle_is_self_contained_and_tensorflow_free(kws_build, tmp_path):
    from edgesparse.deploy import bundle as deploy

    build, wav = kws_build
    bundle = deploy.make_bundle(build, "rpi", tmp_path / "b", sample=wav)
    names = set(bundle.files)
    for name in ("model.tflite", "labels.txt", "kws_app.py", "edgesparse_app.py", "config.json",
                 "requirements.txt", "run.sh", "test_input.wav", "expected.json", "README.md",
                 "edgesparse-kws.service", "lib/edgesparse/data/audio.py", "lib/edgesparse/errors.py", "bundle.json"):
        assert name in names or name == "bundle.json" and (bundle.path / name).is_file(), name
    assert (bundle.path / "model.tflite").read_bytes() == (build / "model.tflite").read_bytes()
    assert (bundle.path / "labels.txt").read_text().split() == KWS_LABELS
    requirements = (bundle.path / "requirements.txt").read_text()
    assert 'tflite-runtime==2.14.0; python_version < "3.12"' in requirements
    assert "numpy>=1.23,<2" in requirements and "ai-edge-litert" in requirements
    assert "tensorflow" not in requirements.replace("# The on-device runtime: no TensorFlow", "").lower()
    assert os.access(bundle.path / "run.sh", os.X_OK)
    unit = (bundle.path / "edgesparse-kws.service").read_text()
    assert "ExecStart=/bin/sh /home/pi/edgesparse-kws/run.sh --mic" in unit and "[Install]" in unit
    manifest = json.loads((bundle.path / "bundle.json").read_text())
    assert manifest["model_sha256"] == hashlib.sha256((build / "model.tflite").read_bytes()).hexdigest()
    assert manifest["expected"]["label"] == bundle.expected["label"]
    # No staging directories are left beside the bundle.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "build", "clip.wav", "kws_data.npz"]


def test_existing_bundle_is_never_overwritten_without_force(kws_build, tmp_path):
    from edgesparse.deploy import bundle as deploy
    from edgesparse.errors import OutputExistsError

    build, wav = kws_build
    first = deploy.make_bundle(build, "android", tmp_path / "b", sample=wav)
    marker = first.path / "assets" / "model.tflite"
    before = marker.stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        deploy.make_bundle(build, "android", tmp_path / "b", sample=wav)
    assert marker.stat().st_mtime_ns == before
    deploy.make_bundle(build, "android", tmp_path / "b", sample=wav, force=True)
    assert (tmp_path / "b" / "README.md").is_file()


def test_failed_build_is_refused_unless_forced(tiny_models, tmp_path):
    data, _, _ = tiny_models["digits"]
    build = make_build_dir(tmp_path / "failed", data, name="digits", input_shape=(8, 8, 1), num_classes=10,
                           passed=False)
    sample = tmp_path / "x.npy"
    np.save(sample, np.zeros((8, 8, 1), np.float32))
    proc = _cli(str(build), "--target", "android", "--sample", str(sample), "--out", str(tmp_path / "a"))
    assert proc.returncode == 2
    assert "did not pass its checks" in proc.stderr and "accuracy drop 9.00 points" in proc.stderr
    assert "--force" in proc.stderr and not (tmp_path / "a").exists()
    proc = _cli(str(build), "--target", "android", "--sample", str(sample), "--out", str(tmp_path / "a"), "--force")
    assert proc.returncode == 0, proc.stderr


def test_tampered_model_is_refused(digits_build, tmp_path):
    (digits_build / "model.tflite").write_bytes((digits_build / "model.tflite").read_bytes() + b"\0")
    proc = _cli(str(digits_build), "--target", "rpi", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "not the file report.json describes" in proc.stderr


def test_android_bundle_documents_quantization_and_says_it_is_untested(digits_build, tmp_path):
    from edgesparse.deploy import bundle as deploy

    bundle = deploy.make_bundle(digits_build, "pixel4", tmp_path / "android")     # a phone profile picks android
    assert bundle.target == "android"
    readme = (bundle.path / "README.md").read_text()
    assert "**Not tested on a phone.**" in readme
    assert 'implementation("com.google.ai.edge.litert:litert:' in readme
    assert 'context.assets.openFd(name)' in readme and "import org.tensorflow.lite.Interpreter" in readme
    io = deploy._io_quantization((digits_build / "model.tflite").read_bytes())
    assert f"| input 0 (1x8x8x1) | int8 | {io['input']['scale']!r} | {io['input']['zero_point']} |" in readme
    assert f"| output 0 | int8 | {io['output']['scale']!r} | {io['output']['zero_point']} |" in readme
    assert (bundle.path / "assets" / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    expected = json.loads((bundle.path / "expected.json").read_text())
    assert len(expected["scores"]) == 10


def test_cli_errors_are_one_message_exit_2(digits_build, tmp_path):
    cases = [
        (["--target", "toaster"], "Unknown deploy target"),
        (["--target", "rpi", "--host", "pi@@x"], "Bad --host"),
        (["--target", "rpi", "--host", "pi@localhost:~"], "must be a directory of its own"),
        (["--target", "mcu", "--host", "pi@localhost"], "--host deploys only the rpi target"),
        (["--target", "mcu"], "needs a microcontroller profile"),
        (["--target", "rpi", "--labels", str(tmp_path / "nope.txt")], "Labels file not found"),
    ]
    for args, message in cases:
        proc = _cli(str(digits_build), *args, "--out", str(tmp_path / "o"))
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = _cli(str(tmp_path / "missing"), "--target", "rpi")
    assert proc.returncode == 2 and "Build directory not found" in proc.stderr


def test_default_kws_test_input_is_a_spoken_keyword(kws_build, tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make system-deps installs it)")
    from edgesparse.deploy import bundle as deploy

    build, _ = kws_build
    bundle = deploy.make_bundle(build, "rpi", tmp_path / "b")
    assert bundle.test_input == "test_input.wav"
    manifest = json.loads((bundle.path / "bundle.json").read_text())
    assert "'yes' spoken by espeak-ng" in manifest["test_input_source"]
    assert manifest["test_input_label"] == KWS_LABELS.index("yes")


@needs_sshd
def test_block_sparse_int8_fully_connected_needs_ai_edge_litert_on_the_device(sshd, tiny_models, tmp_path):
    """tflite-runtime 2.14 (numpy<2) runs a 1x16 block-sparse int8 FULLY_CONNECTED build WRONGLY.

    DESIGN.md expected it to work. Measured here: every input gives the same
    output, without an error. So `--runtime auto` ships ai-edge-litert for such a
    model, `--runtime tflite-runtime` is refused, and forcing it is caught by the
    device-vs-here comparison (exit 3).
    """
    from edgesparse.deploy import bundle as deploy
    from edgesparse.tflite import edit as tflite_edit
    from edgesparse.runtime import verify

    data, x, _ = tiny_models["sparse_fc"]
    assert "DENSIFY" not in deploy.model_ops(data)
    assert [t.block_size for t in tflite_edit.sparse_encoding_report(data)] == [(1, 16), (1, 16)]
    build = make_build_dir(tmp_path / "build" / "mlp-rpi4", data, name="mlp", input_shape=(8, 8, 1),
                           num_classes=10, labels=[f"digit{i}" for i in range(10)])
    sample = tmp_path / "x.npy"
    np.save(sample, x[3])
    local = verify.run_tflite(data, x[3:4], runtime="litert")
    assert "FULLY_CONNECTED" in local.builtin_ops                # XNNPACK leaves the sparse FC to LiteRT
    scores = [float(v) for v in np.asarray(local.outputs).reshape(-1)]
    assert len(set(scores)) > 1

    def run(name: str, *extra: str) -> subprocess.CompletedProcess:
        return _cli(str(build), "--target", "rpi4", "--sample", str(sample), "--out", str(tmp_path / name),
                    "--host", f"root@127.0.0.1:{tmp_path / 'device' / name}", "--port", str(sshd.port),
                    "--identity", str(sshd.user_key), "--remote-python", _device_python(), *extra)

    refused = run("trt", "--runtime", "tflite-runtime")
    assert refused.returncode == 2 and "does not run correctly in tflite-runtime 2.14" in refused.stderr

    forced = run("trt", "--runtime", "tflite-runtime", "--force", "--json")
    assert forced.returncode == 3, forced.stdout + forced.stderr
    assert "The device's result differs from the build machine's" in forced.stderr
    wrong = json.loads(forced.stdout)["remote"]["result"]
    assert wrong["runtime"].startswith("tflite_runtime 2.14.0")
    assert len(set(wrong["scores"])) == 1                         # the same value for every class

    fixed = run("auto", "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    document = json.loads(fixed.stdout)
    assert any("installs ai-edge-litert instead" in n for n in document["bundle"]["notes"])
    assert (tmp_path / "auto" / "requirements.txt").read_text().count("ai-edge-litert==2.3.0") == 1
    result = document["remote"]["result"]
    assert result["runtime"].startswith("ai_edge_litert 2.3.0")
    assert result["scores"] == scores

    # Again into the same (now existing) venv without pip: the quick re-deploy path.
    marker = tmp_path / "device" / "auto" / "venv" / "pyvenv.cfg"
    created = marker.stat().st_mtime_ns
    again = run("auto", "--json", "--force", "--skip-install")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["remote"]["matches_local"] is True
    assert marker.stat().st_mtime_ns == created
