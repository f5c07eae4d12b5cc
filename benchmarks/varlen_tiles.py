"""Tiles of the Triton varlen attention kernels on a GPU: each candidate checked, then timed.

Needs a CUDA device and Triton. `kernel_blocks` (minibert/model/kernels/varlen_attention.py) picks
the tile (BM x BN), warps and pipeline stages of the forward, dk/dv ("keys") and dq ("queries")
kernels per head size and dtype. This script varies one kernel's tile at a time, the other two at
the table's choice (so a row says nothing about the other kernels), for each dtype and head size
asked. For each candidate:

- error: the largest |error| of out, dq, dk, dv against the float64 formula on 6 packed sequences of
  1..512 tokens (12 heads), and that error divided by the same error of torch's SDPA in the same
  dtype (the tests accept <= 2 in bf16/fp16; in fp32 both errors are rounding-sized, read the error);
- speed, bf16/fp16 only: forward + backward of attention alone on 32,768 packed tokens of lengths
  uniform in 20..512, and at 512 tokens each, timed interleaved with torch's flash SDPA on the
  padded batch (one call of each in turn, medians): kernel ms and flash ms / kernel ms, so that the
  GPU's clock drift between candidates cancels in the ratio.

    python benchmarks/varlen_tiles.py                              # bf16, head sizes 64 and 128
    python benchmarks/varlen_tiles.py --dtypes fp32 --head_dims 128 --kernels keys
"""

import argparse
import statistics
import sys

import torch
from bench_common import HEADS, TOKENS, Batch, errors, exact_results, packed, sdpa_packed, skip
from torch.nn.attention import SDPBackend

from minibert.model.kernels import triton_available

CANDIDATES = {  # kernel -> (BM, BN, warps, stages) tried besides the table's own choice
    "forward": [(64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 32, 4, 2), (128, 32, 4, 3)],
    "keys": [(32, 64, 4, 3), (32, 64, 8, 2), (64, 64, 4, 3), (64, 64, 4, 2), (64, 128, 8, 3), (32, 128, 8, 3),
             (16, 64, 4, 2)],
    "queries": [(64, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 8, 3), (32, 32, 4, 2)],
}
FLASH = SDPBackend.FLASH_ATTENTION
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def check(attend, dtype, head_dim: int, lengths: list[int]) -> tuple[float, float]:
    """(largest error of out/dq/dk/dv against float64, largest ratio of that error to SDPA's)."""
    q, k, v, cu, L = packed(lengths, HEADS, head_dim, dtype)
    grad_out, expected = exact_results(q, k, v, cu, L)
    ours = errors(attend(q, k, v, cu, L), (q, k, v), grad_out, expected)
    theirs = errors(sdpa_packed(q, k, v, cu, L), (q, k, v), grad_out, expected)
    return max(ours), max(a / b for a, b in zip(ours, theirs))


def interleaved_ms(steps: dict, batch, repeats: int) -> dict[str, float]:
    """Median ms per call of each step, one call of each in turn."""
    for step in steps.values():
        for _ in range(2):
            step(batch)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(batch)
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end))
    return {name: statistics.median(found) for name, found in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="interleaved timed calls per candidate and batch")
    parser.add_argument("--dtypes", default="bf16", help="comma-separated: bf16, fp16, fp32 (default bf16)")
    parser.add_argument("--head_dims", default="64,128", help="comma-separated head sizes (default 64,128)")
    parser.add_argument("--kernels", default="forward,keys,queries", help="which kernels' tiles to vary")
    parser.add_argument("--smoke", action="store_true", help="the table's own tiles only, one timed call each; "
                        "without CUDA and Triton it says so and exits 0 (there is no CPU path to try)")
    args = parser.parse_args()
    for flag, given, known in (("--dtypes", args.dtypes, DTYPES), ("--kernels", args.kernels, CANDIDATES)):
        unknown = sorted(set(given.split(",")) - set(known))
        if unknown:
            parser.error(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    if not all(d.isdigit() for d in args.head_dims.split(",")):
        parser.error(f"--head_dims: comma-separated whole numbers, got {args.head_dims!r}")
    if not torch.cuda.is_available() or not triton_available():
        if args.smoke:
            return skip("varlen_tiles.py", "needs a CUDA device and Triton (the kernel has no CPU path)")
        print("varlen_tiles.py needs a CUDA device and Triton (pip install -e '.[gpu]')")
        return 1
    import triton

    from minibert.model.kernels import varlen_attention as module

    table_choice = module.kernel_blocks
    repeats = 1 if args.smoke else args.repeats
    g = torch.Generator().manual_seed(2)
    check_lengths = [1, 512, *torch.randint(1, 513, (4,), generator=g).tolist()]
    shapes = {"uniform 20..512": torch.randint(20, 513, (TOKENS // 266,), generator=g).tolist(),
              "fixed 512": [512] * (TOKENS // 512)}
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    print(f"{'dtype':5} {'D':>4} {'kernel':8} {'BM':>4} {'BN':>4} {'warps':>5} {'stages':>6} {'error':>9} "
          f"{'/sdpa':>6}  " + "  ".join(f"{shape + ' ms (flash/ours)':>30}" for shape in shapes))
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        for head_dim in map(int, args.head_dims.split(",")):
            batches = {shape: Batch(lengths, head_dim, dtype) for shape, lengths in shapes.items()} \
                if dtype != torch.float32 else {}  # flash SDPA has no fp32 kernel: fp32 is checked only
            default = table_choice(head_dim, dtype)
            for kernel in args.kernels.split(","):
                chosen = default[kernel]
                table_shape = (chosen.m, chosen.n, chosen.warps, chosen.stages)
                candidates = [] if args.smoke else [c for c in CANDIDATES[kernel] if c != table_shape]
                for shape in [table_shape, *candidates]:
                    tiles = dict(default, **{kernel: module.Blocks(*shape)})
                    module.kernel_blocks = lambda D, dt, tiles=tiles: tiles
                    row = (f"{dtype_name:5} {head_dim:>4} {kernel:8} "
                           f"{shape[0]:>4} {shape[1]:>4} {shape[2]:>5} {shape[3]:>6}")
                    try:
                        error, ratio = check(module.varlen_attention, dtype, head_dim, check_lengths)
                        timed = {name: interleaved_ms({"ours": lambda b: b.packed_step(module.varlen_attention),
                                                       "flash": lambda b: b.padded_step(FLASH)}, batch, repeats)
                                 for name, batch in batches.items()}
                    except Exception as e:  # e.g. out of shared memory for this tile: report, go on
                        print(f"{row} failed: {str(e).splitlines()[0][:80]}", flush=True)
                        continue
                    finally:
                        module.kernel_blocks = table_choice
                    speed = "  ".join(f"{t['ours']:>20.3f} ({t['flash'] / t['ours']:.2f})" for t in timed.values())
                    print(f"{row} {error:>9.2e} {ratio:>6.2f}  {speed}" + ("  (table)" if shape == table_shape else ""),
                          flush=True)
            del batches
    return 0


if __name__ == "__main__":
    sys.exit(main())
