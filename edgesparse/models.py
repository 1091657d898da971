"""Load Keras models (.keras, .h5, SavedModel) as tf_keras models TFMOT can prune.

CONTRACT (owned by the models/data work; pipeline.py relies on it):
    load_model(path, *, trust_model=False) -> LoadedModel
    LoadedModel: model (tf_keras.Model), path (Path), format ("keras"|"h5"|"savedmodel"),
                 name (str, used for the build directory), rebuilt_from_keras3 (bool),
                 rebuild_max_abs_error (float | None)
    Raises ModelError for: missing path, a file that is not a model, Lambda layers or
    custom objects without trust_model=True (checked on the stored config BEFORE
    anything is deserialized), a Keras 3 model that cannot be rebuilt faithfully.
"""
