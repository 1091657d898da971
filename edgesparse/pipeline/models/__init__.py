"""Load Keras models (.keras, .h5, SavedModel) as tf_keras models TFMOT can prune.

`stored` detects the format and reads the stored config without deserializing
anything, `vetting` refuses code-carrying files unless trusted, `keras3`
rebuilds Keras 3 models in tf_keras (checked numerically), and `load` strings
them together. Raises ModelError.
"""

from __future__ import annotations

from edgesparse.pipeline.models.keras3 import KERAS3_RTOL
from edgesparse.pipeline.models.load import LoadedModel, load_model, safe_name
from edgesparse.pipeline.models.stored import FORMATS, SUPPORTED
from edgesparse.pipeline.models.vetting import TRUST_FIX

__all__ = ["FORMATS", "KERAS3_RTOL", "SUPPORTED", "TRUST_FIX", "LoadedModel", "load_model", "safe_name"]
