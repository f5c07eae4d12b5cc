"""Triton kernels of variable-length attention (FlashAttention-2, Dao 2023), forward and backward.

Imported only through `varlen_attention.py`, never by `import minibert`: Triton is an optional
GPU dependency. Tests run these kernels on the CPU with TRITON_INTERPRET=1.

Layout (FlashAttention-2's varlen layout): q, k, v, out (T, N, D) with the sequences of a batch
packed one after another, no padding; int32 cu_seqlens (B + 1,) holds the start of every sequence
and the total. Log-sum-exp and delta are fp32 (N, T). Each program handles one block of queries
(keys in the dk/dv kernel) of one sequence and one head: grid (blocks of max_seqlen, B, N); blocks
past their sequence's end return at once.

Shapes: T total tokens, N heads, D head size, BM x BN the query x key block, BD = D rounded up.
"""

import triton
import triton.language as tl

# exp(x) = exp2(x * log2(e)): exp2 is the GPU's native instruction. Globals read inside kernels
# must be tl.constexpr (compiled Triton refuses plain Python globals; the interpreter does not).
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _keep_mask(seed, offset, head, rows, col_start, dropout_p, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Dropout keep decisions (BM, BN) bool for global query rows `rows` (BM,) and the keys at local
    positions col_start .. col_start + BN - 1 of the same sequence (col_start a multiple of 4).

    Philox4x32-10 keyed by the 64-bit seed, on the counter (key position // 4, query row, head,
    offset): one call gives four 32-bit words, one for each of four neighbouring keys, so every
    (head, query, key) has its own word whatever the block sizes, and forward and backward
    regenerate the same mask. Kept when the top 24 bits, read as a uniform in [0, 1), are >= p.
    """
    QUARTER: tl.constexpr = BLOCK_N // 4
    groups = col_start // 4 + tl.arange(0, QUARTER)
    c0 = tl.broadcast_to(groups[None, :], (BLOCK_M, QUARTER)).to(tl.uint32)
    c1 = tl.broadcast_to(rows[:, None], (BLOCK_M, QUARTER)).to(tl.uint32)
    c2 = tl.zeros((BLOCK_M, QUARTER), tl.uint32) + head.to(tl.uint32)
    c3 = tl.zeros((BLOCK_M, QUARTER), tl.uint32) + offset.to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, c3)
    # tl.join stacks along a new last axis, so join(join(r0, r2), join(r1, r3)) is (BM, BN/4, 2, 2)
    # with [g, a, b] = r_(2a + b); flattened row-major, key 4g + i gets word r_i of call g.
    bits = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (BLOCK_M, BLOCK_N))
    uniform = (bits >> 8).to(tl.float32) * (1.0 / 16777216.0)  # exact multiples of 2^-24
    return uniform >= dropout_p


@triton.jit
def _load_rows(ptr, first, rows, stride_t, head, stride_h, dims, row_ok, dim_ok):
    """Rows `first + rows` of head `head` from a (T, N, D) tensor as a (len(rows), BD) block, zero-filled."""
    offsets = (first + rows)[:, None] * stride_t + head * stride_h + dims[None, :]
    return tl.load(ptr + offsets, mask=row_ok[:, None] & dim_ok[None, :], other=0.0)


@triton.jit
def _store_rows(ptr, value, first, rows, stride_t, head, stride_h, dims, row_ok, dim_ok):
    offsets = (first + rows)[:, None] * stride_t + head * stride_h + dims[None, :]
    tl.store(ptr + offsets, value.to(ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


@triton.jit(do_not_specialize=["seed", "offset"])
def forward_kernel(
    Q, K, V, Out, Lse, cu_seqlens, seed, offset, scale, dropout_p, total,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
):
    """out = softmax(q k^T * scale) v per sequence, one BM-row query block against all its keys.

    Online softmax over key blocks (running max m and sum l, base 2); dropout zeroes probabilities
    after they entered l, as dropout applies to the normalized probabilities. Lse = m + log(l).
    """
    block, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(cu_seqlens + seq)
    length = tl.load(cu_seqlens + seq + 1) - start
    if block * BLOCK_M >= length:
        return
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)  # positions in the sequence
    dims = tl.arange(0, BLOCK_D)
    row_ok, dim_ok = rows < length, dims < HEAD_DIM
    q = _load_rows(Q, start, rows, stride_qt, head, stride_qh, dims, row_ok, dim_ok)
    qk_scale = scale * LOG2E
    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for col_start in range(0, length, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        col_ok = cols < length
        k = _load_rows(K, start, cols, stride_kt, head, stride_kh, dims, col_ok, dim_ok)
        v = _load_rows(V, start, cols, stride_vt, head, stride_vh, dims, col_ok, dim_ok)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BM, BN), log2 units
        s = tl.where(col_ok[None, :], s, float("-inf"))  # keys of the next sequence are not ours
        m_new = tl.maximum(m, tl.max(s, 1))  # finite: every block has at least one key
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m - m_new)  # rescales what was summed under the old maximum
        l = l * alpha + tl.sum(p, 1)
        if DROPOUT:
            p = tl.where(_keep_mask(seed, offset, head, start + rows, col_start, dropout_p, BLOCK_M, BLOCK_N), p, 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new
    # Inverted dropout: kept probabilities are scaled by 1 / (1 - p) (1 without dropout).
    out = acc * (1.0 / (l * (1.0 - dropout_p)))[:, None]
    _store_rows(Out, out, start, rows, stride_ot, head, stride_oh, dims, row_ok, dim_ok)
    tl.store(Lse + head * total + start + rows, (m + tl.log2(l)) * LN2, mask=row_ok)


@triton.jit
def delta_kernel(
    Out, GradOut, Delta, total, stride_ot, stride_oh, stride_gt, stride_gh,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """delta = rowsum(dout * out) (N, T) fp32, FlashAttention-2's backward preprocessing.

    With dropout, out already holds the dropped, rescaled probabilities, and rowsum(dout * out)
    equals rowsum(P * dP) of the softmax backward (dP = dropped dout v^T), so P need not be kept.
    """
    rows, head = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M), tl.program_id(1)
    dims = tl.arange(0, BLOCK_D)
    row_ok, dim_ok = rows < total, dims < HEAD_DIM
    o = _load_rows(Out, 0, rows, stride_ot, head, stride_oh, dims, row_ok, dim_ok).to(tl.float32)
    do = _load_rows(GradOut, 0, rows, stride_gt, head, stride_gh, dims, row_ok, dim_ok).to(tl.float32)
    tl.store(Delta + head * total + rows, tl.sum(o * do, 1), mask=row_ok)


@triton.jit
def _score_gradients(
    q, k, v, do, lse, delta, seed, offset, head, query_rows, col_start, valid, qk_scale, dropout_p,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
):
    """One (BM, BN) tile of the backward: the probabilities P recomputed from the log-sum-exp, the
    kept (undivided) probabilities for dv, and dS, the gradient of the unscaled scores.

    With Z = keep / (1 - p): dP = (dout v^T) * Z and dS = P * (dP - delta).
    """
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    p = tl.where(valid, tl.exp2(s - lse[:, None] * LOG2E), 0.0)  # padded rows and keys: weight 0
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    if DROPOUT:
        keep = _keep_mask(seed, offset, head, query_rows, col_start, dropout_p, BLOCK_M, BLOCK_N)
        p_kept = tl.where(keep, p, 0.0)
        dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
    else:
        p_kept = p
    return p_kept, p * (dp - delta[:, None])


@triton.jit(do_not_specialize=["seed", "offset"])
def key_gradients_kernel(
    Q, K, V, GradOut, Lse, Delta, GradK, GradV, cu_seqlens, seed, offset, scale, dropout_p, total,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_gt, stride_gh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
):
    """dk and dv of one BN-key block, looping over the query blocks of its sequence.

    dv = (P * Z)^T dout, dk = scale * dS^T q. Keeping dq in a separate kernel instead of atomic adds
    costs one more recomputation of P but keeps the gradients deterministic.
    """
    block, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(cu_seqlens + seq)
    length = tl.load(cu_seqlens + seq + 1) - start
    if block * BLOCK_N >= length:
        return
    col_start = block * BLOCK_N
    cols = col_start + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    col_ok, dim_ok = cols < length, dims < HEAD_DIM
    k = _load_rows(K, start, cols, stride_kt, head, stride_kh, dims, col_ok, dim_ok)
    v = _load_rows(V, start, cols, stride_vt, head, stride_vh, dims, col_ok, dim_ok)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for row_start in range(0, length, BLOCK_M):
        rows = row_start + tl.arange(0, BLOCK_M)
        row_ok = rows < length
        q = _load_rows(Q, start, rows, stride_qt, head, stride_qh, dims, row_ok, dim_ok)
        do = _load_rows(GradOut, start, rows, stride_gt, head, stride_gh, dims, row_ok, dim_ok)
        lse = tl.load(Lse + head * total + start + rows, mask=row_ok, other=0.0)
        delta = tl.load(Delta + head * total + start + rows, mask=row_ok, other=0.0)
        p_kept, ds = _score_gradients(
            q, k, v, do, lse, delta, seed, offset, head, start + rows, col_start,
            row_ok[:, None] & col_ok[None, :], scale * LOG2E, dropout_p, BLOCK_M, BLOCK_N, DROPOUT, PRECISION,
        )
        dv += tl.dot(tl.trans(p_kept.to(do.dtype)), do, input_precision=PRECISION)
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    _store_rows(GradV, dv * (1.0 / (1.0 - dropout_p)), start, cols, stride_dvt, head, stride_dvh, dims, col_ok, dim_ok)
    _store_rows(GradK, dk * scale, start, cols, stride_dkt, head, stride_dkh, dims, col_ok, dim_ok)


@triton.jit(do_not_specialize=["seed", "offset"])
def query_gradients_kernel(
    Q, K, V, GradOut, Lse, Delta, GradQ, cu_seqlens, seed, offset, scale, dropout_p, total,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_gt, stride_gh,
    stride_dqt, stride_dqh,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
):
    """dq = scale * dS k of one BM-query block, looping over the key blocks of its sequence."""
    block, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(cu_seqlens + seq)
    length = tl.load(cu_seqlens + seq + 1) - start
    if block * BLOCK_M >= length:
        return
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok, dim_ok = rows < length, dims < HEAD_DIM
    q = _load_rows(Q, start, rows, stride_qt, head, stride_qh, dims, row_ok, dim_ok)
    do = _load_rows(GradOut, start, rows, stride_gt, head, stride_gh, dims, row_ok, dim_ok)
    lse = tl.load(Lse + head * total + start + rows, mask=row_ok, other=0.0)
    delta = tl.load(Delta + head * total + start + rows, mask=row_ok, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for col_start in range(0, length, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        col_ok = cols < length
        k = _load_rows(K, start, cols, stride_kt, head, stride_kh, dims, col_ok, dim_ok)
        v = _load_rows(V, start, cols, stride_vt, head, stride_vh, dims, col_ok, dim_ok)
        _, ds = _score_gradients(
            q, k, v, do, lse, delta, seed, offset, head, start + rows, col_start,
            row_ok[:, None] & col_ok[None, :], scale * LOG2E, dropout_p, BLOCK_M, BLOCK_N, DROPOUT, PRECISION,
        )
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    _store_rows(GradQ, dq * scale, start, rows, stride_dqt, head, stride_dqh, dims, row_ok, dim_ok)


@triton.jit(do_not_specialize=["seed", "offset"])
def keep_mask_kernel(
    Keep, cu_seqlens, seed, offset, dropout_p, total, max_seqlen,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Writes the keep decisions of `_keep_mask` into Keep (N, T, max_seqlen) int8: entry
    [h, i, j] for query i (packed index) and the key at position j of i's sequence; 0 past its end."""
    block, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(cu_seqlens + seq)
    length = tl.load(cu_seqlens + seq + 1) - start
    if block * BLOCK_M >= length:
        return
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    for col_start in range(0, max_seqlen, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        keep = _keep_mask(seed, offset, head, start + rows, col_start, dropout_p, BLOCK_M, BLOCK_N)
        keep = keep & (cols < length)[None, :]
        offsets = (head * total + start + rows)[:, None] * max_seqlen + cols[None, :]
        tl.store(Keep + offsets, keep.to(tl.int8), mask=(rows < length)[:, None] & (cols < max_seqlen)[None, :])
