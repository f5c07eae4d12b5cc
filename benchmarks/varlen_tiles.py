"""Tiles of the Triton varlen attention kernels on a GPU: each candidate checked, then timed.

Needs a CUDA device and Triton. `kernel_blocks` (minibert/model/kernels/varlen_attention.py) picks
the tile (BM x BN), warps and pipeline stages of the forward, dk/dv ("keys") and dq ("queries")
kernels per head size and dtype. This script varies one kernel's tile at a time, the other two at
the table's choice, in bf16 at head sizes 64 (BERT-base) and 128 (BERT-large's 16 heads of 64 use
64 too; 128 is for other models). For each candidate:

- error: the largest |error| of out, dq, dk, dv against the float64 formula on 6 packed sequences of
  1..512 tokens, divided by the same error of torch's SDPA in bf16 (<= 2 is what the tests accept);
- ms: forward + backward of attention alone (12 heads) on 32,768 packed tokens of lengths uniform in
  20..512, and at 512 tokens each, medians of interleaved calls, next to flash SDPA on the padded batch.

    python benchmarks/varlen_tiles.py
"""

import argparse
import statistics
import sys

import torch
from gpu_attention import (
    FLASH,
    HEADS,
    TOKENS,
    Batch,
    errors,
    exact_results,
    packed,
    sdpa_packed,
)

from minibert.model.kernels import triton_available

CANDIDATES = {  # kernel -> (BM, BN, warps, stages) tried besides the table's own choice
    "forward": [(64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 32, 4, 2), (128, 32, 4, 3)],
    "keys": [(32, 64, 4, 3), (32, 64, 8, 2), (64, 64, 4, 3), (64, 128, 8, 3), (32, 128, 8, 3), (16, 64, 4, 2)],
    "queries": [(64, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 8, 3), (32, 32, 4, 2)],
}


def error_ratio(attend, head_dim: int, lengths: list[int]) -> tuple[float, list[float]]:
    """max over out/dq/dk/dv of kernel error / SDPA error (bf16, float64 reference), and the errors."""
    q, k, v, cu, L = packed(lengths, HEADS, head_dim, torch.bfloat16)
    grad_out, expected = exact_results(q, k, v, cu, L)
    ours = errors(attend(q, k, v, cu, L), (q, k, v), grad_out, expected)
    theirs = errors(sdpa_packed(q, k, v, cu, L), (q, k, v), grad_out, expected)
    return max(a / b for a, b in zip(ours, theirs)), ours


def time_ms(steps: dict, batch, repeats: int) -> dict[str, float]:
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
    args = parser.parse_args()
    if not torch.cuda.is_available() or not triton_available():
        print("varlen_tiles.py needs a CUDA device and Triton (pip install -e '.[gpu]')")
        return 1
    from minibert.model.kernels import varlen_attention as module

    table_choice = module.kernel_blocks
    g = torch.Generator().manual_seed(2)
    check_lengths = [1, 512, *torch.randint(1, 513, (4,), generator=g).tolist()]
    shapes = {"uniform 20..512": torch.randint(20, 513, (TOKENS // 266,), generator=g).tolist(),
              "fixed 512": [512] * (TOKENS // 512)}
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    print(f"{'D':>4} {'kernel':8} {'BM':>4} {'BN':>4} {'warps':>5} {'stages':>6} {'error/sdpa':>10}  "
          + "  ".join(f"{shape + ' ms':>20}" for shape in shapes))
    for head_dim in (64, 128):
        batches = {shape: Batch(lengths, head_dim) for shape, lengths in shapes.items()}
        flash = {shape: time_ms({"flash": lambda b: b.padded_step(FLASH)}, batch, args.repeats)["flash"]
                 for shape, batch in batches.items()}
        print(f"{head_dim:>4} {'sdpa':8} {'':>4} {'':>4} {'':>5} {'':>6} {'':>10}  "
              + "  ".join(f"{flash[shape]:>20.3f}" for shape in shapes), flush=True)
        default = table_choice(head_dim, torch.bfloat16)
        for kernel, candidates in CANDIDATES.items():
            chosen = default[kernel]
            for shape in [(chosen.m, chosen.n, chosen.warps, chosen.stages), *candidates]:
                tiles = dict(default, **{kernel: module.Blocks(*shape)})
                module.kernel_blocks = lambda D, dtype, tiles=tiles: tiles
                try:
                    ratio, _ = error_ratio(module.varlen_attention, head_dim, check_lengths)
                    ms = {name: time_ms({"kernel": lambda b: b.packed_step(module.varlen_attention)}, batch,
                                        args.repeats)["kernel"] for name, batch in batches.items()}
                except Exception as e:  # e.g. out of shared memory for this tile: report, go on
                    print(f"{head_dim:>4} {kernel:8} {shape[0]:>4} {shape[1]:>4} {shape[2]:>5} {shape[3]:>6} "
                          f"failed: {str(e).splitlines()[0][:80]}", flush=True)
                    continue
                finally:
                    module.kernel_blocks = table_choice
                mark = " (table)" if shape == (chosen.m, chosen.n, chosen.warps, chosen.stages) else ""
                print(f"{head_dim:>4} {kernel:8} {shape[0]:>4} {shape[1]:>4} {shape[2]:>5} {shape[3]:>6} {ratio:>10.2f}  "
                      + "  ".join(f"{ms[s]:>20.3f}" for s in shapes) + mark, flush=True)
        del batches
    return 0


if __name__ == "__main__":
    sys.exit(main())
