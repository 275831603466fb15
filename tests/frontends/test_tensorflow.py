"""The TensorFlow frontend against TensorFlow itself: Keras MobileNetV2, ResNet50 (weights=None,
seeded, random BatchNorm statistics) and a small text model, each converted as a SavedModel
folder, a frozen GraphDef ``.pb`` and an in-memory model; IR read by real OpenVINO."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
from tflite_makers import cache_root, randomize_batchnorm

import ember as ov
from ember.devices.reference.executor import run_model
from ember.errors import UnsupportedOpError

tf = pytest.importorskip("tensorflow", reason="tensorflow-cpu is a test extra")


def _mobilenet_v2():  # noqa: ANN202
    return randomize_batchnorm(tf.keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, classifier_activation=None))


def _resnet50():  # noqa: ANN202
    return randomize_batchnorm(tf.keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None))


def _text():  # noqa: ANN202
    layers = tf.keras.layers
    i = tf.keras.Input((12,), dtype="int32")
    x = layers.Embedding(100, 16)(i)
    x = layers.LSTM(24)(x)
    return tf.keras.Model(i, layers.Dense(5)(x))


BUILDERS = {"mobilenet_v2": _mobilenet_v2, "resnet50": _resnet50, "text": _text}


@functools.cache
def keras_model(name: str):  # noqa: ANN201
    tf.keras.utils.set_random_seed(0)
    return BUILDERS[name]()


def sample(name: str, batch: int = 2) -> np.ndarray:
    rng = np.random.default_rng(3)
    if name == "text":
        return rng.integers(0, 100, (batch, 12)).astype(np.int32)
    shape = keras_model(name).inputs[0].shape
    return rng.random((batch, *shape[1:])).astype(np.float32)


def _freeze(model) -> object:  # noqa: ANN001
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    specs = [tf.TensorSpec(t.shape, t.dtype) for t in model.inputs]
    func = tf.function(lambda x: model(x)).get_concrete_function(*specs)
    return convert_variables_to_constants_v2(func, lower_control_flow=False)


def as_form(name: str, form: str) -> object:
    """The Keras model itself, or its SavedModel folder / frozen .pb, made once and cached
    (Keras' export takes tens of seconds)."""
    if form == "keras":
        return keras_model(name)
    folder = cache_root() / f"tf-{tf.__version__}"
    path = folder / (f"{name}_saved" if form == "saved_model" else f"{name}.pb")
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}"
        if form == "saved_model":
            keras_model(name).export(str(tmp), verbose=False)
        else:
            tmp.write_bytes(_freeze(keras_model(name)).graph.as_graph_def().SerializeToString())
        os.replace(tmp, path)
    return path


@functools.cache
def converted(name: str, form: str) -> ov.Model:
    return ov.convert_model(as_form(name, form))


def check(name: str, form: str) -> ov.Model:
    model = converted(name, form)
    x = sample(name)
    want = keras_model(name)(x).numpy()
    got = np.asarray(run_model(model, [x])[0])
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= 1e-4, f"{err:.2e} of the output's magnitude"
    return model


def test_mobilenet_v2_in_memory() -> None:
    model = check("mobilenet_v2", "keras")
    transposes = [n for n in model.get_ordered_ops() if n.type_name == "Transpose"]
    assert len(transposes) <= 1  # the NHWC input, once


@pytest.mark.slow
def test_mobilenet_v2_saved_model_with_signature_names() -> None:
    model = check("mobilenet_v2", "saved_model")
    sig = tf.saved_model.load(str(as_form("mobilenet_v2", "saved_model"))).signatures["serving_default"]
    assert [p.any_name for p in model.inputs] == [s.name for s in sig.structured_input_signature[1].values()]
    assert [p.any_name for p in model.outputs] == sorted(sig.structured_outputs)


@pytest.mark.slow
def test_mobilenet_v2_frozen_pb() -> None:
    check("mobilenet_v2", "frozen_pb")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["frozen_pb", "saved_model", "keras"])
def test_resnet50(form: str) -> None:
    """ResNet50 (weights=None, seeded) in every form; the SavedModel and in-memory forms take
    TensorFlow 20-30 s to load and freeze (slow tier)."""
    check("resnet50", form)


@pytest.mark.parametrize("form", ["keras", "saved_model", "frozen_pb"])
def test_text_model_embedding_lstm_dense(form: str) -> None:
    """Keras' LSTM is a While loop over TensorLists: a Loop reading the sequence with Gather."""
    model = check("text", form)
    assert sum(n.type_name == "Loop" for n in model.get_ordered_ops()) == 1


def test_unsupported_ops_are_listed_at_once() -> None:
    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
    def f(x):  # noqa: ANN001, ANN202
        return tf.math.cumprod(tf.linalg.diag(x), axis=0) + tf.math.lgamma(x)[None]

    with pytest.raises(UnsupportedOpError) as err:
        ov.convert_model(f)
    msg = str(err.value)
    assert "Cumprod" in msg and "Lgamma" in msg and "MatrixDiagV3" in msg


@pytest.mark.parametrize("name", ["mobilenet_v2", "text"])
def test_ir_read_by_openvino(name: str, tmp_path: Path) -> None:
    openvino = pytest.importorskip("openvino")
    model = converted(name, "keras")
    ov.save_model(model, tmp_path / "m.xml", compress_to_fp16=False)
    compiled = openvino.Core().compile_model(str(tmp_path / "m.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = sample(name, 1)
    want = keras_model(name)(x).numpy()
    got = compiled([x])[compiled.output(0)]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_many_ops_tf_function() -> None:
    """The TFLite tests' many-op tf.function, through the TensorFlow frontend this time."""
    from tflite_makers import _many_ops

    f = _many_ops()
    x = np.random.default_rng(4).random((1, 8, 8, 4)).astype(np.float32)
    want = [t.numpy() for t in f(tf.constant(x))]
    got = run_model(ov.convert_model(f), [x])
    assert len(got) == len(want) == 7
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= 1e-5 * max(np.abs(w).max(), 1.0)
