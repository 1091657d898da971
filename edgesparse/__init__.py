"""edgesparse: take a Keras model to an edge device, pruned, quantized and checked."""

__version__ = "0.1.0"
