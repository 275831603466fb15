"""The CPU device's native kernel library: LLVM IR generated with llvmlite, JIT-compiled for
the host (see ``isa``), cached on disk (``jit``), run on a native thread pool (``threadpool``).

Kernels: FP32 GEMM (``gemm``), convolution as implicit GEMM and depthwise (``conv``).
Importing this package compiles nothing; modules are built on first use.
"""
