"""Model FLOPs utilisation (MFU) of MiniLM fine-tuning and inference on the CPU, against transformers.

The CPU counterpart of gpu_mfu.py. It measures this CPU's matrix peak with F.linear (x w^T, as
nn.Linear computes it), in fp32 and in bf16: a large 2048 x 2048 x 2048 product (the peak) and the
products of a MiniLM training step at 16 x 128 tokens (M = B*T = 2048 rows, hidden H = 384,
feed-forward I = 1536: the forward projections, the weight gradients), first each alone, then in
every row timed in turn with the engines, so that a shared machine's load weighs on the peak as on
the steps. Then minibert (padded, its default, and unpadded: "mb-unpad")
and transformers' BertForSequenceClassification with SDPA attention ("hf-sdpa") run the same steps,
interleaved (one call of each in turn, repeated; medians), from the same all-MiniLM-L6-v2 weights
(the embedded model; --smoke: a tiny random model):

  train 16x128      fwd + bwd + AdamW step (each library's default: torch's fused AdamW), dropout on
  train var 16      the same on 16 sequences with lengths uniform in 20..128 (padded to the longest)
  infer 32x128      eval mode, no_grad
  infer var 64      64 texts of 20..512 tokens sorted by length, batches of 8

each in fp32 and under torch.autocast("cpu", dtype=torch.bfloat16) (--precisions; bf16 by default only
where the CPU has it natively).

Printed per row and engine: real tokens/s, achieved GFLOP/s of model FLOPs (bench_common.forward_flops,
the count gpu_mfu.py uses: the matrix products on the real tokens, training = 3 x forward), MFU =
that rate / the large product's rate in the same precision, "of mm" = that rate / the rate of the
MiniLM-shaped products (what the step's matrix products could reach if nothing else took time), both
timed in the same interleaved loop as the engines, the process's
peak RSS during the call (it includes all three models), and the speed relative to transformers.
On a CPU without native bf16 (no avx512_bf16 or amx_bf16 in `lscpu`) torch's bf16 products are
emulated and the bf16 rows say nothing about a bf16 machine.

    python benchmarks/cpu_mfu.py                       # every row, fp32 (+ bf16 where native), minutes
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
import torch.nn.functional as F
from bench_common import (
    MINILM,
    NUM_LABELS,
    SMOKE,
    SMOKE_HELP,
    TRAINING,
    forward_flops,
    hf_classifier,
    infer,
    interleaved,
    make_batch,
    minibert_classifier,
    train_step,
    write_models,
)

from minibert.model.config import BertConfig
from minibert.resources import minilm_folder
from minibert.training.machine import keep_freed_memory
from minibert.training.optimization import build_optimizer

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
ROWS = ("train", "train_var", "infer", "infer_var")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides the matrix peak


def cpu_flags() -> tuple[str, set[str]]:
    """The CPU's model name and flags, from /proc/cpuinfo ("unknown CPU" and none elsewhere)."""
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
    return name, flags


def native_bf16(flags: set[str]) -> bool:
    """Whether the CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX); elsewhere torch's
    bf16 products are emulated, about a hundred times slower than fp32 on an AVX2 CPU."""
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def mm_shapes(config: BertConfig, rows: int) -> dict[str, tuple[int, int, int]]:
    """name -> (m, k, n) of x (m, k) w^T (k, n): the large peak product and a MiniLM step's products at `rows`
    tokens (forward projections and the weight gradients of backward)."""
    H, I, M = config.hidden_size, config.intermediate_size, rows
    big = 2048 if config.hidden_size >= 256 else 256  # --smoke: a small "large" product
    return {f"{big}^3": (big, big, big),
            f"{M}x{H}x{H} (Q, K, V, out)": (M, H, H),
            f"{M}x{H}x{I} (FFN in)": (M, H, I),
            f"{M}x{I}x{H} (FFN out)": (M, I, H),
            f"{H}x{M}x{I} (weight grad)": (H, M, I)}


def product_operands(m: int, k: int, n: int, dtype: torch.dtype, g: torch.Generator) -> tuple:
    """x (m, k) and w (n, k) for F.linear(x, w) = x w^T, the product as nn.Linear computes it (the
    layout matters where bf16 is emulated)."""
    return torch.randn(m, k, generator=g).to(dtype), torch.randn(n, k, generator=g).to(dtype)


