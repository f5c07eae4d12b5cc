"""Model FLOPs utilisation (MFU) of MiniLM fine-tuning and inference on the CPU, against transformers.

The CPU counterpart of gpu_mfu.py. First it measures this CPU's matrix peak with torch.mm, in fp32
and in bf16: a large 2048 x 2048 x 2048 product (the peak) and the products of a MiniLM training
step at 16 x 128 tokens (M = B*T = 2048 rows, hidden H = 384, feed-forward I = 1536: the forward
projections, the weight gradients). Then minibert (padded, its default, and unpadded: "mb-unpad")
and transformers' BertForSequenceClassification with SDPA attention ("hf-sdpa") run the same steps,
interleaved (one call of each in turn, repeated; medians), from the same all-MiniLM-L6-v2 weights
(the embedded model; --smoke: a tiny random model):

  train 16x128      fwd + bwd + AdamW step (each library's default: torch's fused AdamW), dropout on
  train var 16      the same on 16 sequences with lengths uniform in 20..128 (padded to the longest)
  infer 32x128      eval mode, no_grad
  infer var 64      64 texts of 20..512 tokens sorted by length, batches of 8

each in fp32 and under torch.autocast("cpu", dtype=torch.bfloat16) (--precisions).

Printed per row and engine: real tokens/s, achieved GFLOP/s of model FLOPs (bench_common.forward_flops,
the count gpu_mfu.py uses: the matrix products on the real tokens, training = 3 x forward), MFU =
that rate / the 2048^3 peak of the same precision, "of mm" = that rate / the rate of the MiniLM-shaped
products alone (what the step's matrix products could reach if nothing else took time), the process's
peak RSS during the call (it includes all three models), and the speed relative to transformers.
On a CPU without native bf16 (no avx512_bf16 or amx_bf16 in `lscpu`) torch's bf16 products are
emulated and the bf16 rows say nothing about a bf16 machine.

    python benchmarks/cpu_mfu.py                       # every row, fp32 and bf16, ~10 minutes on 2 cores
    python benchmarks/cpu_mfu.py --precisions fp32 --rows train --repeats 7
    python benchmarks/cpu_mfu.py --smoke               # a tiny random model, one call each (seconds)
"""

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_common import MINILM, NUM_LABELS, SMOKE, SMOKE_HELP, TRAINING, forward_flops, hf_classifier, infer, \
    interleaved, make_batch, minibert_classifier, train_step, write_models

from minibert.model.config import BertConfig
from minibert.resources import minilm_folder
from minibert.training.optimization import build_optimizer

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
ROWS = ("train", "train_var", "infer", "infer_var")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides the matrix peak


def cpu_description() -> str:
    """The CPU's model name and the flags of the list above that it has (from /proc/cpuinfo)."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads, flags: {' '.join(f for f in CPU_FLAGS if f in flags) or '-'}"


def mm_shapes(config: BertConfig, rows: int) -> dict[str, tuple[int, int, int]]:
    """name -> (m, k, n) of torch.mm: the large peak product and a MiniLM step's products at `rows`
    tokens (forward projections and the weight gradients of backward)."""
    H, I, M = config.hidden_size, config.intermediate_size, rows
    big = 2048 if config.hidden_size >= 256 else 256  # --smoke: a small "large" product
    return {f"{big}^3": (big, big, big),
            f"{M}x{H}x{H} (Q, K, V, out)": (M, H, H),
            f"{M}x{H}x{I} (FFN in)": (M, H, I),
            f"{M}x{I}x{H} (FFN out)": (M, I, H),
            f"{H}x{M}x{I} (weight grad)": (H, M, I)}


def mm_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of torch.mm (m, k) @ (k, n) in dtype: 2 m k n / the median of `repeats` calls."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype)
    torch.mm(a, b)  # warm-up: oneDNN primitive creation, page faults of the output
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times)


def matrix_peaks(config: BertConfig, precisions: list[str], repeats: int) -> dict[str, tuple[float, float]]:
    """precision -> (peak FLOP/s of the large product, FLOP/s of the MiniLM-shaped products together),
    after printing each product's rate."""
    shapes = mm_shapes(config, 16 * 128)
    print(f"{'torch.mm':<34}" + "".join(f"{p + ' GFLOP/s':>16}" for p in precisions))
    rates = {}
    for name, shape in shapes.items():
        rates[name] = {p: mm_rate(*shape, PRECISIONS[p], repeats) for p in precisions}
        print(f"{name:<34}" + "".join(f"{rates[name][p] / 1e9:>16.1f}" for p in precisions), flush=True)
    big, *step = shapes
    # The step's products as one workload in a layer's proportions: 4 H x H projections, the two FFN
    # products and two FFN-sized weight gradients; the rate is their total FLOPs / their total time.
    counts = dict(zip(step, (4, 1, 1, 2)))
    flops = {name: 2 * shapes[name][0] * shapes[name][1] * shapes[name][2] * counts[name] for name in step}
    mix = {p: sum(flops.values()) / sum(flops[name] / rates[name][p] for name in step) for p in precisions}
    return {p: (rates[big][p], mix[p]) for p in precisions}


