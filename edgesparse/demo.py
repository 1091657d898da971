"""The built-in demo: a small CNN on scikit-learn's handwritten digits (8x8, 10 classes).

CONTRACT:
    DEMO_NAME = "digits"
    cache_dir() -> Path                        # $EDGESPARSE_CACHE or ~/.cache/edgesparse
    load_digits_dataset(seed=0) -> data.Dataset
    build_digits_model() -> tf_keras.Model      # dense float, uncompiled
    demo_model(cache=None, progress=None) -> tuple[tf_keras.Model, data.Dataset]
        trains once, deterministically, and caches the dense model; later calls load it.
"""
