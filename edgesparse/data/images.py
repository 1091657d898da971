"""Image folders (`<root>/<label>/*.png|jpg|jpeg|bmp`) as a Dataset, preprocessed as the device app does.

Why here: the pixels a model trains on must be the pixels the Raspberry Pi
vision app feeds it, so reading, resizing and scaling (pixel / 255) have one
owner that both `build --data FOLDER` and `deploy --sample picture` call.
Pillow is imported only when an image is read.

Raises DataError (a folder or image that cannot be used) and MissingDependency
(Pillow not installed).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.data.dataset import Dataset, shape_text
from edgesparse.data.folders import IMAGE_SUFFIXES, SPLIT_DIRS, describe_files, is_image, split_layout, visible_entries
from edgesparse.errors import DataError, MissingDependency

__all__ = ["IMAGE_SUFFIXES", "PIXEL_SCALE", "load_image_folder", "read_image"]

# pixel p (0..255) -> p * PIXEL_SCALE: what the deployed vision app computes (config.json image.scale 1/255)
PIXEL_SCALE = np.float32(1.0 / 255.0)


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependency("Pillow is needed to read image folders and is not installed",
                                expected="the Pillow package (installed with matplotlib)", received=str(exc),
                                fix="Install it: pip install pillow") from None
    return Image


def _class_images(folder: Path) -> list[Path]:
    """The images of one class folder; DataError naming the folder when it has none."""
    dirs, files = visible_entries(folder)
    images = [p for p in files if is_image(p)]
    if images:
        return images
    if files:
        received = f"{len(files)} file(s), none of them an image ({describe_files(files)})"
    elif dirs:
        received = f"only sub-folders ({', '.join(d.name for d in dirs[:5])}); images are not searched for recursively"
    else:
        received = "an empty folder"
    raise DataError("A class folder holds no images", where=str(folder),
                    expected=f"image files ({', '.join(IMAGE_SUFFIXES)}) directly in each class folder",
                    received=received, fix="Add images to it, or remove the folder (each folder is a class)")


def _stable_order(paths: list[Path], seed: int) -> list[Path]:
    """A seeded order that depends only on each file's name: adding a file moves no other file across the split."""
    return sorted(paths, key=lambda p: hashlib.sha1(f"{seed}:{p.name}".encode()).hexdigest())


def _image_shape(root: Path, input_shape: Sequence[int | None]) -> tuple[tuple[int, ...], str]:
    """The fixed (H, W[, C]) images are made into, and the Pillow mode ("L" or "RGB")."""
    dims = [None if d is None or int(d) < 0 else int(d) for d in input_shape]
    shape = tuple(d for d in dims if d)
    if len(dims) not in (2, 3) or len(shape) != len(dims) or (len(shape) == 3 and shape[2] not in (1, 3)):
        raise DataError("The model's input cannot take images", where=str(root),
                        expected="a fixed input of (height, width), (height, width, 1) grayscale or "
                                 "(height, width, 3) RGB",
                        received=f"model input {shape_text(dims)}",
                        fix="Give the model a fixed-size image input, or preprocess the images into an .npz "
                            "(docs/data.md)")
    return shape, ("RGB" if len(shape) == 3 and shape[2] == 3 else "L")


def _read_image(image_module: Any, path: Path, shape: tuple[int, ...], mode: str) -> np.ndarray:
    """One file -> float32 of `shape` in [0, 1]: convert(mode), resize (W, H) bilinear, * 1/255.

    The same calls, in the same order, as demos/rpi/vision_app.py (with config
    image.scale 1/255, offset 0, invert false), so the device sees what training saw.
    """
    try:
        with image_module.open(path) as picture:
            picture = picture.convert(mode).resize((shape[1], shape[0]), image_module.BILINEAR)
            pixels = np.asarray(picture, np.float32)
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as exc:
        raise DataError("An image cannot be read", where=str(path), expected="a readable PNG, JPEG or BMP file",
                        received=f"{type(exc).__name__}: {exc}",
                        fix="Re-save the file with an image editor, or delete it") from None
    return (pixels * PIXEL_SCALE).reshape(shape)


def read_image(path: Path | str, *, input_shape: Sequence[int | None]) -> np.ndarray:
    """One picture preprocessed exactly as load_image_folder does, for a test input or a deploy sample."""
    path = Path(path)
    shape, mode = _image_shape(path, input_shape)
    return _read_image(_pillow(), path, shape, mode)


