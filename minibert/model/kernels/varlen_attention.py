"""Fused attention over packed variable-length sequences, forward and backward, in Triton.

`varlen_attention(q, k, v, cu_seqlens, max_seqlen)` computes, for every sequence of a packed batch
and every head, softmax(q k^T * scale) v over the keys of the same sequence (BERT attends in both
directions: no causal mask). FlashAttention-2 (Dao 2023): online softmax in blocks, fp32
log-sum-exp saved for backward, P recomputed there; nothing T x T is ever stored. Dropout on the
probabilities comes from Philox counters keyed by a seed and offset drawn from torch's CPU
generator in forward, so backward regenerates the same mask and torch.manual_seed repeats it.

Importing this module needs Triton (`pip install -e ".[gpu]"`). The kernels run on CUDA; on the
CPU they run only under TRITON_INTERPRET=1 (set before this module is imported), which the tests use.

Shapes: T total tokens of the batch, B sequences, N heads, D head size (up to 128).
Dtypes: q, k, v fp32, bf16 or fp16 (one dtype); products accumulate in fp32; the log-sum-exp is
fp32 (N, T), FlashAttention-2's varlen layout.
"""

import math
from collections.abc import Callable
from dataclasses import astuple, dataclass

import torch
import triton

from minibert.errors import MinibertError
from minibert.model.kernels import varlen_kernels as kernels

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_HEAD_DIM = 128


@dataclass(frozen=True)
class Blocks:
    """Launch shape of one kernel: BM query rows x BN keys per tile, warps and pipeline stages."""

    m: int
    n: int
    warps: int = 4
    stages: int = 3


# Rows per program of the delta kernel, and the tile of the keep-mask kernel (test-sized shapes).
DELTA_ROWS = 64
KEEP_TILE = Blocks(16, 64)


def kernel_blocks(head_dim: int, dtype: torch.dtype) -> dict[str, Blocks]:
    """Tiles of the forward, dk/dv ("keys") and dq ("queries") kernels for a head size and dtype.

    BM and BN are multiples of 16 (tl.dot) and BN of 4 (`_keep_mask`). Forward holds a 128-query
    block and streams the keys; the dk/dv kernel holds a key block and streams query blocks of BM,
    the dq kernel the reverse, as in Triton's fused-attention tutorial. fp32 tiles are halved with
    two stages to stay under 100 KB of shared memory; tests/compile_varlen_kernels.py checks every
    table entry against sm_80, sm_89 and sm_90.

    Measured on an H200 (Triton 3.6, benchmarks/varlen_tiles.py, bf16): at head sizes over 64, a
    dk/dv kernel streaming 16 or 32 queries per step gave wrong dk in bf16 and fp16 (errors 20-370
    times SDPA's, with 4 or 8 warps, 2 or 3 stages; dq and dv right); both tiles tried with 64 were
    right (1.0-1.3 times SDPA's error), so it streams 64 there. The fp32 tiles were right at head
    sizes 64 and 128. At head size 64 the table's own speed ratio to flash SDPA spread over
    1.58-1.89 on mixed lengths within one run; one candidate measured above that (forward 128 x 32,
    4 warps: 2.04, and 0.85 at 512 tokens like the table), too little from one run to change the table.
    """
    warps = 8 if head_dim > 64 else 4
    if dtype == torch.float32:
        return {
            "forward": Blocks(64, 32, warps, stages=2),
            "keys": Blocks(32, 64, warps, stages=2),
            "queries": Blocks(32, 32, warps, stages=2),
        }
    return {
        "forward": Blocks(128, 64, warps),
        "keys": Blocks(64, 64, 4) if head_dim > 64 else Blocks(32, 128, warps),
        "queries": Blocks(64 if head_dim > 64 else 128, 32, warps),
    }


