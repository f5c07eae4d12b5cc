"""What computing the last layer only where the heads read it gains (BertModel.last_layer).

The same all-MiniLM-L6-v2 models, one with last_layer = "needed" (the library's default: the last
layer's queries, attention output, FFN and LayerNorms at [CLS], or at [CLS] and the masked
positions in pre-training) and one with "all" (every position), run the same batches in turn; the
ratio of the medians (needed / all, in sequences per second) is what to read on a shared machine.
There is no peer here: encoder_speed.py and pretrain_speed.py give the ratios against Hugging Face.

Rows:
  train 16x128   the default classifier (BertClassifier, pooled [CLS] -> dropout -> Linear), fwd +
                 bwd + AdamW, train mode (dropout 0.1)
  infer 32x128   the same classifier, eval mode, no_grad
  infer var      64 texts of 20..512 tokens sorted by length, batches of 8, unpadded encoder
  pretrain       BertForPreTraining 16x128 with 20 masked positions per row: MLM + NSP loss, fwd +
                 bwd + AdamW, train mode
each in fp32 and under torch.autocast("cpu", dtype=torch.bfloat16).

    python benchmarks/last_layer_speed.py --threads 1
    python benchmarks/last_layer_speed.py --smoke    # a tiny random model, one repeat (seconds)
"""

import argparse
import random
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import SMOKE, SMOKE_HELP, autocast_context, interleaved, minibert_classifier, write_models

from minibert.checkpoints.formats import load_checkpoint, load_state, state_of
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.resources import minilm_folder
from minibert.training.optimization import build_optimizer

PREDICTIONS = 20


def random_batch(lengths: list[int], vocab_size: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Token ids padded to the longest length, [CLS] first; masked positions and labels for pre-training."""
    B, T = len(lengths), max(lengths)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(1000, vocab_size, (B, T), generator=g) * mask
    ids[:, 0] = 101
    P = min(PREDICTIONS, min(lengths) - 1)
    positions = torch.stack([torch.randperm(n - 1, generator=g)[:P] + 1 for n in lengths])  # (B, P) distinct
    return {"ids": ids, "types": torch.zeros_like(ids), "mask": mask, "positions": positions,
            "mlm_labels": torch.randint(1000, vocab_size, positions.shape, generator=g),
            "labels": torch.arange(B) % 2}


def train_classifier(model, optimizer, batches, dtype):
    model.train()
    for b in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(dtype):
            logits = model(b["ids"], b["types"], b["mask"])
        F.cross_entropy(logits.float(), b["labels"]).backward()
        optimizer.step()


def infer_classifier(model, optimizer, batches, dtype):
    model.eval()
    with torch.no_grad(), autocast_context(dtype):
        for b in batches:
            model(b["ids"], b["types"], b["mask"])


def train_pretraining(model, optimizer, batches, dtype):
    model.train()
    for b in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(dtype):
            out = model(b["ids"], b["types"], b["mask"], masked_lm_positions=b["positions"])
        mlm = F.cross_entropy(out.mlm_logits.float().flatten(0, 1), b["mlm_labels"].flatten())
        (mlm + F.cross_entropy(out.nsp_logits.float(), b["labels"])).backward()
        optimizer.step()


def pair(build) -> dict[str, torch.nn.Module]:
    """Two copies of one model: last_layer "needed" (the default) and "all"."""
    models = {"needed": build(), "all": build()}
    models["all"].bert.last_layer = "all"
    return models


def measure(models, work, batches, dtype, repeats) -> dict[str, float]:
    """Median seconds per call of each model, calls interleaved after one warm-up call each."""
    optimizers = {name: build_optimizer("adamw", [{"params": list(m.parameters()), "lr": 1e-5,
                                                   "weight_decay": 0.01}]) for name, m in models.items()}
    calls = {name: (lambda name=name: work(models[name], optimizers[name], batches, dtype)) for name in models}
    return {name: seconds for name, (seconds, _) in interleaved(calls, repeats).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model and row (default 5)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (one repeat)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_models(Path(tmp), SMOKE)[0] if args.smoke else minilm_folder()
        run(folder, 1 if args.smoke else args.repeats)


def run(folder: Path, repeats: int) -> None:
    """Every row, fp32 and bf16, on the model in `folder`."""
    g = torch.Generator().manual_seed(0)
    vocab_size = load_checkpoint(folder).config.vocab_size
    lengths = sorted(random.Random(0).choices(range(20, 513), k=64))
    var = [random_batch(lengths[i:i + 8], vocab_size, g) for i in range(0, len(lengths), 8)]

    def pretraining():  # MiniLM's encoder with fresh MLM/NSP heads (it ships none), as pretrain_speed.py
        checkpoint = load_checkpoint(folder)
        model = BertForPreTraining(checkpoint.config)
        load_state(model, {**state_of(model), **checkpoint.state}, str(folder))
        return model

    rows = [("train 16x128", lambda: pair(lambda: minibert_classifier(folder, "padded")), train_classifier,
             [random_batch([128] * 16, vocab_size, g)], 16),
            ("infer 32x128", lambda: pair(lambda: minibert_classifier(folder, "padded")), infer_classifier,
             [random_batch([128] * 32, vocab_size, g)], 32),
            ("infer var", lambda: pair(lambda: minibert_classifier(folder, "unpadded")), infer_classifier, var, 64),
            ("pretrain", lambda: pair(pretraining), train_pretraining, [random_batch([128] * 16, vocab_size, g)], 16)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seq/s (median of {repeats} "
          f"interleaved calls); gain = needed / all")
    print(f"{'row':<14}{'dtype':<6}{'needed':>10}{'all':>10}{'gain':>8}")
    for name, build, work, batches, sequences in rows:
        models = build()
        for dtype in ("fp32", "bf16"):
            median = measure(models, work, batches, dtype, repeats)
            speed = {mode: sequences / s for mode, s in median.items()}
            print(f"{name:<14}{dtype:<6}{speed['needed']:>10.2f}{speed['all']:>10.2f}"
                  f"{speed['needed'] / speed['all']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