def load_image_folder(root: Path | str, *, input_shape: Sequence[int | None], seed: int = 0,
                      val_fraction: float = 0.2, workers: int | None = None) -> Dataset:
    """Read `<root>/<label>/*.png|jpg|jpeg|bmp` as a Dataset for a model with `input_shape`.

    Class ids are the label folders in sorted (Python string) order; their names
    go to Dataset.labels. Each image is converted to grayscale ("L") for 1 channel
    or RGB for 3 (an (H, W) input is grayscale without a channel axis), resized to
    (H, W) with Pillow's bilinear filter (aspect ratio not kept) and scaled to
    float32 in [0, 1] (pixel / 255), exactly as the Raspberry Pi vision app does.

    With `<root>/train/<label>/` and `<root>/val/<label>/` (or `validation/`) the
    split is theirs (`test/` is left alone); otherwise each class is split on its
    own: `val_fraction` of its images (rounded, at least one when it has two or
    more) go to validation, chosen by a seeded hash of the file name, so the split
    is stratified, repeatable and stable when files are added. Files and folders
    starting with '.' and files of other types are skipped; sub-folders of a class
    folder are not searched.
    """
    image_module = _pillow()
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("The image folder does not exist", where=str(root),
                        expected="a folder with one sub-folder of images per class",
                        received="a file" if root.exists() else "no such folder", fix="Check the path")
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError("val_fraction must be between 0 and 1", where="load_image_folder",
                        expected="0 < val_fraction < 1, e.g. 0.2", received=val_fraction)
    shape, mode = _image_shape(root, input_shape)
    names, jobs, layout = _plan_images(root, seed, val_fraction)
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        pixels = list(pool.map(lambda job: _read_image(image_module, job[2], shape, mode), jobs))
    arrays = {}
    for index, key in enumerate(("train", "val")):
        take = [i for i, job in enumerate(jobs) if job[0] == index]
        arrays[f"x_{key}"] = np.stack([pixels[i] for i in take]).astype(np.float32, copy=False)
        arrays[f"y_{key}"] = np.array([jobs[i][1] for i in take], np.int64)
    return Dataset(num_classes=len(names), labels=list(names),
                   source=f"{root} (image folder: {len(jobs)} images, {len(names)} classes, {layout})", **arrays)


def _plan_images(root: Path, seed: int, val_fraction: float) -> tuple[list[str], list[tuple[int, int, Path]], str]:
    """(class names, [(split 0 train / 1 val, class id, file)], layout in words) for an image folder."""
    dirs, files = visible_entries(root)
    split = split_layout(dirs)
    if split:
        names, per_split = _given_split(root, dirs, split)
        layout = f"train/ and {split['val'].name}/ folders"
    else:
        per_split = {"all": {d.name: d for d in dirs}}
        names = [d.name for d in dirs]
        loose = [p.name for p in files if is_image(p)]
        if loose:
            raise DataError("Images lie directly in the image folder, outside any class folder", where=str(root),
                            expected="<folder>/<label>/*.png|jpg|jpeg|bmp: one sub-folder per class",
                            received=f"{len(loose)} image(s) such as {loose[0]}",
                            fix="Move each image into the sub-folder named after its class")
        layout = f"stratified split, val_fraction {val_fraction:g}, seed {seed}"
    if not names:
        raise DataError("The image folder is empty" if not files else "The image folder has no class folders",
                        where=str(root), expected="one sub-folder of images per class (at least two)",
                        received="an empty folder" if not files else
                        f"{len(files)} file(s) ({describe_files(files)}) and no sub-folders",
                        fix="Lay the images out as <folder>/cat/1.png, <folder>/dog/2.png, ...")
    if len(names) < 2:
        raise DataError("The image folder has a single class", where=str(root),
                        expected="at least two class folders (a classifier needs two classes)",
                        received=f"one class folder: {names[0]}", fix="Add a folder of images for each other class")
    jobs: list[tuple[int, int, Path]] = []
    for label, name in enumerate(names):
        if split:
            for index, key in enumerate(("train", "val")):
                folder = per_split[key].get(name)
                if folder is not None:
                    jobs += [(index, label, p) for p in _class_images(folder)]
        else:
            images = _stable_order(_class_images(per_split["all"][name]), seed)
            n_val = 0 if len(images) < 2 else min(max(1, round(len(images) * val_fraction)), len(images) - 1)
            jobs += [(1 if i < n_val else 0, label, p) for i, p in enumerate(images)]
    if not any(s == 1 for s, _, _ in jobs):
        raise DataError("Too few images to make a validation split", where=str(root),
                        expected="at least two images in some class folder", received="one image per class",
                        fix="Add images, or give a val/ folder")
    return names, jobs, layout


def _given_split(root: Path, dirs: list[Path], split: dict[str, Path]) -> tuple[list[str], dict[str, dict[str, Path]]]:
    """Class names and {train|val: {class: folder}} of a folder laid out as train/<label>/ and val/<label>/."""
    extra = [d.name for d in dirs if d.name not in SPLIT_DIRS]
    if extra:
        raise DataError("The image folder mixes train/ and val/ with class folders", where=str(root),
                        expected="either train/<label>/ and val/<label>/, or <label>/ folders only",
                        received=f"also {', '.join(extra)}",
                        fix="Move those folders under train/ (and val/), or drop train/ and val/")
    per_split = {name: {d.name: d for d in visible_entries(folder)[0]} for name, folder in split.items()}
    if not per_split["val"]:
        raise DataError("The validation folder has no class folders", where=str(split["val"]),
                        expected="val/<label>/ folders of images, like train/<label>/",
                        received="no sub-folders", fix="Add val/<label>/ images, or move the class folders up out of "
                        "train/ (and remove val/) to let edgesparse split them")
    missing = sorted(set(per_split["val"]) - set(per_split["train"]))
    if missing:
        raise DataError("A validation class has no training folder", where=str(split["train"]),
                        expected="a train/<label>/ folder for every val/<label>/",
                        received=f"no train/ folder for {', '.join(missing)}",
                        fix="Add training images for those classes, or remove them from val/")
    return sorted(set(per_split["train"]) | set(per_split["val"])), per_split
