"""Small tf_keras models with known sparsity patterns, shared by the conversion and flatbuffer-edit tests."""

from types import SimpleNamespace

import numpy as np

from edgesparse.pipeline.tf_env import import_tf

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
