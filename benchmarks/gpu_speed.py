"""Speed of minibert against Hugging Face transformers on a CUDA GPU, at BERT-base's size.

Needs a CUDA device and transformers (`pip install -e ".[bench,gpu]"`). Both libraries run the same
randomly initialised BERT-base weights (12 layers, hidden 768, 12 heads, vocabulary 30,522; speed
does not depend on the values): minibert's default classifier (pooled [CLS] -> dropout -> Linear,
the last layer at [CLS] only) padded ("minibert": torch's SDPA) and unpadded ("mb-unpad": only
real tokens through the layers, attention by the Triton varlen kernel), against
BertForSequenceClassification with the "sdpa" attention. Before timing, the encoders' pooled
outputs are compared in fp32 on a padded batch (the same weights must give the same numbers).

Rows (seq/s = sequences / median seconds per call; bf16 autocast, as `--precision auto` on GPUs
with bf16; dropout on in training):
  train BxT   fwd + bwd + fused AdamW step, B sequences of T tokens
  train var   the same on B sequences with lengths uniform in 20..512, padded to the longest
  infer BxT   eval mode, no_grad
  infer var   1,024 texts of 20..512 tokens in batches of 64 in their given order (unsorted)
The engines are timed interleaved (one call of each in turn, repeated) with the GPU synchronised
around each call; ratio = minibert / hf-sdpa, unpad = mb-unpad / hf-sdpa. "peak MB" is what one
call allocates beyond what was already allocated when it started (the three models, their
optimizer states and gradients stay on the GPU throughout): activations, gradients and temporaries.

    python benchmarks/gpu_speed.py          # about a minute on an H100/H200
    python benchmarks/gpu_speed.py --smoke  # a tiny model on the CPU (or the GPU if there is one), seconds
"""

import argparse
import random
import tempfile
from pathlib import Path

import torch
from bench_common import (
    BERT_BASE,
    SMOKE,
    SMOKE_HELP,
    Clock,
    hf_classifier,
    infer,
    interleaved,
    make_batch,
    minibert_classifier,
    train_step,
    write_models,
)

from minibert.training.optimization import build_optimizer


def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed (mb-unpad re-pads inside attention)"
    return triton.__version__


def load_engines(minibert_folder: Path, hf_folder: Path, device: torch.device) -> dict:
    engines = {"minibert": minibert_classifier(minibert_folder, "padded"),
               "mb-unpad": minibert_classifier(minibert_folder, "unpadded"), "hf-sdpa": hf_classifier(hf_folder)}
    return {name: model.to(device) for name, model in engines.items()}


def check_same_numbers(engines: dict, vocab_size: int, device: torch.device) -> float:
    """Largest difference of the pooled [CLS] vectors, fp32, eval mode, a padded batch of 8."""
    g = torch.Generator().manual_seed(1)
    ids, types, mask = (t.to(device) for t in make_batch([37, 128, 5, 77, 128, 64, 9, 100], vocab_size, g))
    for model in engines.values():
        model.eval()
    with torch.no_grad():
        pooled = {name: engines[name].bert(ids, types, mask).pooled_output for name in ("minibert", "mb-unpad")}
        hf = engines["hf-sdpa"].model.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).pooler_output
    return max((pooled[name] - hf).abs().max().item() for name in pooled)


def rows(vocab_size: int, device: torch.device, smoke: bool):
    """(name, work, batches on the device, sequences per call); --smoke: a 64th of each batch."""
    g = torch.Generator().manual_seed(0)
    on = lambda lengths: tuple(t.to(device) for t in make_batch(lengths, vocab_size, g))
    mixed = lambda n, seed: random.Random(seed).choices(range(20, 513), k=n)
    n = (lambda b: max(1, b // 64)) if smoke else (lambda b: b)
    texts = mixed(n(1024), 2)
    return [(f"train {n(32)}x128", train_step, [on([128] * n(32))], n(32)),
            (f"train {n(16)}x512", train_step, [on([512] * n(16))], n(16)),
            (f"train var {n(32)}", train_step, [on(mixed(n(32), 1))], n(32)),
            (f"infer {n(256)}x128", infer, [on([128] * n(256))], n(256)),
            ("infer var", infer, [on(texts[i:i + 64]) for i in range(0, len(texts), 64)], len(texts))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of each engine per row (default 10)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (on the CPU when there is no GPU)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("gpu_speed.py needs a CUDA device (--smoke runs a tiny model on the CPU)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config, repeats = (SMOKE, 1) if args.smoke else (BERT_BASE, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        engines = load_engines(*write_models(Path(folder), config), device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, triton {triton_version()}; "
          f"{'tiny model' if args.smoke else 'BERT-base'}, random weights")
    print(f"pooled output, fp32: largest difference minibert vs transformers "
          f"{check_same_numbers(engines, config.vocab_size, device):.2e}")
    optimizers = {name: build_optimizer("adamw", [{"params": list(m.parameters()), "lr": 2e-5, "weight_decay": 0.01}])
                  for name, m in engines.items()}  # torch's fused AdamW for all three (Trainer's default)
    names = list(engines)
    print(f"{'row':<15}" + "".join(f"{n:>10}" for n in names) + f"{'ratio':>8}{'unpad':>8}  peak MB")
    for row, work, batches, sequences in rows(config.vocab_size, device, args.smoke):
        calls = {n: (lambda n=n, work=work, batches=batches: work(engines[n], optimizers[n], batches, "bf16"))
                 for n in names}
        result = interleaved(calls, repeats, warmup=1 if args.smoke else 2, clock=Clock(device))
        speed = {n: sequences / result[n][0] for n in names}
        print(f"{row:<15}" + "".join(f"{speed[n]:>10.1f}" for n in names)
              + f"{speed['minibert'] / speed['hf-sdpa']:>8.2f}{speed['mb-unpad'] / speed['hf-sdpa']:>8.2f}  "
              + " / ".join(f"{result[n][1]:.0f}" for n in names), flush=True)


if __name__ == "__main__":
    main()
