"""Host CPU feature detection and the ISA levels the kernel generator targets.

Kernels are generated for one of three levels, best first:

- ``avx512``: 512-bit vectors, 32 vector registers (needs AVX-512F; BW/VL/VNNI/BF16 noted).
- ``avx2``: 256-bit vectors with FMA, 16 vector registers.
- ``generic``: 128-bit LLVM vectors that any LLVM target lowers (SSE2 on x86, NEON on Arm).

The best level the host supports is chosen unless ``EMBER_CPU_ISA`` (or the ``level``
argument of :func:`host_isa`) asks for a lower one; asking for a level the CPU lacks raises
:class:`~ember.errors.EmberError`. A lower level on x86 keeps the host CPU name (for
scheduling) and switches off every feature above the level, so the generated code really
runs with that level's instructions only.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import llvmlite.binding as llvm

from ember.errors import EmberError

LEVELS = ("avx512", "avx2", "generic")
ENV_VAR = "EMBER_CPU_ISA"

# Features at or above AVX, switched off for "generic"; AVX-512 family off for "avx2".
_AVX512_PREFIXES = ("avx512", "amx", "avx10", "evex512")
_AVX_PREFIXES = (*_AVX512_PREFIXES, "avx", "fma", "f16c", "vaes", "vpclmulqdq", "xop", "fma4")


@functools.cache
def llvm_init() -> None:
    """Initialise LLVM for the host target (once per process)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()


@dataclass(frozen=True)
class Isa:
    """One code-generation target: an ISA level plus the exact LLVM CPU name and features.

    ``vector_bits`` is the width kernels vectorize for; ``registers`` the number of vector
    registers the micro-kernels may plan for. ``vnni`` and ``bf16`` say whether the int8
    (``vpdpbusd``) and bf16 (``vdpbf16ps``) instructions are available at this level.
    """

    level: str
    triple: str
    cpu: str
    features: str
    vector_bits: int
    registers: int
    fma: bool
    vnni: bool = False
    bf16: bool = False

    @property
    def f32_lanes(self) -> int:
        return self.vector_bits // 32

    @property
    def key(self) -> str:
        """A string that identifies the generated code's target exactly (for cache keys)."""
        return f"{self.level}|{self.triple}|{self.cpu}|{self.features}"


def host_features() -> dict[str, bool]:
    """The host CPU's LLVM feature flags, e.g. ``{"avx512f": True, ...}``."""
    llvm_init()
    try:
        feats = llvm.get_host_cpu_features()
    except RuntimeError:  # some hosts cannot report features
        return {}
    return {k: bool(v) for k, v in feats.items()}


def _is_x86(triple: str) -> bool:
    arch = triple.split("-", 1)[0]
    return arch in ("x86_64", "i386", "i686", "amd64")


def _host_supports(level: str, feats: dict[str, bool], triple: str) -> bool:
    if level == "generic":
        return True
    if not _is_x86(triple):
        return False
    if level == "avx512":
        return all(feats.get(f, False) for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"))
    return feats.get("avx2", False) and feats.get("fma", False)


def supported_levels() -> list[str]:
    """The ISA levels this host can run, best first (always ends with ``generic``)."""
    llvm_init()
    feats = host_features()
    triple = llvm.get_process_triple()
    return [lv for lv in LEVELS if _host_supports(lv, feats, triple)]


def _feature_string(feats: dict[str, bool], off_prefixes: tuple[str, ...]) -> str:
    parts = []
    for name, on in sorted(feats.items()):
        if on and name.startswith(off_prefixes):
            on = False
        parts.append(("+" if on else "-") + name)
    return ",".join(parts)


@functools.cache
def _make_isa(level: str) -> Isa:
    llvm_init()
    feats = host_features()
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    if level == "avx512":
        return Isa(level, triple, cpu, _feature_string(feats, ()), 512, 32, True,
                   vnni=feats.get("avx512vnni", False), bf16=feats.get("avx512bf16", False))
    if level == "avx2":
        return Isa(level, triple, cpu, _feature_string(feats, _AVX512_PREFIXES), 256, 16, True,
                   vnni=feats.get("avxvnni", False))
    if _is_x86(triple):
        return Isa(level, triple, cpu, _feature_string(feats, _AVX_PREFIXES), 128, 16, False)
    regs = 32 if triple.startswith(("aarch64", "arm64")) else 16
    return Isa(level, triple, cpu, _feature_string(feats, ()), 128, regs, feats.get("neon", False))


def host_isa(level: str | None = None) -> Isa:
    """The ISA to generate kernels for.

    ``level`` (or else the ``EMBER_CPU_ISA`` environment variable) caps the level at
    ``"avx512"``, ``"avx2"`` or ``"generic"``; without either, the best the host supports.
    """
    want = level if level is not None else (os.environ.get(ENV_VAR) or None)
    levels = supported_levels()
    if want is None:
        return _make_isa(levels[0])
    want = want.strip().lower()
    if want not in LEVELS:
        raise EmberError(f"ember: unknown CPU ISA level {want!r}; known levels: {', '.join(LEVELS)}")
    if want not in levels:
        raise EmberError(f"ember: this CPU does not support ISA level {want!r}; "
                         f"it supports: {', '.join(levels)}")
    return _make_isa(want)
