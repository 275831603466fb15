"""TFLite files made with tensorflow-cpu for the tests: Keras models with seeded weights, each
converted in float32, float16, dynamic-range int8 and full-integer int8 (calibrated on
scikit-image photos). Files are cached under ``~/.cache/ember/tflite-tests/tf-<version>/``
because TensorFlow's converter takes seconds per model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MODES = ("float32", "float16", "dynamic_int8", "full_int8")
# full_int8_io: full-integer with int8 model inputs and outputs (inference_input/output_type)


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
    if mode in ("full_int8", "full_int8_io"):
        hw = tuple(model.input_shape[1:3])
        conv.representative_dataset = lambda: ([x] for x in photos(hw, 16, seed=1))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if mode == "full_int8_io":
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    data = conv.convert()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _many_ops():  # noqa: ANN202
    """A tf.function using many builtin ops around an NHWC convolution (their NCHW and plain
    layout paths both), converted to TFLite by TensorFlow."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(3, 3, 4, 8)).astype(np.float32))
    m = tf.constant(rng.normal(size=(8, 6)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32)])
    def f(x):  # noqa: ANN001, ANN202
        y = tf.nn.relu6(tf.nn.conv2d(x, w, 1, "SAME"))                        # [1,8,8,8] NCHW inside
        a = tf.nn.leaky_relu(y, 0.1) * tf.sqrt(tf.abs(y) + 1.0) - tf.math.rsqrt(y * y + 1.0)
        a = tf.pad(a, [[0, 0], [1, 0], [0, 1], [0, 0]])                       # [1,9,9,8]
        a = tf.nn.max_pool2d(a, 3, 2, "VALID")                                # [1,4,4,8]
        d2s = tf.nn.depth_to_space(a, 2)                                      # [1,8,8,2]
        s2d = tf.nn.space_to_depth(tf.concat([d2s, d2s], axis=3), 2)          # [1,4,4,16]
        r = tf.image.resize(s2d, [8, 8], method="nearest")
        mean = tf.reduce_mean(r, axis=[1, 2])                                 # [1,16]
        mx = tf.reduce_max(a, axis=3, keepdims=True)                          # [1,4,4,1]
        t = tf.transpose(a, [0, 3, 1, 2])                                     # plain Transpose of NCHW
        sl = t[:, 1:7:2, ::-1, 1]                                             # strided slice
        parts = tf.split(a, 2, axis=3)
        st = tf.stack([parts[0], parts[1]], axis=1)                           # [1,2,4,4,4]
        g = tf.gather(tf.reshape(st, [2, 64]), [1, 0, 1], axis=0)             # [3,64]
        mm = tf.matmul(tf.reshape(a, [16, 8]), m)                             # [16,6]
        sm = tf.nn.softmax(mm) + tf.nn.l2_normalize(mm, axis=-1)
        am = tf.cast(tf.argmax(mm, axis=1), tf.float32)
        mir = tf.pad(x, [[0, 0], [2, 2], [1, 1], [0, 0]], mode="REFLECT")
        tl = tf.tile(tf.expand_dims(tf.squeeze(mx, 3), 1), [1, 2, 1, 1])
        return (mean, mx, sl, g, tf.minimum(sm, 0.5) + tf.maximum(am[:, None], 1.0), mir,
                tf.exp(-tf.abs(tl)) + tf.math.log(tf.abs(tl) + 1.0))

    return f


def many_ops_file() -> Path:
    """The cached ``.tflite`` of ``_many_ops`` (float32)."""
    import tensorflow as tf

    folder = cache_root() / f"tf-{tf.__version__}"
    path = folder / "many_ops-float32.tflite"
    if not path.exists():
        f = _many_ops()
        data = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path
