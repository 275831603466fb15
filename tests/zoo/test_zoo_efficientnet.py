"""EfficientNet-Lite0 from the zoo: the same top-5 as the same weights run by PyTorch, sensible
labels on real photos, and the IR saved in the cache reads back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ember import zoo
from ember.runtime import Core
from ember.zoo.efficientnet import STAGES, preprocess, resize, to_rgb, top_k

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
COFFEE_CLASSES = {"espresso", "cup", "coffee mug"}


def torch_efficientnet_lite0(pth, x: np.ndarray) -> np.ndarray:
    """The same network in PyTorch, from torch's own loader and unfolded batch norms."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    sd = torch.load(pth, map_location="cpu", weights_only=True)

    def same_pad(t, k, s):  # TensorFlow SAME: the odd pixel goes at the end
        pads = []
        for size in (t.shape[3], t.shape[2]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(t, pads)

    def conv_bn(t, conv, bn, stride=1, groups=1, act=True):
        w = sd[f"{conv}.weight"]
        t = F.conv2d(same_pad(t, w.shape[-1], stride), w, stride=stride, groups=groups)
        t = F.batch_norm(t, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"],
                         sd[f"{bn}.bias"], training=False, eps=1e-3)
        return F.relu6(t) if act else t

    with torch.no_grad():
        t = conv_bn(torch.from_numpy(x), "_conv_stem", "_bn0", 2)
        i, cin = 0, 32
        for repeats, _k, stride, expand, cout in STAGES:
            for r in range(repeats):
                s, inp, p = (stride if r == 0 else 1), t, f"_blocks.{i}"
                if expand != 1:
                    t = conv_bn(t, f"{p}._expand_conv", f"{p}._bn0")
                t = conv_bn(t, f"{p}._depthwise_conv", f"{p}._bn1", s, groups=t.shape[1])
                t = conv_bn(t, f"{p}._project_conv", f"{p}._bn2", act=False)
                if s == 1 and cin == cout:
                    t = t + inp
                i, cin = i + 1, cout
        t = conv_bn(t, "_conv_head", "_bn1")
        return F.linear(t.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"]).numpy()


def test_preprocess_crops_resizes_and_normalizes() -> None:
    img = np.full((300, 400, 3), 127, np.uint8)
    img[:, :, 1] = 255
    x = preprocess(img)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(x[0, 1], 1.0, atol=1e-6)
    assert preprocess(np.zeros((50, 20), np.uint8)).shape == (1, 3, 224, 224)  # grey, tiny
    np.testing.assert_allclose(to_rgb(np.ones((2, 2, 4), np.float32)), 255.0)  # RGBA floats in [0, 1]


@pytest.mark.parametrize("size", [(10, 20), (224, 224), (37, 53), (80, 30), (1, 1)])
def test_resize_matches_pillow_bilinear(size: tuple[int, int]) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    img = np.random.default_rng(0).uniform(0, 255, (37, 53)).astype(np.float32)
    want = np.asarray(image_mod.fromarray(img, "F").resize(size[::-1], image_mod.BILINEAR))
    np.testing.assert_allclose(resize(img[:, :, None], *size)[:, :, 0], want, atol=1e-3)


def test_top_k_is_a_softmax_ranking() -> None:
    ranked = top_k(np.log(np.array([[0.1, 0.6, 0.3]])), 2)
    assert [i for i, _ in ranked] == [1, 2]
    np.testing.assert_allclose([p for _, p in ranked], [0.6, 0.3])


@pytest.mark.slow
def test_same_top5_as_pytorch_and_sensible_labels(effnet) -> None:
    skimage_data = pytest.importorskip("skimage.data", reason="the sample photos come with scikit-image")
    labels = zoo.imagenet_labels()
    compiled = Core().compile_model(str(effnet.xml), "REFERENCE")
    photos = {"cat": skimage_data.chelsea(), "coffee": skimage_data.coffee()}
    batch = np.concatenate([preprocess(p) for p in photos.values()])
    ours = compiled({0: batch})[0]
    top = {name: [labels[i] for i, _ in top_k(ours[n])] for n, name in enumerate(photos)}
    assert top["cat"][0] in CAT_CLASSES and set(top["cat"][:3]) <= CAT_CLASSES, top["cat"]
    assert top["coffee"][0] in COFFEE_CLASSES, top["coffee"]
    pth = next(iter(effnet.files.values()))
    theirs = torch_efficientnet_lite0(pth, batch)
    for n in range(len(photos)):
        assert [i for i, _ in top_k(ours[n])] == [i for i, _ in top_k(theirs[n])]
        np.testing.assert_allclose(ours[n], theirs[n], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_cached_ir_is_reused_and_matches_a_fresh_build(effnet, tmp_path) -> None:
    again = zoo.fetch("efficientnet-lite0")
    assert not again.converted and again.xml == effnet.xml
    from ember.zoo.efficientnet import convert

    fresh = Core().compile_model(convert(effnet.files), "REFERENCE")
    cached = Core().compile_model(str(effnet.xml), "REFERENCE")
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(fresh({0: x})[0], cached({0: x})[0])
