"""What a `--data` folder holds: the listing rules both folder loaders share, and `folder_kind`.

One owner for "which files count" (visible files only, image suffixes, the
train/ and val/ split layout) so the image loader, the Speech Commands loader
and the dispatcher that chooses between them agree on every folder.

Raises DataError (a folder that holds neither images nor recordings, or both).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from edgesparse.errors import DataError

__all__ = [
    "ACCEPTED",
    "IMAGE_SUFFIXES",
    "SPLIT_DIRS",
    "WAV_SUFFIX",
    "FolderKind",
    "describe_files",
    "folder_kind",
    "is_image",
    "split_layout",
    "visible_entries",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
WAV_SUFFIX = ".wav"           # exactly as speech_folders.load_folder globs it (case-sensitive)
SPLIT_DIRS = ("train", "val", "validation", "test")
# What --data accepts, for the messages of every loader.
ACCEPTED = ("an .npz file (docs/data.md); a folder of images, one sub-folder per class "
            "(<label>/*.png|jpg|jpeg|bmp, optionally under train/ and val/); or a folder of recordings "
            "laid out like Speech Commands (<label>/*.wav)")

FolderKind = Literal["images", "wav"]


def visible_entries(path: Path) -> tuple[list[Path], list[Path]]:
    """Visible (no leading '.') sub-folders and files of `path`, each sorted by name."""
    dirs: list[Path] = []
    files: list[Path] = []
    for p in sorted(path.iterdir()):
        if p.name.startswith("."):
            continue
        (dirs if p.is_dir() else files).append(p)
    return dirs, files


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def describe_files(files: Sequence[Path]) -> str:
    """'12 .png, 3 .txt and 4 more': the five most common suffixes, for error messages."""
    counts = Counter(p.suffix or "(no suffix)" for p in files)
    common = counts.most_common(5)
    text = ", ".join(f"{n} {suffix}" for suffix, n in common)
    rest = sum(counts.values()) - sum(n for _, n in common)
    return text + (f" and {rest} more" if rest else "")


def split_layout(dirs: list[Path]) -> dict[str, Path] | None:
    """{'train': .., 'val': ..} when root holds train/ and val/ (or validation/) folders of class folders."""
    by_name = {d.name: d for d in dirs}
    val = by_name.get("val") or by_name.get("validation")
    train = by_name.get("train")
    if train is None or val is None or not visible_entries(train)[0]:
        return None
    return {"train": train, "val": val}


def folder_kind(root: Path | str) -> FolderKind:
    """What a `--data` directory holds: "images" or "wav" (Speech Commands layout).

    Looks one level into each sub-folder (two under train/ and val/). Raises
    DataError naming what was found, and what is accepted, for anything else:
    an empty folder, files with no class folder, other file types, or both
    images and recordings.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("The data folder does not exist", where=str(root), expected=ACCEPTED,
                        received="a file" if root.exists() else "no such folder", fix="Check the path passed to --data")
    dirs, files = visible_entries(root)
    inner: list[Path] = []
    class_dirs = list(dirs)
    split = split_layout(dirs)
    if split:
        class_dirs += [d for s in split.values() for d in visible_entries(s)[0]]
    for d in class_dirs:
        inner += visible_entries(d)[1]
    images = sum(is_image(p) for p in inner)
    wavs = sum(p.suffix == WAV_SUFFIX for p in inner)
    if images and wavs:
        raise DataError("The data folder holds both images and recordings", where=str(root),
                        expected="one kind: " + ACCEPTED,
                        received=f"{images} images and {wavs} .wav files in its sub-folders",
                        fix="Keep images and recordings in separate folders")
    if images:
        return "images"
    if wavs:
        return "wav"
    npz = [p for p in files if p.suffix == ".npz"]
    fix = (f"Pass the .npz file itself: --data {npz[0]}" if len(npz) == 1 else
           "Put each class's files in a sub-folder named after the class: <folder>/cat/1.png, <folder>/dog/2.png")
    raise DataError("The data folder holds no images or recordings in class sub-folders", where=str(root),
                    expected=ACCEPTED, received=_found(dirs, files, inner), fix=fix)


def _found(dirs: list[Path], files: list[Path], inner: list[Path]) -> str:
    """What a folder without images or recordings holds, in words."""
    if not dirs and not files:
        return "an empty folder"
    parts = []
    if files:
        parts.append(f"{len(files)} file(s) directly in it ({describe_files(files)})")
    if dirs:
        held = f"holding {len(inner)} file(s) ({describe_files(inner)})" if inner else "with no files in them"
        parts.append(f"{len(dirs)} sub-folder(s) ({', '.join(d.name for d in dirs[:5])}"
                     f"{', ...' if len(dirs) > 5 else ''}) {held}")
    return "; ".join(parts)
