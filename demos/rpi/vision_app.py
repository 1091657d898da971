#!/usr/bin/env python3
"""Image classification on the device: .npy, .png or .jpg files -> label, score, latency.

A `.npy` holds the model input as training fed it (float, e.g. the 8x8 digits
on their 0..16 scale); it is the exact path and what the deploy test checks.
Pictures need Pillow: they are converted to grayscale or RGB, resized to the
model's input and mapped to the training scale with `config.json`'s
`image.scale`/`image.offset`/`image.invert` (pixel 0..255 -> feature).

    ./run.sh test_input.npy
    ./run.sh photo.png --json
    ./run.sh --watch inbox/            # classify each new file dropped there
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import edgesparse_app as app
import numpy as np

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_input(path: str, shape: tuple[int, ...], image: dict) -> np.ndarray:
    """A file -> one float32 model input of `shape` (H, W, C)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, EOFError):
            raise app.AppError(f"{path}: not a numpy .npy array of one model input") from None
        if x.size != int(np.prod(shape)):
            raise app.AppError(f"{path} holds {x.shape}, the model takes {shape}")
        return x.reshape(shape)
    if suffix not in PICTURE_SUFFIXES:
        raise app.AppError(f"{path}: expected .npy or a picture ({', '.join(PICTURE_SUFFIXES)})")
    try:
        from PIL import Image
    except ImportError:
        raise app.AppError("reading pictures needs Pillow: pip install pillow (or pass a .npy)") from None
    if len(shape) not in (2, 3):
        raise app.AppError(f"pictures need a (height, width[, channels]) model input; this one takes {shape}")
    height, width = shape[0], shape[1]
    channels = shape[2] if len(shape) == 3 else 1
    with Image.open(path) as picture:
        picture = picture.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
        pixels = np.asarray(picture, np.float32)
    if image.get("invert"):
        pixels = 255.0 - pixels
    x = pixels * np.float32(image.get("scale", 1.0 / 255.0)) + np.float32(image.get("offset", 0.0))
    return x.reshape(shape)


def classify(path: str, model: app.Model, labels: list[str], image: dict, repeat: int) -> dict:
    x = load_input(path, model.input_shape, image)
    scores, times = model.run(x, repeat=repeat)
    record = app.result(path, labels, scores, times, model)
    record["features_sha256"] = hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()
    return record


def watch(directory: str, model: app.Model, labels: list[str], args, image: dict) -> None:
    """Classify files as they appear in `directory` (what the systemd unit runs)."""
    seen: set[str] = set()
    os.makedirs(directory, exist_ok=True)
    while True:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if path in seen or name.startswith(".") or not os.path.isfile(path):
                continue
            seen.add(path)
            try:
                app.emit(classify(path, model, labels, image, args.repeat), args.json)
            except app.AppError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
        time.sleep(args.poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help=".npy model inputs or pictures")
    parser.add_argument("--watch", metavar="DIR", help="classify every new file that appears in DIR")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between --watch scans")
    app.add_common_arguments(parser)
    args = parser.parse_args(argv)
    config = app.load_config()
    image = config.get("image", {})
    if not args.inputs and not args.watch:
        args.inputs = [os.path.join(app.HERE, config["test_input"])]
    model, labels = app.open_model(args, config)
    if args.watch:
        watch(args.watch, model, labels, args, image)
        return 0
    for path in args.inputs:
        app.emit(classify(path, model, labels, image, args.repeat), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(app.main_guard(main))