@dataclass(frozen=True)
class Tiles:
    """The launch shapes of every kernel of one call: `kernel_blocks`' table for the head size and
    dtype unless a caller gives its own (tests give tiles of 16 so that short sequences cross
    several blocks of each kernel; a tile search passes its candidates)."""

    forward: Blocks
    keys: Blocks  # the dk/dv kernel
    queries: Blocks  # the dq kernel
    delta_rows: int = DELTA_ROWS
    keep: Blocks = KEEP_TILE  # `philox_keep_mask`'s kernel

    @classmethod
    def table(cls, head_dim: int, dtype: torch.dtype) -> "Tiles":
        """The tiles the kernels run with by default: `kernel_blocks`' for the head size and dtype."""
        return cls(**kernel_blocks(head_dim, dtype))

    def as_ints(self) -> list[int]:
        """The tiles as the flat list of ints the custom ops take (their schema holds no dataclass)."""
        return [*astuple(self.forward), *astuple(self.keys), *astuple(self.queries), self.delta_rows,
                *astuple(self.keep)]

    @classmethod
    def from_ints(cls, ints: list[int]) -> "Tiles":
        """The inverse of `as_ints`."""
        forward, keys, queries = (Blocks(*ints[i:i + 4]) for i in (0, 4, 8))
        return cls(forward, keys, queries, ints[12], Blocks(*ints[13:17]))


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs get full fp32 products ("ieee"), as torch.matmul by default; TF32 would round the
    # inputs to 10 mantissa bits. bf16/fp16 run on the tensor cores either way.
    return "ieee" if dtype == torch.float32 else "tf32"


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    """One clear line for each way the inputs cannot work (no device sync: values are not read)."""
    if q.dim() != 3 or k.shape != q.shape or v.shape != q.shape:
        shapes = ", ".join(str(tuple(t.shape)) for t in (q, k, v))
        raise MinibertError(f"varlen_attention: q, k, v must share one shape (T, N, D), got {shapes}")
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        dtypes = ", ".join(str(t.dtype) for t in (q, k, v))
        raise MinibertError(f"varlen_attention: q, k, v must share one of fp32/bf16/fp16, got {dtypes}")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise MinibertError(f"varlen_attention: head size {q.shape[-1]} is over the supported {MAX_HEAD_DIM}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or cu_seqlens.device != q.device:
        got = f"{cu_seqlens.dtype} {tuple(cu_seqlens.shape)} on {cu_seqlens.device}"
        raise MinibertError(f"varlen_attention: cu_seqlens must be int32 (B + 1,) on {q.device}, got {got}")
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        raise MinibertError("varlen_attention: q, k, v need a contiguous last (head size) dimension")
    if any(t.shape[0] * t.stride(0) >= 2**31 for t in (q, k, v)):
        # The kernels index with 32-bit offsets (Triton's default for integer arguments).
        raise MinibertError(f"varlen_attention: {q.shape[0]} tokens span 2^31 elements or more; split the batch")


def _token_head_strides(t: torch.Tensor) -> tuple[int, int]:
    return t.stride(0), t.stride(1)


def _common(q: torch.Tensor, blocks: Blocks) -> dict:
    """Compile-time arguments shared by the attention kernels."""
    D = q.shape[-1]
    return dict(
        HEAD_DIM=D, BLOCK_M=blocks.m, BLOCK_N=blocks.n, BLOCK_D=max(16, triton.next_power_of_2(D)),
        num_warps=blocks.warps, num_stages=blocks.stages,
    )


def varlen_attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
    dropout_p: float, softmax_scale: float, seed: int, offset: int, tiles: Tiles | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel alone: returns out (T, N, D) in q's dtype and the fp32 log-sum-exp (N, T)
    of the scaled scores (before dropout). `seed`, `offset` pick the dropout mask (`philox_keep_mask`);
    `tiles` defaults to the table's (`Tiles.table`)."""
    T, N, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((N, T), dtype=torch.float32, device=q.device)
    B = cu_seqlens.numel() - 1
    if T == 0 or B == 0:
        return out, lse
    blocks = (Tiles.table(q.shape[-1], q.dtype) if tiles is None else tiles).forward
    grid = (triton.cdiv(max_seqlen, blocks.m), B, N)
    kernels.forward_kernel[grid](
        q, k, v, out, lse, cu_seqlens, seed, offset, softmax_scale, dropout_p, T,
        *_token_head_strides(q), *_token_head_strides(k), *_token_head_strides(v), *_token_head_strides(out),
        DROPOUT=dropout_p > 0, PRECISION=_precision(q.dtype), **_common(q, blocks),
    )
    return out, lse


def varlen_attention_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, dropout_p: float, softmax_scale: float,
    seed: int, offset: int, tiles: Tiles | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashAttention-2's backward: delta = rowsum(dout * out), then dk, dv per key block and dq per
    query block, P recomputed from `lse` and the dropout mask from (seed, offset). -> dq, dk, dv (T, N, D).
    `tiles` defaults to the table's (`Tiles.table`)."""
    T, N, D = q.shape
    B = cu_seqlens.numel() - 1
    grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if T == 0 or B == 0:
        return grad_q, grad_k, grad_v
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    tiles = Tiles.table(D, q.dtype) if tiles is None else tiles
    delta = torch.empty((N, T), dtype=torch.float32, device=q.device)
    kernels.delta_kernel[(triton.cdiv(T, tiles.delta_rows), N)](
        out, grad_out, delta, T, *_token_head_strides(out), *_token_head_strides(grad_out),
        HEAD_DIM=D, BLOCK_M=tiles.delta_rows, BLOCK_D=max(16, triton.next_power_of_2(D)),
    )
    shared = (seed, offset, softmax_scale, dropout_p, T, *_token_head_strides(q), *_token_head_strides(k),
              *_token_head_strides(v), *_token_head_strides(grad_out))
    flags = dict(DROPOUT=dropout_p > 0, PRECISION=_precision(q.dtype))
    keys = tiles.keys
    kernels.key_gradients_kernel[(triton.cdiv(max_seqlen, keys.n), B, N)](
        q, k, v, grad_out, lse, delta, grad_k, grad_v, cu_seqlens, *shared,
        *_token_head_strides(grad_k), *_token_head_strides(grad_v), **flags, **_common(q, keys),
    )
    queries = tiles.queries
    kernels.query_gradients_kernel[(triton.cdiv(max_seqlen, queries.m), B, N)](
        q, k, v, grad_out, lse, delta, grad_q, cu_seqlens, *shared,
        *_token_head_strides(grad_q), **flags, **_common(q, queries),
    )
    return grad_q, grad_k, grad_v


def philox_keep_mask(
    seed: int, offset: int, cu_seqlens: torch.Tensor, max_seqlen: int, num_heads: int, dropout_p: float,
    tile: Blocks = KEEP_TILE,
) -> torch.Tensor:
    """The dropout keep mask that the attention kernels draw for (seed, offset), written out.

    Returns bool (N, T, max_seqlen): [h, i, j] is True when head h keeps the probability of query i
    (packed index) for the key at position j of i's own sequence; False past that sequence's end.
    Computed by a separate small kernel from the same Philox stream (`_keep_mask`), so it is exactly
    the mask of forward and backward, whatever its `tile`. Meant for tests and small shapes: it is
    N x T x max_seqlen.
    """
    T = int(cu_seqlens[-1])
    keep = torch.zeros((num_heads, T, max_seqlen), dtype=torch.int8, device=cu_seqlens.device)
    B = cu_seqlens.numel() - 1
    if T and B:
        kernels.keep_mask_kernel[(triton.cdiv(max_seqlen, tile.m), B, num_heads)](
            keep, cu_seqlens, seed, offset, dropout_p, T, max_seqlen, BLOCK_M=tile.m, BLOCK_N=tile.n,
        )
    return keep.view(torch.bool)


def draw_seed_offset() -> tuple[int, int]:
    """A Philox key and counter offset from torch's default CPU generator (no device sync).

    The key lies in [2^32, 2^62) and the offset in [0, 2^31) so that Triton always passes them as
    int64 and int32: one compiled kernel whatever the draw.
    """
    seed = int(torch.randint(2**32, 2**62, ()))
    offset = int(torch.randint(0, 2**31, ()))
    return seed, offset


# The kernels as torch custom ops (torch.library): torch.compile traces around them as opaque calls
# with known output shapes (the register_fake functions) instead of breaking the graph at them, and
# autograd reaches the backward kernels through register_autograd. The Philox seed and offset are
# arguments, drawn by the caller (varlen_attention), and so are the tiles (`Tiles.as_ints`), so the
# ops themselves are pure functions.
@torch.library.custom_op("minibert::varlen_attention_forward", mutates_args=())
def _forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                dropout_p: float, softmax_scale: float, seed: int, offset: int,
                tiles: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return varlen_attention_forward(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset,
                                    Tiles.from_ints(tiles))


@_forward_op.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, tiles):
    return torch.empty_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)  # out, lse (N, T)


