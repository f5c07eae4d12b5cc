"""The Triton variable-length attention kernel on a GPU: checks against torch, then speed and memory.

Needs a CUDA device and Triton (`pip install -e ".[gpu]"`); about a minute on an H100/H200, most
of it compiling the kernels.

1. Checks (exit status 1 if one fails): at BERT-base's attention shape (12 heads of 64) on packed
   sequences of 1..512 tokens, the kernel's output and q/k/v gradients in bf16 and fp16 against the
   float64 formula, next to the error of torch's SDPA on the padded batch in the same dtype (the
   kernel must be within 2x of SDPA's error); head sizes 32 and 128; fp32 with dropout against the
   formula with the kernel's own keep mask (exact up to fp32 rounding).
2. Speed, bf16, forward + backward of attention alone, timed interleaved (one call of each engine in
   turn, repeated; medians): the kernel, torch's flash varlen_attn on the same packed batch
   (torch.nn.attention.varlen), and torch's flash SDPA on the padded batch, with and without
   dropout 0.1, at 128 and 512 tokens and at lengths uniform in [20, 512]. TFLOP/s count the
   useful work only, 4 N D sum(L^2) forward and 2.5 times that backward (FlashAttention's
   convention), so padding shows as lower TFLOP/s. Flash SDPA takes no mask: on mixed lengths its
   row times the padded work (what a padded encoder pays) and "sdpa-masked" adds the masked SDPA
   (memory-efficient kernel) that gives the right answer. SDPA gets the batch already padded, so no
   engine is timed copying. Peak memory is what one forward + backward allocates beyond its inputs.

    python benchmarks/gpu_attention.py
"""

import argparse
import math
import statistics
import sys

import torch
from bench_common import HEAD_DIM, HEADS, TOKENS, Batch, errors, exact_results, packed, sdpa_packed, skip
from torch.nn.attention import SDPBackend

from minibert.model.kernels import triton_available

FLASH = SDPBackend.FLASH_ATTENTION


def check_against_sdpa(varlen_attention, dtype, head_dim, lengths) -> bool:
    q, k, v, cu, L = packed(lengths, HEADS, head_dim, dtype)
    grad_out, expected = exact_results(q, k, v, cu, L)
    ours = errors(varlen_attention(q, k, v, cu, L), (q, k, v), grad_out, expected)
    theirs = errors(sdpa_packed(q, k, v, cu, L), (q, k, v), grad_out, expected)
    ok = all(a <= 2 * b + 1e-3 for a, b in zip(ours, theirs))
    row = "  ".join(f"{name} {a:.2e} (sdpa {b:.2e})" for name, a, b in zip(("out", "dq", "dk", "dv"), ours, theirs))
    print(f"check {str(dtype):15} D={head_dim:<4} {'ok  ' if ok else 'FAIL'} {row}")
    return ok


def check_dropout(varlen_attention) -> bool:
    lengths = [1, 37, 128, 300]
    q, k, v, cu, L = packed(lengths, HEADS, HEAD_DIM, torch.float32)
    masks = []
    out = varlen_attention(q, k, v, cu, L, dropout_p=0.1, keep_mask_hook=masks.append)
    grad_out, expected = exact_results(q, k, v, cu, L, 0.1, masks[0])
    found = errors(out, (q, k, v), grad_out, expected)
    kept = masks[0].sum().item() / (HEADS * sum(n * n for n in lengths))
    ok = max(found) < 1e-4 and abs(kept - 0.9) < 0.005
    print(f"check dropout fp32 D=64     {'ok  ' if ok else 'FAIL'} keep rate {kept:.4f}  "
          + "  ".join(f"{name} {e:.2e}" for name, e in zip(("out", "dq", "dk", "dv"), found)))
    return ok


