"""The built-in demos `edgesparse build` runs without --model: digits (scikit-learn) and kws (espeak-ng).

Each trains its dense model once and caches it (demos.cache); demos.training
holds the deterministic training pieces they share.
"""

__all__: list[str] = []
