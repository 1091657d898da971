"""edgesparse: take a Keras model to an edge device, pruned, quantized and checked."""

__all__ = ["__version__"]

# The one version source: pyproject.toml reads it ([tool.setuptools.dynamic]).
__version__ = "0.1.0"
