"""ISA detection and the JIT's on-disk object cache."""

import ctypes

import pytest
from llvmlite import ir

from ember.devices.cpu import isa as isa_mod
from ember.devices.cpu.codegen import I64, Emitter
from ember.devices.cpu.jit import Jit
from ember.errors import EmberError


def test_levels_and_override(monkeypatch):
    levels = isa_mod.supported_levels()
    assert levels[-1] == "generic"
    assert isa_mod.host_isa().level == levels[0]
    for level in levels:
        got = isa_mod.host_isa(level)
        assert got.level == level and got.f32_lanes * 32 == got.vector_bits
        monkeypatch.setenv(isa_mod.ENV_VAR, level)
        assert isa_mod.host_isa().level == level
    monkeypatch.setenv(isa_mod.ENV_VAR, "avx9000")
    with pytest.raises(EmberError, match="unknown CPU ISA level"):
        isa_mod.host_isa()


def test_lower_levels_switch_off_features():
    levels = isa_mod.supported_levels()
    if "avx2" in levels:
        feats = isa_mod.host_isa("avx2").features.split(",")
        assert "+avx2" in feats and not any(f.startswith("+avx512") for f in feats)
    feats = isa_mod.host_isa("generic").features.split(",")
    if isa_mod._is_x86(isa_mod.host_isa("generic").triple):
        assert not any(f.startswith(("+avx", "+fma")) for f in feats)


def _build_add(prefix: str, triple: str, k: int) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = triple
    fn = Emitter.function(m, f"{prefix}_addk", I64, [I64])
    e = Emitter(m, fn)
    e.b.ret(e.b.add(fn.args[0], ir.Constant(I64, k)))
    return m


def test_object_cache_hit_and_corruption(tmp_path):
    isa = isa_mod.host_isa()
    built = []

    def build(prefix):
        built.append(prefix)
        return _build_add(prefix, isa.triple, 5)

    sig = "test-addk|v1|k5"
    lib = Jit(tmp_path).load(sig, isa, build)
    assert not lib.from_cache and len(built) == 1
    assert lib.cfunc("addk", ctypes.c_int64, ctypes.c_int64)(10) == 15
    files = list(tmp_path.glob("*.o"))
    assert len(files) == 1

    lib = Jit(tmp_path).load(sig, isa, build)  # a fresh engine: served from disk
    assert lib.from_cache and len(built) == 1
    assert lib.cfunc("addk", ctypes.c_int64, ctypes.c_int64)(1) == 6

    data = bytearray(files[0].read_bytes())
    data[-10] ^= 0xFF
    files[0].write_bytes(bytes(data))
    lib = Jit(tmp_path).load(sig, isa, build)  # corrupt entry: ignored, rebuilt, rewritten
    assert not lib.from_cache and len(built) == 2
    assert lib.cfunc("addk", ctypes.c_int64, ctypes.c_int64)(2) == 7
    files[0].write_bytes(b"junk")
    lib = Jit(tmp_path).load(sig, isa, build)
    assert not lib.from_cache and lib.cfunc("addk", ctypes.c_int64, ctypes.c_int64)(0) == 5
    assert Jit(tmp_path).load(sig, isa, build).from_cache


def test_cache_off_and_distinct_signatures(tmp_path, monkeypatch):
    isa = isa_mod.host_isa()
    monkeypatch.setenv("EMBER_KERNEL_CACHE", "off")
    j = Jit()
    assert j.cache_dir is None
    a = j.load("test-addk|v1|k1", isa, lambda p: _build_add(p, isa.triple, 1))
    b = j.load("test-addk|v1|k2", isa, lambda p: _build_add(p, isa.triple, 2))
    assert a.prefix != b.prefix
    assert a.cfunc("addk", ctypes.c_int64, ctypes.c_int64)(0) == 1
    assert b.cfunc("addk", ctypes.c_int64, ctypes.c_int64)(0) == 2
    assert j.load("test-addk|v1|k1", isa, lambda p: None) is a  # loaded once per process
    monkeypatch.setenv("EMBER_KERNEL_CACHE", str(tmp_path / "k"))
    assert Jit().cache_dir == tmp_path / "k"
