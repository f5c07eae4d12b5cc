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
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from encoder_speed import NUM_LABELS, HFClassifier, make_batch, minibert_classifier

from minibert.checkpoints.formats import checkpoint_of, save_hf, save_minibert
from minibert.model.bert import BertModel
from minibert.model.config import BertConfig
from minibert.training.optimization import build_optimizer

BERT_BASE = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, max_position_embeddings=512)


def write_models(folder: Path, config: BertConfig = BERT_BASE) -> tuple[Path, Path]:
    """A random BERT (BERT-base by default) as a minibert folder and as a Hugging Face folder (the same weights)."""
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                               + [f"[unused{i}]" for i in range(config.vocab_size - 5)]) + "\n")
    torch.manual_seed(0)
    checkpoint = checkpoint_of(BertModel(config), vocab)
    save_minibert(folder / "minibert", checkpoint)
    save_hf(folder / "hf", checkpoint)
    return folder / "minibert", folder / "hf"


def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed (mb-unpad re-pads inside attention)"
    return triton.__version__


def load_engines(minibert_folder: Path, hf_folder: Path) -> dict:
    import transformers

    transformers.logging.set_verbosity_error()  # the untrained classifier head is expected
    transformers.utils.logging.disable_progress_bar()
    hf = transformers.BertForSequenceClassification.from_pretrained(str(hf_folder), num_labels=NUM_LABELS,
                                                                    attn_implementation="sdpa")
    engines = {"minibert": minibert_classifier(minibert_folder, "padded"),
               "mb-unpad": minibert_classifier(minibert_folder, "unpadded"), "hf-sdpa": HFClassifier(hf)}
    return {name: model.cuda() for name, model in engines.items()}


def check_same_numbers(engines: dict) -> float:
    """Largest difference of the pooled [CLS] vectors, fp32, eval mode, a padded batch of 8."""
    g = torch.Generator().manual_seed(1)
    ids, types, mask = (t.cuda() for t in make_batch([37, 128, 5, 77, 128, 64, 9, 100], BERT_BASE.vocab_size, g))
    for model in engines.values():
        model.eval()
    with torch.no_grad():
        pooled = {name: engines[name].bert(ids, types, mask).pooled_output for name in ("minibert", "mb-unpad")}
        hf = engines["hf-sdpa"].model.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).pooler_output
    return max((pooled[name] - hf).abs().max().item() for name in pooled)


def train_step(model, optimizer, batches):
    model.train()
    for ids, types, mask in batches:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids, types, mask)
        loss = F.cross_entropy(logits.float(), torch.arange(ids.shape[0], device="cuda") % NUM_LABELS)
        loss.backward()
        optimizer.step()


def infer(model, optimizer, batches):
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for ids, types, mask in batches:
            model(ids, types, mask)


def rows():
    """(name, work, batches on the GPU, sequences per call)."""
    g = torch.Generator().manual_seed(0)
    cuda = lambda lengths: tuple(t.cuda() for t in make_batch(lengths, BERT_BASE.vocab_size, g))
    mixed = lambda n, seed: random.Random(seed).choices(range(20, 513), k=n)
    texts = mixed(1024, 2)
    return [("train 32x128", train_step, [cuda([128] * 32)], 32),
            ("train 16x512", train_step, [cuda([512] * 16)], 16),
            ("train var 32", train_step, [cuda(mixed(32, 1))], 32),
            ("infer 256x128", infer, [cuda([128] * 256)], 256),
            ("infer var", infer, [cuda(texts[i:i + 64]) for i in range(0, len(texts), 64)], len(texts))]


def measure(engines, optimizers, work, batches, repeats) -> dict[str, tuple[float, float]]:
    """Median seconds per call and peak GPU memory (MB) each call adds, engines interleaved."""
    times, peak = {name: [] for name in engines}, dict.fromkeys(engines, 0.0)
    for name, model in engines.items():  # warm-up: kernels compiled/autotuned, allocator caches
        for _ in range(2):
            work(model, optimizers[name], batches)
    for _ in range(repeats):
        for name, model in engines.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()
            start = time.perf_counter()
            work(model, optimizers[name], batches)
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            peak[name] = max(peak[name], (torch.cuda.max_memory_allocated() - resident) / 2**20)
    return {name: (statistics.median(times[name]), peak[name]) for name in engines}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of each engine per row (default 10)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py needs a CUDA device")
    with tempfile.TemporaryDirectory() as folder:
        engines = load_engines(*write_models(Path(folder)))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton_version()}; "
          "BERT-base, random weights")
    print(f"pooled output, fp32: largest difference minibert vs transformers {check_same_numbers(engines):.2e}")
    optimizers = {name: build_optimizer("adamw", [{"params": list(m.parameters()), "lr": 2e-5, "weight_decay": 0.01}])
                  for name, m in engines.items()}  # torch's fused AdamW for all three (Trainer's default)
    names = list(engines)
    print(f"{'row':<15}" + "".join(f"{n:>10}" for n in names) + f"{'ratio':>8}{'unpad':>8}  peak MB")
    for row, work, batches, sequences in rows():
        result = measure(engines, optimizers, work, batches, args.repeats)
        speed = {n: sequences / result[n][0] for n in names}
        print(f"{row:<15}" + "".join(f"{speed[n]:>10.1f}" for n in names)
              + f"{speed['minibert'] / speed['hf-sdpa']:>8.2f}{speed['mb-unpad'] / speed['hf-sdpa']:>8.2f}  "
              + " / ".join(f"{result[n][1]:.0f}" for n in names), flush=True)


if __name__ == "__main__":
    main()
