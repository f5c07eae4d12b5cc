"""Speed of minibert against Hugging Face transformers on all-MiniLM-L6-v2, on the CPU.

Both libraries load the same weights; minibert runs its default classifier (BertClassifier with the
default head: pooled output -> dropout -> Linear(H, 5), and the encoder's default of computing the
last layer at [CLS] only), transformers its BertForSequenceClassification with the "sdpa" and the
"eager" attention. minibert runs twice: padded (its default) and with the unpadded encoder
("mb-unpad": only real tokens through the layers). The machines are shared, so absolute numbers
drift: the engines are timed interleaved (one call of each in turn, repeated) and the ratio of the
medians is what to read.

Rows (B sequences of T tokens; seq/s = B / median seconds per call):
  train      fwd + bwd + AdamW step, train mode (dropout on, as in fine-tuning); each library's
             default AdamW: minibert's build_optimizer("adamw") and Hugging Face Trainer's
             "adamw_torch_fused", both torch's fused kernel
  train var  the same on 16 sequences with lengths uniform in 20..128 (padded to the longest)
  infer      eval mode, no_grad
  var        inference on 64 sequences with lengths uniform in 20..512, in batches of 8 padded to
             the longest of each batch, in the given order ("unsorted") or sorted by length first
each in fp32 and under torch.autocast("cpu", dtype=torch.bfloat16).
ratio = minibert (padded) / hf-sdpa; unpad = mb-unpad / hf-sdpa.

Peak RSS is the process's high-water mark during the call (reset before it through
/proc/self/clear_refs), so it includes the three models and their optimizer states.

    python benchmarks/encoder_speed.py            # all rows, about 10 minutes on 2 cores
    python benchmarks/encoder_speed.py --quick    # the goal rows, fewer repeats (a few minutes)
    python benchmarks/encoder_speed.py --smoke    # a tiny random model through the --quick rows (seconds)
"""

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

import torch
from bench_common import (
    SMOKE,
    SMOKE_HELP,
    hf_classifier,
    infer,
    interleaved,
    make_batch,
    minibert_classifier,
    train_step,
    write_models,
)

from minibert.resources import minilm_folder
from minibert.training.optimization import build_optimizer

VAR_SEQUENCES, VAR_BATCH, VAR_LENGTHS = 64, 8, (20, 512)


def load_engines(minibert_folder, hf_folder) -> dict[str, torch.nn.Module]:
    engines = {"minibert": minibert_classifier(minibert_folder, "padded"),
               "mb-unpad": minibert_classifier(minibert_folder, "unpadded")}
    for implementation in ("sdpa", "eager"):
        engines[f"hf-{implementation}"] = hf_classifier(hf_folder, implementation)
    return engines


def rows(quick: bool, vocab_size: int, smoke: bool = False):
    """(name, work function, batches, sequences per call, repeats, dtypes) for every row; --smoke: the
    --quick rows on 2 sequences of 32 tokens and 8 texts of 20..64, one repeat."""
    g = torch.Generator().manual_seed(0)
    if smoke:
        texts = random.Random(0).choices(range(20, 65), k=8)
        var = lambda ls: [make_batch(ls[i:i + 4], vocab_size, g) for i in range(0, len(ls), 4)]
        return [("train 2x32", train_step, [make_batch([32] * 2, vocab_size, g)], 2, 1, ("fp32", "bf16")),
                ("train var", train_step, [make_batch([20, 32], vocab_size, g)], 2, 1, ("fp32", "bf16")),
                ("var unsorted", infer, var(texts), 8, 1, ("fp32", "bf16")),
                ("var sorted", infer, var(sorted(texts)), 8, 1, ("fp32", "bf16"))]
    fixed = lambda B, T: [make_batch([T] * B, vocab_size, g)]
    lengths = random.Random(0).choices(range(VAR_LENGTHS[0], VAR_LENGTHS[1] + 1), k=VAR_SEQUENCES)
    chunks = lambda ls: [make_batch(ls[i:i + VAR_BATCH], vocab_size, g) for i in range(0, len(ls), VAR_BATCH)]
    short = random.Random(1).choices(range(20, 129), k=16)
    if quick:
        return [("train 16x128", train_step, fixed(16, 128), 16, 3, ("fp32", "bf16")),
                ("train var", train_step, [make_batch(short, vocab_size, g)], 16, 3, ("fp32", "bf16")),
                ("var unsorted", infer, chunks(lengths), VAR_SEQUENCES, 3, ("fp32", "bf16")),
                ("var sorted", infer, chunks(sorted(lengths)), VAR_SEQUENCES, 3, ("fp32", "bf16"))]
    return [
        ("train 16x128", train_step, fixed(16, 128), 16, 5, ("fp32", "bf16")),
        ("train var", train_step, [make_batch(short, vocab_size, g)], 16, 5, ("fp32", "bf16")),
        ("train 8x512", train_step, fixed(8, 512), 8, 3, ("fp32", "bf16")),
        ("infer 32x128", infer, fixed(32, 128), 32, 5, ("fp32", "bf16")),
        ("infer 32x512", infer, fixed(32, 512), 32, 3, ("fp32", "bf16")),
        ("var unsorted", infer, chunks(lengths), VAR_SEQUENCES, 3, ("fp32", "bf16")),
        ("var sorted", infer, chunks(sorted(lengths)), VAR_SEQUENCES, 3, ("fp32", "bf16")),
    ]


def measure(engines, optimizers, work, batches, dtype, repeats) -> dict[str, tuple[float, float]]:
    """Median seconds per call and peak RSS (MB) for each engine, calls interleaved after one warm-up
    call each (oneDNN primitive caches, allocator, autocast caches)."""
    calls = {name: (lambda name=name: work(engines[name], optimizers[name], batches, dtype)) for name in engines}
    return interleaved(calls, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the goal rows only (train 16x128, train var, "
                        "var unsorted and sorted), 3 repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (the --quick rows, shorter)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        folders = write_models(Path(folder), SMOKE) if args.smoke else (minilm_folder(), minilm_folder())
        engines = load_engines(*folders)
    # The optimizer steps of the training rows change the weights; speed does not depend on them.
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=2e-5, fused=True) for name, m in engines.items()}
    for name in ("minibert", "mb-unpad"):  # minibert's own default (also torch's fused AdamW)
        optimizers[name] = build_optimizer("adamw", [{"params": list(engines[name].parameters()),
                                                      "lr": 2e-5, "weight_decay": 0.01}])
    vocab_size = engines["minibert"].bert.config.vocab_size
    names = list(engines)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seq/s (median), "
          f"ratio = minibert / hf-sdpa, unpad = mb-unpad / hf-sdpa, peak RSS in MB")
    header = f"{'row':<14}{'dtype':<6}" + "".join(f"{n:>10}" for n in names) + f"{'ratio':>8}{'unpad':>8}  peak RSS"
    print(header)
    start = time.perf_counter()
    for row, work, batches, sequences, repeats, dtypes in rows(args.quick, vocab_size, args.smoke):
        for dtype in dtypes:
            result = measure(engines, optimizers, work, batches, dtype, repeats)
            speed = {n: sequences / result[n][0] for n in names}
            print(f"{row:<14}{dtype:<6}" + "".join(f"{speed[n]:>10.2f}" for n in names)
                  + f"{speed['minibert'] / speed['hf-sdpa']:>8.2f}{speed['mb-unpad'] / speed['hf-sdpa']:>8.2f}  "
                  + " / ".join(f"{result[n][1]:.0f}" for n in names), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {time.perf_counter() - start:.0f} s; peak RSS of the process {peak:.0f} MB")


if __name__ == "__main__":
    main()
