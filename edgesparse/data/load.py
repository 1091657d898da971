"""The one `--data` dispatcher: an .npz file, a folder of images, or a Speech Commands folder.

Why one function: `build`, `sweep` and anything else that takes `--data` must
read a path the same way, and check it against the model before any file is
decoded (an image folder needs one class folder per output; recordings need a
keyword-spotting input and the 12 Speech Commands classes).

Raises DataError (a path that is none of the accepted kinds, or that does not
fit the model) and MissingDependency (Pillow, for image folders).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgesparse.data import audio
from edgesparse.data.dataset import Splits, load_npz
from edgesparse.data.folders import folder_kind
from edgesparse.data.images import load_image_folder
from edgesparse.data.speech_folders import KEYWORDS, LABELS, load_speech_folder
from edgesparse.errors import DataError

__all__ = ["load_data"]


def load_data(path: Path | str, *, input_shape: Sequence[int | None], num_outputs: int, seed: int = 0) -> Splits:
    """Read `--data` for a model with this per-sample `input_shape` and `num_outputs` classes.

    An .npz holds its own splits (no test split is read); an image folder is read
    at the model's input size and channel count; recordings become MLPerf MFCCs,
    with their test split (testing_list.txt, or a seeded share of the speakers).
    """
    path = Path(path)
    if not path.expanduser().is_dir():
        return Splits.without_test(load_npz(path))
    input_shape = tuple(input_shape)
    if folder_kind(path) == "images":
        dataset = load_image_folder(path, input_shape=input_shape, seed=seed)
        if dataset.num_classes != num_outputs:
            names = dataset.labels or []
            raise DataError("The image folder's classes do not match the model's outputs", where=str(path),
                            expected=f"one class folder per output ({num_outputs})",
                            received=f"{dataset.num_classes} class folders ({', '.join(names[:10])}"
                                     f"{', ...' if dataset.num_classes > 10 else ''})",
                            fix="Add or remove class folders, or give the model one output per class")
        return Splits.without_test(dataset)
    _check_speech_folder(path, input_shape, num_outputs)
    return load_speech_folder(path, seed=seed)


def _check_speech_folder(path: Path, input_shape: tuple[int | None, ...], num_outputs: int) -> None:
    """Recordings need a model with MLPerf Tiny KWS input and outputs, and at least one keyword folder."""
    want = tuple(audio.FEATURE_SHAPE)
    fits = len(input_shape) == len(want) and all(d is None or int(d) < 0 or int(d) == w
                                                  for d, w in zip(input_shape, want))
    if not fits or num_outputs != len(LABELS):
        raise DataError("A folder of .wav recordings needs a keyword-spotting model", where=str(path),
                        expected=f"a model with input {want} (MLPerf Tiny MFCCs) and {len(LABELS)} outputs "
                                 f"({', '.join(LABELS)})",
                        received=f"model input {tuple(input_shape)} and {num_outputs} outputs",
                        fix="Use a DS-CNN such as kws.build_ds_cnn(), or compute your own features and pass "
                            "an .npz (docs/data.md)")
    folders = {d.name.lower() for d in path.expanduser().iterdir() if d.is_dir()}
    if not folders & set(KEYWORDS):
        raise DataError("No folder of the recordings is a Speech Commands keyword", where=str(path),
                        expected=f"folders named after the keywords ({', '.join(KEYWORDS)}); "
                                 "every other folder is read as 'unknown'",
                        received=f"folders {', '.join(sorted(folders)[:8])}{', ...' if len(folders) > 8 else ''}",
                        fix="For other words use kws.load_folder(root, keywords=(...)) and kws.save_npz, "
                            "then pass the .npz (docs/kws.md)")
