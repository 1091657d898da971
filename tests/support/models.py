"""Small tf_keras models with known sparsity patterns, shared by the conversion, flatbuffer-edit, strip, DECODE
and MCU tests."""

from types import SimpleNamespace

import numpy as np

from edgesparse.pipeline.convert import convert_keras
from edgesparse.pipeline.tf_env import import_tf

__all__ = ["PRUNED_CNN_INPUT", "SEED", "mixed_data", "mixed_model", "projection_data", "pruned_cnn", "pruned_cnn_int8"]

SEED = 0


def mixed_model():
    """Conv2D 32x3x3x1 with 80 % unstructured zeros -> Dense kernel 512x128, 80 % zero in 1x4 blocks.

    The two sparsity patterns the per-tensor rule must tell apart: the Dense
    kernel's CSR pays in int8, the small conv's index arrays cost more than its
    zeros save.
    """
    _, keras = import_tf()
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.layers.Input((16, 16, 1)),
        keras.layers.Conv2D(32, 3, strides=4, padding="same", activation="relu", name="conv"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(128, activation="relu", name="dense"),
        keras.layers.Dense(4, name="logits"),
    ])
    rng = np.random.default_rng(SEED)
    w, b = model.get_layer("conv").get_weights()
    model.get_layer("conv").set_weights([w * (rng.random(w.shape) >= 0.8), b])
    w, b = model.get_layer("dense").get_weights()          # Keras kernel (in=512, out=128)
    keep = rng.random((128, 512 // 4)) >= 0.8               # one draw per 1x4 block of the TFLite (out, in) kernel
    model.get_layer("dense").set_weights([w * np.repeat(keep, 4, axis=1).T, b])
    return model


def mixed_data(n: int = 64):
    x = np.random.default_rng(SEED + 1).normal(size=(n, 16, 16, 1)).astype(np.float32)
    return SimpleNamespace(x_train=x, y_train=np.zeros(n, np.int64), x_val=x[:16], y_val=np.zeros(16, np.int64))


PRUNED_CNN_INPUT = (8, 8, 1)


def pruned_cnn(*, dense=(64,), classes: int = 4, dw_strides: int = 1, sparsity: float = 0.8, seed: int = 0,
               bias_std: float = 0.0):
    """Conv 8x3x3 -> depthwise 3x3 -> Flatten -> Dense(`dense`) -> Dense(`classes`), every kernel `sparsity` zero.

    The small pruned CNN the DECODE, strip and MCU tests share: the first Dense
    ("fc", then "fc2", ...) is the kernel big enough for DECODE to pay. Biases
    stay Keras' zeros unless `bias_std` draws them (so a stripped or rewritten
    bias shows in the outputs).
    """
    return _pruned_cnn(np.random.default_rng(seed), dense=dense, classes=classes, dw_strides=dw_strides,
                       sparsity=sparsity, seed=seed, bias_std=bias_std)


def pruned_cnn_int8(*, samples: int = 32, dense=(64,), classes: int = 4, dw_strides: int = 1,
                    sparsity: float = 0.8, seed: int = 0, bias_std: float = 0.0):
    """(full-integer int8 .tflite of `pruned_cnn`, `samples` float inputs it was calibrated on).

    The inputs come from the same generator after the masks, so one seed fixes
    the model and its data together.
    """
    rng = np.random.default_rng(seed)
    model = _pruned_cnn(rng, dense=dense, classes=classes, dw_strides=dw_strides, sparsity=sparsity, seed=seed,
                        bias_std=bias_std)
    x = rng.normal(size=(samples, *PRUNED_CNN_INPUT)).astype(np.float32)
    return convert_keras(model, quantize="int8", representative=x), x


def _pruned_cnn(rng, *, dense, classes, dw_strides, sparsity, seed, bias_std):
    _, keras = import_tf()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.layers.Input(PRUNED_CNN_INPUT),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
        keras.layers.DepthwiseConv2D(3, strides=dw_strides, padding="same", activation="relu", name="dw"),
        keras.layers.Flatten(),
        *(keras.layers.Dense(units, activation="relu", name="fc" if i == 0 else f"fc{i + 1}")
          for i, units in enumerate(dense)),
        keras.layers.Dense(classes, name="logits"),
    ])
    for layer in model.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            kernel = kernel * (rng.random(kernel.shape) >= sparsity)     # drawn before the bias: the draw order
            if bias_std:                                                  # fixes every value the tests compare
                bias = rng.normal(size=bias.shape) * bias_std
            layer.set_weights([kernel, bias])
    return model


def projection_data(n=128, shape=(8, 8, 4), num_classes=4, n_val=32, seed=0):
    """Learnable synthetic data: the label is the argmax of a fixed projection."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + n_val, *shape)).astype("float32")
    proj = rng.normal(size=(int(np.prod(shape)), num_classes))
    y = np.argmax(x.reshape(len(x), -1) @ proj, axis=1).astype("int64")
    return SimpleNamespace(x_train=x[:n], y_train=y[:n], x_val=x[n:], y_val=y[n:],
                           num_classes=num_classes, source="synthetic", labels=None)
