"""Host CPU feature detection and the ISA levels the kernel generator targets.

Kernels are generated for one of three levels, best first:

- ``avx512``: 512-bit vectors, 32 vector registers (needs AVX-512F; BW/VL/VNNI/BF16 noted).
- ``avx2``: 256-bit vectors with FMA, 16 vector registers.
- ``generic``: 128-bit LLVM vectors that any LLVM target lowers (SSE2 on x86, NEON on Arm).

On top of ``avx512``, Intel's AMX tiles (Sapphire Rapids and later: ``amx-tile``,
``amx-int8``, ``amx-bf16``) run the int8 and bf16 GEMMs; the :class:`Isa` says so with
``amx_int8``/``amx_bf16``. Linux hands out AMX tile state only after a per-process request
(``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``): :func:`amx_permitted` makes it once;
when it is refused, kernels stay on AVX-512 (VNNI, BF16).

The best level the host supports is chosen unless ``EMBER_CPU_ISA`` (or the ``level``
argument of :func:`host_isa`) asks for a lower one; asking for a level the CPU lacks raises
:class:`~ember.errors.EmberError`. ``amx`` names the best level (``avx512`` with AMX tiles),
so ``EMBER_CPU_ISA=avx512`` keeps AVX-512 and switches AMX off. A lower level on x86 keeps the
host CPU name (for scheduling) and switches off every feature above the level, so the
generated code really runs with that level's instructions only.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass

import llvmlite.binding as llvm

from ember.errors import EmberError

LEVELS = ("avx512", "avx2", "generic")
ENV_VAR = "EMBER_CPU_ISA"
#: the name of ``avx512`` with AMX tiles, accepted by ``EMBER_CPU_ISA`` and :func:`host_isa`
AMX = "amx"

# Linux x86-64: SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18

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
    (``vpdpbusd``) and bf16 (``vdpbf16ps``) instructions are available at this level;
    ``amx_int8``/``amx_bf16`` whether the kernels use AMX tiles (``tdpbusd``, ``tdpbf16ps``).
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
    amx_int8: bool = False
    amx_bf16: bool = False

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
    return list(_supported_levels())


@functools.cache
def _supported_levels() -> tuple[str, ...]:
    # (asked once: LLVM's feature query costs ~0.15 ms, and every kernel bound without an ISA asks)
    llvm_init()
    feats = host_features()
    triple = llvm.get_process_triple()
    return tuple(lv for lv in LEVELS if _host_supports(lv, feats, triple))


def _feature_string(feats: dict[str, bool], off_prefixes: tuple[str, ...]) -> str:
    parts = []
    for name, on in sorted(feats.items()):
        if on and name.startswith(off_prefixes):
            on = False
        parts.append(("+" if on else "-") + name)
    return ",".join(parts)


def _amx_features(feats: dict[str, bool]) -> bool:
    return all(feats.get(f, False) for f in ("amx-tile", "amx-int8", "amx-bf16"))


@functools.cache
def amx_permitted() -> bool:
    """Ask Linux once for this process's AMX tile state (it is process-wide); True if granted.

    Any other OS, a non-x86-64 process or a refusal gives False, and the kernels stay on
    AVX-512. The request must come before any thread executes a tile instruction: it is made
    when the AMX :class:`Isa` is first built, before a kernel for it exists."""
    if not sys.platform.startswith("linux") or llvm.get_process_triple().split("-", 1)[0] != "x86_64":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def amx_supported() -> bool:
    """Whether this host runs the AMX kernels: AVX-512, AMX tile/int8/bf16, the OS allows it."""
    llvm_init()
    return ("avx512" in supported_levels() and _amx_features(host_features()) and amx_permitted())


@functools.cache
def _make_isa(level: str, amx: bool = False) -> Isa:
    llvm_init()
    feats = host_features()
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    if level == "avx512":
        if amx:
            return Isa(level, triple, cpu, _feature_string(feats, ()), 512, 32, True,
                       vnni=feats.get("avx512vnni", False), bf16=feats.get("avx512bf16", False),
                       amx_int8=True, amx_bf16=True)
        return Isa(level, triple, cpu, _feature_string(feats, ("amx",)), 512, 32, True,
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
    ``"amx"`` (AVX-512 with AMX tiles), ``"avx512"`` (without AMX), ``"avx2"`` or
    ``"generic"``; without either, the best the host supports (AMX when the CPU has it and
    the OS grants it).
    """
    want = level if level is not None else (os.environ.get(ENV_VAR) or None)
    levels = supported_levels()
    if want is None:
        return _make_isa(levels[0], levels[0] == "avx512" and amx_supported())
    want = want.strip().lower()
    if want == AMX:
        if not amx_supported():
            raise EmberError("ember: this CPU (or its OS) does not allow AMX tiles; "
                             f"it supports: {', '.join(levels)}")
        return _make_isa("avx512", True)
    if want not in LEVELS:
        raise EmberError(f"ember: unknown CPU ISA level {want!r}; known levels: {AMX}, {', '.join(LEVELS)}")
    if want not in levels:
        raise EmberError(f"ember: this CPU does not support ISA level {want!r}; "
                         f"it supports: {', '.join(levels)}")
    return _make_isa(want)
