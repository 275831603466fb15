"""TFLite files made with tensorflow-cpu for the tests: Keras models with seeded weights, each
converted in float32, float16, dynamic-range int8 and full-integer int8 (calibrated on
scikit-image photos). Files are cached under ``~/.cache/ember/tflite-tests/tf-<version>/``
because TensorFlow's converter takes seconds per model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MODES = ("float32", "float16", "dynamic_int8", "full_int8")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ember" / "tflite-tests"


def photos(shape: tuple[int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` random crops of scikit-image's photos resized to ``shape``, NHWC in [0, 1]."""
    from skimage import data

    rng = np.random.default_rng(seed)
    imgs = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for k in range(count):
        img = imgs[k % len(imgs)][..., :3].astype(np.float32) / 255.0
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        ys = y0 + (np.arange(shape[0]) * side / shape[0]).astype(int)
        xs = x0 + (np.arange(shape[1]) * side / shape[1]).astype(int)
        out.append(np.ascontiguousarray(img[ys][:, xs][None]))
    return out


def _small_cnn():  # noqa: ANN202
    import tensorflow as tf

    layers = tf.keras.layers
    i = tf.keras.Input((32, 32, 3), batch_size=1)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(i)
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    y = layers.Conv2D(16, 1)(y)
    x = layers.Add()([x, y])
    x = layers.MaxPooling2D(2)(x)
    a = layers.AveragePooling2D(2, padding="same")(x)
    b = layers.Conv2D(8, 3, padding="valid")(x)
    b = layers.UpSampling2D(interpolation="bilinear")(b)
    b = layers.Conv2DTranspose(8, 3, strides=2, padding="same")(b)
    b = layers.Resizing(4, 4)(b)
    x = layers.Concatenate()([a, b])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10)(x)
    return tf.keras.Model(i, layers.Softmax()(x))


def randomize_batchnorm(model, seed: int = 1):  # noqa: ANN001, ANN201
    """Give every BatchNormalization layer random statistics: with Keras' initial ones (mean 0,
    variance 1, scale 1, shift 0) a deep network's features vanish and every output is equal."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights([rng.uniform(0.5, 1.5, shapes[0]), rng.normal(0, 0.1, shapes[1]),
                               rng.normal(0, 0.1, shapes[2]), rng.uniform(0.5, 1.5, shapes[3])])
    return model


def _mobilenet_v2():  # noqa: ANN202
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(input_shape=(128, 128, 3), alpha=0.5, weights=None,
                                              classifier_activation=None)
    return randomize_batchnorm(model)


BUILDERS = {"small_cnn": _small_cnn, "mobilenet_v2": _mobilenet_v2}


def tflite_file(name: str, mode: str) -> Path:
    """The cached ``.tflite`` of Keras model ``name`` converted in ``mode`` (made on first use)."""
    import tensorflow as tf

    folder = cache_root() / f"tf-{tf.__version__}"
    path = folder / f"{name}-{mode}.tflite"
    if path.exists():
        return path
    tf.keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if mode == "full_int8":
        hw = tuple(model.input_shape[1:3])
        conv.representative_dataset = lambda: ([x] for x in photos(hw, 16, seed=1))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data = conv.convert()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