def row_table(smoke: bool, vocab_size: int) -> dict:
    """key -> (name, work, batches, real lengths of all batches); --smoke: a few short sequences."""
    g = torch.Generator().manual_seed(0)
    n, T, L = (2, 32, 64) if smoke else (16, 128, 512)  # sequences, fixed length, longest mixed length
    mixed_train = random.Random(1).choices(range(20, T + 1), k=n)
    texts = sorted(random.Random(2).choices(range(20, L + 1), k=4 * n))
    infer_batches = [make_batch(texts[i:i + 8], vocab_size, g) for i in range(0, len(texts), 8)]
    return {"train": (f"train {n}x{T}", train_step, [make_batch([T] * n, vocab_size, g)], [T] * n),
            "train_var": (f"train var {n}", train_step, [make_batch(mixed_train, vocab_size, g)], mixed_train),
            "infer": (f"infer {2 * n}x{T}", infer, [make_batch([T] * 2 * n, vocab_size, g)], [T] * 2 * n),
            "infer_var": (f"infer var {4 * n}", infer, infer_batches, texts)}


def load_engines(smoke: bool, folder: Path) -> tuple[dict, BertConfig]:
    """{engine name: classifier} with the same weights, and their config."""
    minibert_folder, hf_folder = write_models(folder, SMOKE) if smoke else (minilm_folder(), minilm_folder())
    engines = {"minibert": minibert_classifier(minibert_folder, "padded"),
               "mb-unpad": minibert_classifier(minibert_folder, "unpadded"), "hf-sdpa": hf_classifier(hf_folder)}
    return engines, engines["minibert"].bert.config


def report(row: str, precision: str, result: dict, flops: int, tokens: int, peaks: tuple[float, float]) -> None:
    """One line per engine: tokens/s, GFLOP/s, MFU, share of the products' rate, peak RSS, vs HF."""
    for engine, (seconds, memory) in result.items():
        rate = flops / seconds
        print(f"{row:<15}{precision:<6}{engine:<10}{tokens / seconds:>10.0f}{rate / 1e9:>9.1f}"
              f"{100 * rate / peaks[0]:>7.1f}%{100 * rate / peaks[1]:>7.1f}%{memory:>9.0f}"
              f"{result['hf-sdpa'][0] / seconds:>7.2f}", flush=True)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16 (default both)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)} (default all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each engine per row (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (one timed call per engine and row)")
    args = parser.parse_args(argv)
    for flag, given, known in (("--precisions", args.precisions, PRECISIONS), ("--rows", args.rows, ROWS)):
        if unknown := sorted(set(given.split(",")) - set(known)):
            parser.error(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    if args.repeats < 1 or args.threads < 0:
        parser.error("--repeats must be at least 1 and --threads at least 0")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    precisions, repeats = args.precisions.split(","), 1 if args.smoke else args.repeats
    print(f"{cpu_description()}; torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    peaks = matrix_peaks(SMOKE if args.smoke else MINILM, precisions, 3 if args.smoke else 5)
    with tempfile.TemporaryDirectory() as folder:
        engines, config = load_engines(args.smoke, Path(folder))
    optimizers = {name: build_optimizer("adamw", [{"params": list(m.parameters()), "lr": 2e-5, "weight_decay": 0.01}])
                  for name, m in engines.items()}  # torch's fused AdamW: minibert's and Trainer's default
    table = row_table(args.smoke, config.vocab_size)
    print(f"\n{'smoke: tiny model' if args.smoke else 'all-MiniLM-L6-v2'}; medians of {repeats} interleaved calls; "
          "MFU = GFLOP/s / the 2048^3 peak, of mm = / the MiniLM-shaped products' rate; peak RSS of the process")
    print(f"{'row':<15}{'dtype':<6}{'engine':<10}{'tokens/s':>10}{'GFLOP/s':>9}{'MFU':>8}{'of mm':>8}"
          f"{'RSS MB':>9}{'vs HF':>7}")
    for key in args.rows.split(","):
        row, work, batches, lengths = table[key]
        flops = forward_flops(config, lengths, num_labels=NUM_LABELS) * (TRAINING if work is train_step else 1)
        for precision in precisions:
            calls = {name: (lambda name=name: work(engines[name], optimizers[name], batches, precision))
                     for name in engines}
            report(row, precision, interleaved(calls, repeats), flops, sum(lengths), peaks[precision])


if __name__ == "__main__":
    main()
