"""The CPU device: native kernels generated as LLVM IR with llvmlite and JIT-compiled for the
host. See README.md in this folder for the map.

- ``device``: the plugin (``CPUDevice``) and the executables the runtime drives.
- ``lowering/``: graph -> plan (one rule per op type in one table; the CPU's graph passes).
- ``kernels/``: one module per kernel family (gemm, batched_gemm, conv, depthwise, pool,
  eltwise, movement, norm, attention).
- ``llvm/``: ISA detection, the JIT and its on-disk cache, the IR emitter, the shared vector
  helpers and the typed kernel contexts.
- ``runtime/``: the plan, memory planning, bound kernel calls, the native runner and thread pool.

Importing this package compiles nothing; modules are built on first use.
"""

from ember.devices.cpu import ops as _ops  # noqa: E402,F401 - registers the device's ops (cached runtime models hold them)
