"""Cache tampering: seeded mutations of a model cache entry (truncated, bytes flipped,
extended, emptied, header fields changed) never crash or change a result: the entry is
ignored (and rewritten), or loaded when it still holds the same model."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np

import ember
import ember.properties as props
from ember import opset
from ember.runtime.cache import MAGIC

CASES = int(os.environ.get("EMBER_FUZZ_CACHE_CASES", "60"))
SEED = int(os.environ.get("EMBER_FUZZ_SEED", "0"))


def _model() -> ember.Model:
    x = opset.parameter([2, 8], np.float32, name="x")
    w = opset.constant(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8))
    return ember.Model([opset.relu(opset.matmul(x, w, False, False))], [x], "cached")


def _tamper(data: bytes, rng: random.Random) -> bytes:
    raw = bytearray(data)
    kind = rng.choice(["truncate", "flip", "extend", "empty", "header", "swap", "magic"])
    if kind == "truncate":
        return bytes(raw[:rng.randrange(len(raw))])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return bytes(raw)
    if kind == "extend":
        return bytes(raw) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 100)))
    if kind == "empty":
        return b""
    if kind == "magic":
        return b"X" + bytes(raw[1:])
    start = len(MAGIC) + 4
    n = int.from_bytes(raw[len(MAGIC):start], "little")
    header = json.loads(raw[start:start + n])
    body = bytes(raw[start + n:])
    if kind == "header":
        key = rng.choice(["format", "key", "device", "ember", "sections"])
        header[key] = rng.choice([None, 0, -1, "x", [], {"a": 1}, 2**70])
    else:  # swap two sections' table entries
        s = header["sections"]
        i, j = rng.sample(range(len(s)), 2)
        s[i], s[j] = s[j], s[i]
    hb = json.dumps(header).encode()
    return MAGIC + len(hb).to_bytes(4, "little") + hb + body


def test_tampered_model_cache_entries(tmp_path: Path) -> None:
    model = _model()
    x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(2, 8)
    want = ember.compile_model(model, "REFERENCE")(x)[0]
    cfg = {props.cache_dir: str(tmp_path)}
    ember.Core().compile_model(model, "REFERENCE", cfg)
    entry, = tmp_path.glob("*.blob")
    pristine = entry.read_bytes()
    rng = random.Random(SEED)
    outcomes: Counter = Counter()
    for _ in range(CASES):
        tampered = _tamper(pristine, rng)
        entry.write_bytes(tampered)
        c = ember.Core().compile_model(model, "REFERENCE", cfg)
        np.testing.assert_array_equal(c(x)[0], want)
        loaded = c.get_property(props.loaded_from_cache)
        # Loaded only when it still means the same model (same bytes, or a reordered header
        # whose sections still check): the result above is then REFERENCE's.
        outcomes["loaded (same model)" if loaded else "ignored, recompiled"] += 1
        assert loaded or entry.read_bytes() == pristine, "the bad entry was not replaced"
    print(f"\ncache tampering: {CASES} cases: {dict(outcomes)}")
    assert outcomes["ignored, recompiled"] > 0