@torch.library.custom_op("minibert::varlen_attention_backward", mutates_args=())
def _backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                 lse: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, dropout_p: float, softmax_scale: float,
                 seed: int, offset: int, tiles: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return varlen_attention_backward(grad_out, q, k, v, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale,
                                     seed, offset, Tiles.from_ints(tiles))


@_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, tiles):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    """Saves q, k, v, out, the (N, T) log-sum-exp, the Philox seed/offset and the tiles; backward
    recomputes the probabilities and the mask block by block."""
    q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, tiles = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1], cu_seqlens)
    ctx.args = (max_seqlen, dropout_p, softmax_scale, seed, offset, tiles)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    grads = _backward_op(grad_out, q, k, v, out, lse, cu_seqlens, *ctx.args)
    return (*grads, None, None, None, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)

def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    keep_mask_hook: Callable[[torch.Tensor], None] | None = None,
    tiles: Tiles | None = None,
) -> torch.Tensor:
    """Attention within each sequence of a packed batch, differentiable in q, k, v.

    q, k, v: (T, N, D), the B sequences one after another, one dtype of fp32/bf16/fp16; under
    autocast k and v are cast to q's dtype. cu_seqlens: int32 (B + 1,) on q's device, 0 first, T
    last; max_seqlen: the longest sequence (not checked on the device: a smaller value leaves rows
    uncomputed). dropout_p: dropout on the attention probabilities (0.0 in eval mode), inverted
    (kept values scaled by 1 / (1 - p)). softmax_scale: defaults to 1 / sqrt(D).
    keep_mask_hook: test hook; when given, called once in forward with the exact keep mask used,
    `philox_keep_mask(...)`, bool (N, T, max_seqlen) (all True within sequences when dropout_p is 0).
    tiles: the kernels' launch shapes, `Tiles.table(D, dtype)` by default; they change the blocks the
    work is cut into, not the result beyond rounding.
    Returns out (T, N, D) in q's dtype.
    """
    _check_inputs(q, k.to(q.dtype), v.to(q.dtype), cu_seqlens)
    if not isinstance(max_seqlen, int):
        raise MinibertError(f"varlen_attention: max_seqlen must be a Python int, got {type(max_seqlen).__name__}")
    if not 0 <= dropout_p < 1:
        raise MinibertError(f"varlen_attention: dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    # Autocast chose the projections' dtype; the kernel computes in that dtype with fp32 accumulation.
    with torch.autocast(q.device.type, enabled=False):
        k, v = k.to(q.dtype), v.to(q.dtype)
        seed, offset = draw_seed_offset() if dropout_p > 0 else (2**32, 0)
        tiles = Tiles.table(q.shape[-1], q.dtype) if tiles is None else tiles
        out, _ = _forward_op(q, k, v, cu_seqlens, max_seqlen, float(dropout_p), scale, seed, offset, tiles.as_ints())
    if keep_mask_hook is not None:
        keep_mask_hook(philox_keep_mask(seed, offset, cu_seqlens, max_seqlen, q.shape[1], dropout_p, tiles.keep))
    return out
