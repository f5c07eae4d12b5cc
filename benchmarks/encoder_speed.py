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
"""

import argparse
import contextlib
import random
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.checkpoints.formats import load_pretrained
from minibert.model.bert import BertModel, init_weights
from minibert.model.heads import BertClassifier, ClsHead, HeadConfig
from minibert.resources import minilm_folder
from minibert.training.optimization import build_optimizer

NUM_LABELS = 5
VAR_SEQUENCES, VAR_BATCH, VAR_LENGTHS = 64, 8, (20, 512)


def minibert_classifier(folder, padding: str) -> BertClassifier:
    """The library's default classifier (ClsHead: pooled [CLS] -> dropout 0.1 -> Linear(H, 5), as
    Google's run_classifier.py) over the loaded encoder, with the library's default execution (the
    last layer at [CLS] only, BertModel.last_layer) and the given padding."""
    bert = load_pretrained(folder, BertModel)
    bert.padding = padding
    config = HeadConfig(num_labels=NUM_LABELS)
    head = ClsHead(bert.config, config)
    head.apply(lambda module: init_weights(module, bert.config.initializer_range))
    return BertClassifier.from_parts(bert.config, config, bert, head)


class HFClassifier(nn.Module):
    """Adapter giving BertForSequenceClassification the same call signature."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
        return self.model(input_ids=input_ids, token_type_ids=token_type_ids,
                          attention_mask=attention_mask).logits


def load_engines(folder) -> dict[str, nn.Module]:
    import transformers

    transformers.logging.set_verbosity_error()  # the untrained classifier head is expected
    transformers.utils.logging.disable_progress_bar()
    engines = {"minibert": minibert_classifier(folder, "padded"), "mb-unpad": minibert_classifier(folder, "unpadded")}
    for implementation in ("sdpa", "eager"):
        hf = transformers.BertForSequenceClassification.from_pretrained(
            str(folder), num_labels=NUM_LABELS, attn_implementation=implementation)
        engines[f"hf-{implementation}"] = HFClassifier(hf)
    return engines


def make_batch(lengths: list[int], vocab_size: int, generator: torch.Generator) -> tuple:
    """Random token ids, padded to the longest length with mask 0 (as a collate function does)."""
    B, T = len(lengths), max(lengths)
    ids = torch.randint(1000, vocab_size, (B, T), generator=generator)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    ids = ids * mask
    ids[:, 0] = 101  # [CLS]
    return ids, torch.zeros_like(ids), mask


def peak_rss_reset() -> None:
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def autocast_context(dtype: str, device_type: str = "cpu"):
    if dtype == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, optimizer, batches, dtype):
    """fwd + bwd + optimizer step per batch, on the batches' device (gpu_mfu.py runs it on CUDA too)."""
    model.train()
    device = batches[0][0].device
    labels = torch.arange(batches[0][0].shape[0], device=device) % NUM_LABELS
    for ids, types, mask in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(dtype, device.type):
            logits = model(ids, types, mask)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()


def infer(model, optimizer, batches, dtype):
    model.eval()
    with torch.no_grad(), autocast_context(dtype, batches[0][0].device.type):
        for ids, types, mask in batches:
            model(ids, types, mask)


def rows(quick: bool, vocab_size: int):
    """(name, work function, batches, sequences per call, repeats, dtypes) for every row."""
    g = torch.Generator().manual_seed(0)
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
    """Median seconds per call and peak RSS (MB) for each engine, calls interleaved."""
    times = {name: [] for name in engines}
    rss = dict.fromkeys(engines, 0.0)
    for name, model in engines.items():  # warm-up: oneDNN primitive caches, allocator, autocast caches
        work(model, optimizers[name], batches, dtype)
    for _ in range(repeats):
        for name, model in engines.items():
            peak_rss_reset()
            start = time.perf_counter()
            work(model, optimizers[name], batches, dtype)
            times[name].append(time.perf_counter() - start)
            rss[name] = max(rss[name], peak_rss_mb())
    return {name: (statistics.median(times[name]), rss[name]) for name in engines}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the goal rows only (train 16x128, train var, "
                        "var unsorted and sorted), 3 repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    engines = load_engines(minilm_folder())
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
    for row, work, batches, sequences, repeats, dtypes in rows(args.quick, vocab_size):
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