def engines(varlen_attention):
    """name -> step(batch): one forward + backward."""
    table = {
        "triton-varlen": lambda b: b.packed_step(varlen_attention),
        "sdpa-flash": lambda b: b.padded_step(FLASH),
        "sdpa-masked": lambda b: b.padded_step(SDPBackend.EFFICIENT_ATTENTION, masked=True),
        "triton-varlen p=0.1": lambda b: b.packed_step(lambda q, k, v, cu, L: varlen_attention(q, k, v, cu, L, 0.1)),
        "sdpa-flash p=0.1": lambda b: b.padded_step(FLASH, dropout_p=0.1),
    }
    try:
        from torch.nn.attention.varlen import varlen_attn

        table["torch-varlen"] = lambda b: b.packed_step(lambda q, k, v, cu, L: varlen_attn(q, k, v, cu, cu, L, L))
    except ImportError as e:
        print(f"torch varlen_attn unavailable: {e}")
    return table


def benchmark(varlen_attention, repeats: int) -> None:
    g = torch.Generator().manual_seed(1)
    shapes = {
        "fixed 128": [128] * (TOKENS // 128),
        "fixed 512": [512] * (TOKENS // 512),
        "uniform 20..512": torch.randint(20, 513, (TOKENS // 266,), generator=g).tolist(),
    }
    table = engines(varlen_attention)
    print(f"\nbf16 attention forward + backward, N={HEADS} D={HEAD_DIM}, medians of {repeats} interleaved calls")
    print(f"{'batch':18} {'engine':22} {'ms':>8} {'TFLOP/s':>8} {'peak MB':>8} {'vs sdpa-flash':>13}")
    for shape, lengths in shapes.items():
        batch = Batch(lengths)
        flops = 3.5 * 4 * HEADS * HEAD_DIM * sum(n * n for n in lengths)
        names = [n for n in table if shape.startswith("uniform") or n != "sdpa-masked"]
        peak, times = {}, {}
        for name in names:  # warm-up (compiles), then the peak memory of one step
            try:
                for _ in range(3):
                    table[name](batch)
            except RuntimeError as e:  # an engine torch lacks on this GPU: report it, time the rest
                print(f"{shape:18} {name:22} unavailable: {str(e).splitlines()[0]}")
                continue
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            table[name](batch)
            peak[name], times[name] = (torch.cuda.max_memory_allocated() - base) / 2**20, []
        for _ in range(repeats):
            for name in times:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                table[name](batch)
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
        reference = statistics.median(times["sdpa-flash"]) if "sdpa-flash" in times else math.nan
        for name, found in times.items():
            ms = statistics.median(found)
            print(f"{shape:18} {name:22} {ms:8.3f} {flops / ms / 1e9:8.1f} {peak[name]:8.0f} {reference / ms:13.2f}")
        del batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="interleaved timed calls per engine and batch")
    parser.add_argument("--smoke", action="store_true", help="the checks and one timed call per engine; "
                        "without CUDA and Triton it says so and exits 0 (there is no CPU path to try)")
    args = parser.parse_args()
    if not torch.cuda.is_available() or not triton_available():
        if args.smoke:
            return skip("gpu_attention.py", "needs a CUDA device and Triton (the kernel has no CPU path)")
        print("gpu_attention.py needs a CUDA device and Triton (pip install -e '.[gpu]')")
        return 1
    import triton

    from minibert.model.kernels.varlen_attention import varlen_attention

    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    torch.manual_seed(0)  # the checks' random output gradients (drawn on the GPU)
    g = torch.Generator().manual_seed(2)
    mixed = [1, 512, *torch.randint(1, 513, (14,), generator=g).tolist()]
    ok = all([
        check_against_sdpa(varlen_attention, torch.bfloat16, 64, mixed),
        check_against_sdpa(varlen_attention, torch.float16, 64, mixed),
        check_against_sdpa(varlen_attention, torch.bfloat16, 32, mixed[:6]),
        check_against_sdpa(varlen_attention, torch.bfloat16, 128, mixed[:6]),
        check_dropout(varlen_attention),
    ])
    benchmark(varlen_attention, 1 if args.smoke else args.repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
