#!/usr/bin/env python3
"""Keyword spotting on the device: WAV files, MFCC .npy files or the microphone -> label, score, latency.

Features come from `lib/edgesparse/data/audio.py`, a byte-for-byte copy of the module
the model was trained with (copied by `edgesparse deploy`), so the MFCCs here
are the training MFCCs. A `.npy` holds those features already (one model input,
49x10x1 float32, as the build's held-out sample); it is classified as it is.
Needs numpy and tflite-runtime or ai-edge-litert; the microphone mode also
needs `sounddevice` (PortAudio) and an input device.

    ./run.sh test_input.npy            # label, score, latency
    ./run.sh clip1.wav clip2.wav --json
    ./run.sh --mic --threshold 0.7     # stream from the default microphone
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import edgesparse_app as app
import numpy as np

from edgesparse.data import audio  # the bundled copy (lib/ is on sys.path via edgesparse_app)

QUIET_LABELS = ("_silence_", "_unknown_", "silence", "unknown")


def features(samples: np.ndarray, rate: int) -> np.ndarray:
    """The model input (49, 10, 1) float32, exactly as in training."""
    return audio.features_for_model(samples, rate)


def load_features(path: str) -> np.ndarray:
    """MFCCs for a file: computed from a .wav, or read as they are from a .npy of one model input."""
    if not path.lower().endswith(".npy"):
        samples, rate = audio.read_wav(path)
        return features(samples, rate)
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, EOFError):
        raise app.AppError(f"{path}: not a numpy .npy array of MFCC features") from None
    if x.size != int(np.prod(audio.FEATURE_SHAPE)):
        raise app.AppError(f"{path} holds {x.shape}, the model takes {tuple(audio.FEATURE_SHAPE)} MFCC features")
    return np.asarray(x, np.float32).reshape(audio.FEATURE_SHAPE)


def classify_file(path: str, model: app.Model, labels: list[str], repeat: int) -> dict:
    x = load_features(path)
    scores, times = model.run(x, repeat=repeat)
    record = app.result(path, labels, scores, times, model)
    record["features_sha256"] = hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()
    return record


def stream(model: app.Model, labels: list[str], args) -> None:
    """Classify the last 1 s of microphone audio every --hop seconds."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:
        raise app.AppError(f"--mic needs the sounddevice package and PortAudio ({exc}); "
                           "pip install sounddevice && sudo apt-get install libportaudio2") from None
    try:
        sd.check_input_settings(samplerate=audio.SAMPLE_RATE, channels=1, dtype="float32")
    except Exception as exc:
        raise app.AppError(f"no usable microphone: {exc}") from None
    window = np.zeros(audio.CLIP_SAMPLES, np.float32)
    hop = max(1, int(args.hop * audio.SAMPLE_RATE))
    deadline = time.monotonic() + args.seconds if args.seconds else None
    with sd.InputStream(samplerate=audio.SAMPLE_RATE, channels=1, dtype="float32", blocksize=hop) as mic:
        while deadline is None or time.monotonic() < deadline:
            block, _overflowed = mic.read(hop)
            window = np.concatenate([window[len(block):], block[:, 0]])
            scores, times = model.run(features(window, audio.SAMPLE_RATE), repeat=1)
            record = app.result("mic", labels, scores, times, model)
            if args.json or (record["score"] >= args.threshold and record["label"] not in QUIET_LABELS):
                app.emit(record, args.json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav", nargs="*", help="16-bit/float WAV files (any rate; resampled to 16 kHz), "
                                               "or .npy files of MFCC features (one model input each)")
    parser.add_argument("--mic", action="store_true", help="stream from the default microphone")
    parser.add_argument("--hop", type=float, default=0.5, help="seconds between microphone inferences")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop streaming after this long (0: never)")
    parser.add_argument("--threshold", type=float, default=0.6, help="minimum score to print a keyword (--mic)")
    app.add_common_arguments(parser)
    args = parser.parse_args(argv)
    config = app.load_config()
    if not args.wav and not args.mic:
        args.wav = [app.os.path.join(app.HERE, config["test_input"])]
    model, labels = app.open_model(args, config)
    if model.input_shape != tuple(audio.FEATURE_SHAPE):
        raise app.AppError(f"the model takes {model.input_shape}, the audio front end makes {audio.FEATURE_SHAPE}")
    if args.mic:
        stream(model, labels, args)
        return 0
    for path in args.wav:
        app.emit(classify_file(path, model, labels, args.repeat), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(app.main_guard(main))
