"""User data for a build: the Dataset type, every loader, and the one `--data` dispatcher.

Numpy only (Pillow for pictures, imported when one is read): a data problem is
reported before TensorFlow is imported. `audio` is a module of its own because
it is copied byte for byte into device bundles; import it as
`from edgesparse.data import audio`.
"""

from __future__ import annotations

from edgesparse.data.dataset import (
    Dataset,
    Splits,
    absent_classes,
    check_compatible,
    generate_for_model,
    input_range,
    load_npz,
    representative_dataset,
    save_npz,
)
from edgesparse.data.folders import IMAGE_SUFFIXES, folder_kind
from edgesparse.data.images import load_image_folder, read_image
from edgesparse.data.load import load_data
from edgesparse.data.speech_folders import load_speech_folder

__all__ = [
    "IMAGE_SUFFIXES",
    "Dataset",
    "Splits",
    "absent_classes",
    "check_compatible",
    "folder_kind",
    "generate_for_model",
    "input_range",
    "load_data",
    "load_image_folder",
    "load_npz",
    "load_speech_folder",
    "read_image",
    "representative_dataset",
    "save_npz",
]
