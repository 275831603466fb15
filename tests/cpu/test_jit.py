"""ISA detection and the JIT's on-disk object cache."""

import ctypes
import hashlib
import hmac
import json
import os

import pytest
from llvmlite import ir

from ember.devices.cpu.llvm import isa as isa_mod
from ember.devices.cpu.llvm.codegen import I64, Emitter
from ember.devices.cpu.llvm.jit import CacheRecord, Jit, cache_key
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


def _addk(lib) -> ctypes._CFuncPtr:
    return lib.cfunc("addk", ctypes.c_int64, ctypes.c_int64)


def _entry(folder, lib):
    return folder / f"{lib.key}.o", folder / f"{lib.key}.json"


def test_object_cache_hit_and_corruption(tmp_path, caplog):
    isa = isa_mod.host_isa()
    built = []

    def build(prefix):
        built.append(prefix)
        return _build_add(prefix, isa.triple, 5)

    sig = "test-addk|k5"
    lib = Jit(tmp_path).load(sig, isa, build)
    assert not lib.from_cache and len(built) == 1
    assert _addk(lib)(10) == 15
    obj, rec = _entry(tmp_path, lib)
    assert obj.exists() and rec.exists()
    record = json.loads(rec.read_text())
    assert record["signature"] == sig and record["symbols"] == [f"{lib.prefix}_addk"]
    assert record["object_sha256"] == hashlib.sha256(obj.read_bytes()).hexdigest()

    lib = Jit(tmp_path).load(sig, isa, build)  # a fresh engine: served from disk, no IR built (index)
    assert lib.from_cache and _addk(lib)(1) == 6 and len(built) == 1

    good = obj.read_bytes()
    for bad in (good[:-10] + bytes(b ^ 0xFF for b in good[-10:]), b"junk", good[:len(good) // 2], b""):
        obj.write_bytes(bad)
        jit = Jit(tmp_path)
        with caplog.at_level("WARNING", "ember.cpu"):
            lib = jit.load(sig, isa, build)  # refused with a log line, rebuilt, rewritten
        assert not lib.from_cache and _addk(lib)(2) == 7
        assert jit.stats["cache_refused"] == 1 and "ignoring kernel cache entry" in caplog.text
        assert Jit(tmp_path).load(sig, isa, build).from_cache
    rec.write_text("{not json")
    assert not Jit(tmp_path).load(sig, isa, build).from_cache
    rec.unlink()
    assert not Jit(tmp_path).load(sig, isa, build).from_cache
    assert Jit(tmp_path).load(sig, isa, build).from_cache


def test_editing_an_emitter_changes_the_key(tmp_path):
    """Same signature, different IR text (an edited emitter): a new key, never the old code."""
    isa = isa_mod.host_isa()
    old = Jit(tmp_path).load("test-addk|edited", isa, lambda p: _build_add(p, isa.triple, 5))
    new = Jit(tmp_path).load("test-addk|edited", isa, lambda p: _build_add(p, isa.triple, 6))
    assert old.key != new.key and not new.from_cache
    assert _addk(new)(0) == 6
    assert cache_key("x", isa) != cache_key("y", isa)


def test_index_entry_is_checked(tmp_path, caplog):
    """The index (builder key -> IR key) only saves building IR: a forged or foreign entry is
    refused, and one pointing at another valid entry fails that entry's record check."""
    isa = isa_mod.host_isa()
    a = Jit(tmp_path).load("test-addk|idx1", isa, lambda p: _build_add(p, isa.triple, 1))
    Jit(tmp_path).load("test-addk|idx2", isa, lambda p: _build_add(p, isa.triple, 2))
    index = {json.loads(f.read_text())["key"]: f for f in tmp_path.glob("*.index")}
    assert a.key in index and len(index) == 2
    one, two = index[a.key], next(f for k, f in index.items() if k != a.key)
    forged = json.loads(one.read_text())
    forged["key"] = json.loads(two.read_text())["key"]  # points idx1's builder at idx2's object
    one.write_text(json.dumps(forged))
    with caplog.at_level("WARNING", "ember.cpu"):
        lib = Jit(tmp_path).load("test-addk|idx1", isa, lambda p: _build_add(p, isa.triple, 1))
    assert _addk(lib)(0) == 1 and "index" in caplog.text
    body = json.loads(one.read_text())  # rewritten by the rebuild: valid again, then re-pointed with its MAC
    body["key"] = json.loads(two.read_text())["key"]
    body.pop("mac")
    body["mac"] = hmac.new((tmp_path / ".secret").read_bytes(), json.dumps(body, sort_keys=True).encode(),
                           hashlib.sha256).hexdigest()
    one.write_text(json.dumps(body))
    lib = Jit(tmp_path).load("test-addk|idx1", isa, lambda p: _build_add(p, isa.triple, 1))
    assert _addk(lib)(0) == 1  # idx2's record names another signature: refused, rebuilt


def test_tampered_object_with_recomputed_checksum_is_refused(tmp_path):
    isa = isa_mod.host_isa()
    lib = Jit(tmp_path).load("test-addk|tamper", isa, lambda p: _build_add(p, isa.triple, 5))
    obj, rec = _entry(tmp_path, lib)
    data = bytearray(obj.read_bytes())
    data[data.index(b"ELF") + 20] ^= 0x5A
    obj.write_bytes(bytes(data))
    record = json.loads(rec.read_text())
    record["object_sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # checksum recomputed
    rec.write_text(json.dumps(record))
    jit = Jit(tmp_path)
    lib = jit.load("test-addk|tamper", isa, lambda p: _build_add(p, isa.triple, 5))
    assert not lib.from_cache and jit.stats["cache_refused"] == 1 and _addk(lib)(1) == 6


def test_swapped_entries_recompile(tmp_path):
    isa = isa_mod.host_isa()
    libs = [Jit(tmp_path).load(f"test-addk|swap{k}", isa, lambda p, k=k: _build_add(p, isa.triple, k))
            for k in (1, 2)]
    (o1, r1), (o2, r2) = (_entry(tmp_path, lib) for lib in libs)
    for a, b in ((o1, o2), (r1, r2)):  # objects swapped; then (entries rewritten) records swapped
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
        for k in (1, 2):
            jit = Jit(tmp_path)
            lib = jit.load(f"test-addk|swap{k}", isa, lambda p, k=k: _build_add(p, isa.triple, k))
            assert not lib.from_cache and jit.stats["cache_refused"] == 1 and _addk(lib)(0) == k


def test_planted_object_with_the_right_symbol_is_never_loaded(tmp_path):
    """An object with the genuine symbol name but other code (another IR hash), with a record
    that is otherwise perfect (even MAC'd with the user's secret), is refused."""
    isa = isa_mod.host_isa()
    sig = "test-addk|planted"
    genuine = Jit(tmp_path).load(sig, isa, lambda p: _build_add(p, isa.triple, 5))
    obj, rec = _entry(tmp_path, genuine)
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    (evil_dir / ".secret").write_bytes((tmp_path / ".secret").read_bytes())
    evil = Jit(evil_dir).load(sig, isa, lambda p: _build_add(p, isa.triple, 1000))
    assert evil.prefix == genuine.prefix  # same symbol names
    eobj, erec = _entry(evil_dir, evil)
    obj.write_bytes(eobj.read_bytes())
    record = json.loads(erec.read_text())
    record["key"] = genuine.key
    body = {k: v for k, v in record.items() if k != "mac"}
    body["symbols"], body["versions"] = tuple(body["symbols"]), tuple(tuple(v) for v in body["versions"])
    rec.write_bytes(CacheRecord(**body).to_json((tmp_path / ".secret").read_bytes()))
    jit = Jit(tmp_path)
    lib = jit.load(sig, isa, lambda p: _build_add(p, isa.triple, 5))
    assert not lib.from_cache and jit.stats["cache_refused"] == 1 and _addk(lib)(0) == 5
    # without the secret, a record is refused whatever it says
    (tmp_path / ".secret").write_bytes(b"another user's secret, 32 bytes!")
    assert not Jit(tmp_path).load(sig, isa, lambda p: _build_add(p, isa.triple, 5)).from_cache


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX ownership")
def test_unsafe_folders_and_files_are_refused(tmp_path, caplog):
    isa = isa_mod.host_isa()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    jit = Jit(shared)
    with caplog.at_level("WARNING", "ember.cpu"):
        lib = jit.load("test-addk|shared", isa, lambda p: _build_add(p, isa.triple, 3))
    assert _addk(lib)(0) == 3 and not lib.from_cache
    assert "not using the kernel cache folder" in caplog.text and "group or others can write" in caplog.text
    assert list(shared.iterdir()) == []  # compiled in memory only, nothing written
    if os.geteuid() == 0:  # a folder of another user
        other = tmp_path / "other"
        other.mkdir(mode=0o755)
        os.chown(other, 12345, 12345)
        jit = Jit(other)
        assert _addk(jit.load("test-addk|other", isa, lambda p: _build_add(p, isa.triple, 4)))(0) == 4
        assert "owned by uid 12345" in (jit.cache.refused or "") and list(other.iterdir()) == []
    own = tmp_path / "own"
    lib = Jit(own).load("test-addk|own", isa, lambda p: _build_add(p, isa.triple, 2))
    obj, rec = _entry(own, lib)
    assert (own.stat().st_mode & 0o777) == 0o700 and ((own / ".secret").stat().st_mode & 0o077) == 0
    obj.chmod(0o666)  # an entry others can write
    assert not Jit(own).load("test-addk|own", isa, lambda p: _build_add(p, isa.triple, 2)).from_cache
    assert Jit(own).load("test-addk|own", isa, lambda p: _build_add(p, isa.triple, 2)).from_cache
    target = tmp_path / "elsewhere.json"
    target.write_bytes(rec.read_bytes())
    rec.unlink()
    rec.symlink_to(target)  # a symlinked entry
    lib = Jit(own).load("test-addk|own", isa, lambda p: _build_add(p, isa.triple, 2))
    assert not lib.from_cache and _addk(lib)(0) == 2


def test_cache_off_and_distinct_signatures(tmp_path, monkeypatch):
    isa = isa_mod.host_isa()
    monkeypatch.setenv("EMBER_KERNEL_CACHE", "off")
    j = Jit()
    assert j.cache_dir is None
    a = j.load("test-addk|k1", isa, lambda p: _build_add(p, isa.triple, 1))
    b = j.load("test-addk|k2", isa, lambda p: _build_add(p, isa.triple, 2))
    assert a.prefix != b.prefix
    assert _addk(a)(0) == 1
    assert _addk(b)(0) == 2
    assert j.load("test-addk|k1", isa, lambda p: None) is a  # loaded once per process
    monkeypatch.setenv("EMBER_KERNEL_CACHE", str(tmp_path / "k"))
    assert Jit().cache_dir == tmp_path / "k"


def test_cache_tampering_fuzz(tmp_path):
    """Seeded mutations of every cache file kind (bit flips, truncation, junk, another entry's
    file, deletion): each load gives the genuine function, never an exception or foreign code."""
    import random

    isa = isa_mod.host_isa()
    builders = {k: (f"test-addk|fuzz{k}", lambda p, k=k: _build_add(p, isa.triple, k)) for k in (3, 4)}
    for sig, build in builders.values():
        Jit(tmp_path).load(sig, isa, build)
    files = sorted(p for p in tmp_path.iterdir() if p.suffix in (".o", ".json", ".index"))
    rng = random.Random(1234)
    outcomes = {"cache": 0, "rebuilt": 0}
    for _ in range(40):
        path = rng.choice(files)
        data = path.read_bytes() if path.exists() else b""
        how = rng.choice(["flip", "truncate", "junk", "other", "delete"])
        if how == "flip" and data:
            i = rng.randrange(len(data))
            path.write_bytes(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:])
        elif how == "truncate":
            path.write_bytes(data[:rng.randrange(len(data) + 1)])
        elif how == "junk":
            path.write_bytes(data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
        elif how == "other":
            other = rng.choice([f for f in files if f.suffix == path.suffix and f != path] or [path])
            if other.exists():
                path.write_bytes(other.read_bytes())
        elif path.exists():
            path.unlink()
        k = rng.choice(list(builders))
        sig, build = builders[k]
        lib = Jit(tmp_path).load(sig, isa, build)
        assert _addk(lib)(0) == k
        outcomes["cache" if lib.from_cache else "rebuilt"] += 1
    assert outcomes["rebuilt"] > 0 and sum(outcomes.values()) == 40