def mm_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of the (m, k) x (k, n) product in dtype: 2 m k n / the median of `repeats` calls."""
    x, w = product_operands(m, k, n, dtype, torch.Generator().manual_seed(0))
    F.linear(x, w)  # warm-up: oneDNN primitive creation, page faults of the output
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        F.linear(x, w)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times)


def print_product_rates(config: BertConfig, precisions: list[str], repeats: int) -> None:
    """The rate of every product of mm_shapes, alone, in each precision."""
    print(f"{'x w^T alone (F.linear)':<34}" + "".join(f"{p + ' GFLOP/s':>16}" for p in precisions))
    for name, shape in mm_shapes(config, 16 * 128).items():
        rates = [mm_rate(*shape, PRECISIONS[p], repeats) for p in precisions]
        print(f"{name:<34}" + "".join(f"{rate / 1e9:>16.1f}" for rate in rates), flush=True)


def product_calls(config: BertConfig, precision: str) -> dict[str, tuple]:
    """name -> (zero-argument call, its FLOPs), timed next to the engines so that the peak is measured
    under the same load: "peak" the large product, "products" the step's products in a layer's
    proportions (4 H x H projections, the two FFN products, two FFN-sized weight gradients)."""
    g = torch.Generator().manual_seed(0)
    (big, *step) = mm_shapes(config, 16 * 128).values()
    large = product_operands(*big, PRECISIONS[precision], g)
    counted = [(product_operands(*shape, PRECISIONS[precision], g), count) for shape, count in zip(step, (4, 1, 1, 2))]

    def products():
        for (a, b), count in counted:
            for _ in range(count):
                F.linear(a, b)

    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[0] * count for (a, b), count in counted)
    return {"peak": (lambda: F.linear(*large), 2 * big[0] * big[1] * big[2]), "products": (products, flops)}


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
    """One line per engine: tokens/s, GFLOP/s, MFU, share of the products' rate, peak RSS, vs HF;
    then the two reference rates."""
    print(f"{row:<15}{precision:<6}(in turn with the engines: large product {peaks[0] / 1e9:.1f} GFLOP/s, "
          f"MiniLM-shaped products {peaks[1] / 1e9:.1f})")
    for engine, (seconds, memory) in result.items():
        rate = flops / seconds
        print(f"{row:<15}{precision:<6}{engine:<10}{tokens / seconds:>10.0f}{rate / 1e9:>9.1f}"
              f"{100 * rate / peaks[0]:>7.1f}%{100 * rate / peaks[1]:>7.1f}%{memory:>9.0f}"
              f"{result['hf-sdpa'][0] / seconds:>7.2f}", flush=True)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", default="", help="comma list of fp32, bf16 (default: fp32, and bf16 where "
                        "the CPU has native bf16; --smoke: both)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)} (default all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each engine per row (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--malloc", choices=("kept", "default"), default="kept",
                        help="kept: glibc keeps freed memory for reuse, as every minibert CPU run sets it "
                        "(minibert.training.machine.keep_freed_memory; process-wide, so transformers' steps here "
                        "get it too); default: glibc's own settings (default: kept)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (one timed call per engine and row)")
    args = parser.parse_args(argv)
    for flag, given, known in (("--precisions", args.precisions or "fp32", PRECISIONS), ("--rows", args.rows, ROWS)):
        if unknown := sorted(set(given.split(",")) - set(known)):
            parser.error(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    if args.repeats < 1 or args.threads < 0:
        parser.error("--repeats must be at least 1 and --threads at least 0")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = args.malloc == "kept" and keep_freed_memory()
    torch.manual_seed(0)
    name, flags = cpu_flags()
    native = native_bf16(flags)
    precisions = args.precisions.split(",") if args.precisions else ["fp32", "bf16"][:2 if native or args.smoke else 1]
    repeats = 1 if args.smoke else args.repeats
    print(f"{name}, {torch.get_num_threads()} threads, flags: {' '.join(f for f in CPU_FLAGS if f in flags) or '-'}; "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} at the "
          f"start; freed memory {'kept' if kept else 'returned (glibc defaults)'}")
    if not native:
        print("no native bf16 on this CPU: bf16 products are emulated, so bf16 rows say nothing about a bf16 machine")
    print_product_rates(SMOKE if args.smoke else MINILM, precisions, 3 if args.smoke else 5)
    with tempfile.TemporaryDirectory() as folder:
        engines, config = load_engines(args.smoke, Path(folder))
    optimizers = {name: build_optimizer("adamw", [{"params": list(m.parameters()), "lr": 2e-5, "weight_decay": 0.01}])
                  for name, m in engines.items()}  # torch's fused AdamW: minibert's and Trainer's default
    table = row_table(args.smoke, config.vocab_size)
    print(f"\n{'smoke: tiny model' if args.smoke else 'all-MiniLM-L6-v2'}; medians of {repeats} interleaved calls; "
          "MFU = GFLOP/s / the large product's rate, of mm = / the MiniLM-shaped products' rate, both timed "
          "in turn with the engines; peak RSS of the process")
    print(f"{'row':<15}{'dtype':<6}{'engine':<10}{'tokens/s':>10}{'GFLOP/s':>9}{'MFU':>8}{'of mm':>8}"
          f"{'RSS MB':>9}{'vs HF':>7}")
    for key in args.rows.split(","):
        row, work, batches, lengths = table[key]
        flops = forward_flops(config, lengths, num_labels=NUM_LABELS) * (TRAINING if work is train_step else 1)
        for precision in precisions:
            products = product_calls(config, precision)
            calls = {name: (lambda name=name, work=work, batches=batches, precision=precision:
                            work(engines[name], optimizers[name], batches, precision))
                     for name in engines}
            result = interleaved({**calls, **{name: call for name, (call, _) in products.items()}}, repeats)
            peaks = tuple(products[name][1] / result.pop(name)[0] for name in products)
            report(row, precision, result, flops, sum(lengths), peaks)


if __name__ == "__main__":
    main()
