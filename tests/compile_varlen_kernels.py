"""Compile the varlen attention kernels for NVIDIA GPUs on a machine without one.

Triton's interpreter runs the kernels' arithmetic on the CPU but accepts code that the compiler
refuses (plain Python globals, some type mixes). This script lowers every kernel, with the launch
tiles `kernel_blocks` picks, through Triton's whole pipeline (TTIR, TTGIR, LLVM IR, PTX, and a
cubin from the ptxas bundled with Triton) for a GPU architecture, and checks that each needs no more
shared memory than the smallest GPU of that generation offers. No GPU is needed.

    python tests/compile_varlen_kernels.py 90 bf16,fp16,fp32 32,64,128    # arch, dtypes, head sizes

Prints one line per kernel and exits 1 if one does not fit. Used by a slow test in
test_varlen_kernel.py; TRITON_INTERPRET must be unset.
"""

import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from minibert.model.kernels import varlen_kernels as kernels
from minibert.model.kernels.varlen_attention import DELTA_ROWS, KEEP_TILE, kernel_blocks

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Shared memory per block (opt-in maximum) of the smallest GPU of each generation: sm_80 A100
# 163 KB, sm_86/sm_89 (RTX 30xx/40xx, L4) 99 KB, sm_90 H100/H200 227 KB.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
POINTERS = ("Q", "K", "V", "Out", "GradOut", "GradQ", "GradK", "GradV")


def signature(fn, dtype: str, constants: dict) -> dict[str, str]:
    """Triton argument types: tensors of the input dtype, fp32 Lse/Delta, int32 cu_seqlens, an
    int64 seed (as `draw_seed_offset` guarantees), fp32 scalars, int32 strides and sizes."""
    types = dict.fromkeys(POINTERS, f"*{dtype}")
    types.update(Lse="*fp32", Delta="*fp32", cu_seqlens="*i32", Keep="*i8", seed="i64", scale="fp32", dropout_p="fp32")
    return {name: "constexpr" if name in constants else types.get(name, "i32") for name in fn.arg_names}


def compile_one(fn, target: GPUTarget, dtype: str, constants: dict, warps: int, stages: int) -> int:
    """Compiles down to a cubin; returns the shared memory the kernel needs (bytes)."""
    source = ASTSource(fn, signature(fn, dtype, constants), constants)
    return triton.compile(source, target=target, options=dict(num_warps=warps, num_stages=stages)).metadata.shared


def main(arch: int, dtypes: list[str], head_dims: list[int]) -> int:
    target = GPUTarget("cuda", arch, 32)
    failures = 0

    def report(name, shared):
        nonlocal failures
        fits = shared <= SHARED_LIMIT[arch]
        failures += not fits
        print(f"sm_{arch} {name:58} shared {shared:7d} B {'ok' if fits else 'OVER THE LIMIT'}", flush=True)

    for dtype in dtypes:
        for head_dim in head_dims:
            block_d = max(16, triton.next_power_of_2(head_dim))
            precision = "ieee" if dtype == "fp32" else "tf32"
            for kernel, fn in (("forward", kernels.forward_kernel), ("keys", kernels.key_gradients_kernel),
                               ("queries", kernels.query_gradients_kernel)):
                tile = kernel_blocks(head_dim, DTYPES[dtype])[kernel]
                for dropout in (False, True):
                    constants = dict(HEAD_DIM=head_dim, BLOCK_M=tile.m, BLOCK_N=tile.n, BLOCK_D=block_d,
                                     DROPOUT=dropout, PRECISION=precision)
                    shared = compile_one(fn, target, dtype, constants, tile.warps, tile.stages)
                    report(f"{fn.__name__} {dtype} D={head_dim} {tile} dropout={dropout}", shared)
            constants = dict(HEAD_DIM=head_dim, BLOCK_M=DELTA_ROWS, BLOCK_D=block_d)
            shared = compile_one(kernels.delta_kernel, target, dtype, constants, 4, 1)
            report(f"delta_kernel {dtype} D={head_dim}", shared)
    constants = dict(BLOCK_M=KEEP_TILE.m, BLOCK_N=KEEP_TILE.n)
    report("keep_mask_kernel", compile_one(kernels.keep_mask_kernel, target, "fp32", constants, 4, 1))
    return 1 if failures else 0


if __name__ == "__main__":
    arch, dtypes, head_dims = sys.argv[1:4]
    sys.exit(main(int(arch), dtypes.split(","), [int(d) for d in head_dims.split(",")]))
