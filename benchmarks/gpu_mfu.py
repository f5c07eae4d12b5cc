"""Model FLOPs utilisation (MFU) of BERT-base fine-tuning, pre-training and inference, against
Hugging Face transformers, with and without activation checkpointing.

Needs a CUDA device and transformers (`pip install -e ".[bench,gpu]"`); `--device cpu --tiny` runs
every row on a tiny model in seconds (a smoke test, not a measurement). The engines, as in
gpu_speed.py, hold the same randomly initialised weights: minibert padded ("minibert"), minibert
unpadded ("mb-unpad": the Triton varlen kernel on CUDA, the default there), and transformers with
SDPA attention ("hf-sdpa"): BertForSequenceClassification for fine-tuning and inference,
BertForPreTraining for pre-training. bf16 autocast, dropout on in training, torch's fused AdamW.

Rows (each training row also with "+ckpt": minibert's BertModel.checkpointing = "layers", i.e.
--gradient_checkpointing, and transformers' gradient_checkpointing_enable, both non-reentrant):
  finetune BxT     classifier fwd + bwd + optimizer step on B sequences of T tokens
  finetune var B   the same on B sequences with lengths uniform in 20..512 (padded to the longest)
  pretrain BxT     MLM (20 masked positions per sequence) + NSP, fwd + bwd, clipping, optimizer step
  infer var        eval mode, no_grad: texts of 20..512 tokens in batches, in their given order

What is counted (`forward_flops`; model FLOPs: the same count for every engine, whatever it
computes): 2 FLOPs per multiply-add of the matrix products of the model on the real tokens only:
per layer and token the Q, K, V and attention-output projections (4 H^2) and the feed-forward
network (2 H I); per layer and sequence of T tokens the attention scores QK^T and the weighted sum
of the values (2 T^2 H multiply-adds); per sequence the pooler (H^2) and the classifier (H x labels)
or the NSP classifier (H x 2); pre-training adds the MLM transform and the decoder (H^2 + H V) at the
masked positions only (as Google's get_masked_lm_output). Not counted: embeddings, biases,
LayerNorm, softmax, GELU, dropout, padding, the optimizer step, and the forward pass that activation
checkpointing repeats (so checkpointing shows up as lower MFU). Training = 3 x forward (backward
computes two products per forward product): 6 x (non-embedding weight matrices) x tokens + 12 x L x
T^2 x H per sequence; inference = forward = 1/3 of that.
MFU = counted FLOPs / (median seconds per call x the device's dense bf16 peak).

    python benchmarks/gpu_mfu.py                   # BERT-base on CUDA, a few minutes on an H100/H200
    python benchmarks/gpu_mfu.py --device cpu --tiny --threads 1   # the smoke run, under a minute
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from encoder_speed import HFClassifier, NUM_LABELS, infer, make_batch, minibert_classifier, peak_rss_mb, \
    peak_rss_reset, train_step
from gpu_speed import BERT_BASE, write_models
from pretrain_speed import hf_step, minibert_step

from minibert.checkpoints.formats import load_checkpoint, load_state, state_of
from minibert.model.config import BertConfig
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.training.optimization import build_optimizer

TINY = BertConfig(vocab_size=1500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=512)
MASKED_POSITIONS = 20  # pre-training predictions per sequence (Google's max_predictions_per_seq at 128)
TRAINING = 3  # forward + backward = 3 x forward: backward computes two products per forward product

# Dense bf16 tensor-core peaks in TFLOP/s (no sparsity), from the vendors' data sheets; the first
# substring found in torch.cuda.get_device_name() wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756), ("H100 NVL", 835), ("H100", 989), ("H200", 989), ("H20", 148), ("GH200", 989),
    ("B200", 2250), ("A100", 312), ("A800", 312), ("A10G", 70), ("A10", 125), ("L40S", 362), ("L40", 181),
    ("L4", 121), ("RTX 4090", 165), ("A6000", 155),
)


def forward_flops(config: BertConfig, lengths: list[int], num_labels: int = 0, masked_positions: int = 0) -> int:
    """FLOPs of one forward pass over sequences of the given real lengths, as the module docstring
    counts them: the encoder's matrix products, the pooler, and either a classifier of num_labels
    (fine-tuning, inference) or NSP plus the MLM head at masked_positions per sequence (pre-training)."""
    H, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    per_token = 4 * H * H + 2 * H * I  # multiply-adds of one layer per token: Q, K, V, output; FFN in, out
    attention = lambda T: 2 * T * T * H  # per layer: scores (T x D by D x T) and values (T x T by T x D), all heads
    encoder = L * sum(per_token * T + attention(T) for T in lengths)
    head = H * H + (H * num_labels if num_labels else H * 2 + masked_positions * (H * H + H * V))
    return 2 * (encoder + len(lengths) * head)


def peak_tflops(device: torch.device, override: float) -> float | None:
    """The device's dense bf16 peak: --peak_tflops, else the table; None if unknown (the CPU)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def pretraining_batch(lengths: list[int], vocab_size: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random records in Google's feature names, MASKED_POSITIONS distinct positions per sequence."""
    ids, types, mask = make_batch(lengths, vocab_size, g)
    positions = torch.stack([torch.randperm(T - 1, generator=g)[:MASKED_POSITIONS] + 1 for T in lengths])
    return {"input_ids": ids, "segment_ids": types, "input_mask": mask, "masked_lm_positions": positions,
            "masked_lm_ids": torch.randint(1000, vocab_size, positions.shape, generator=g),
            "masked_lm_weights": torch.ones(positions.shape), "next_sentence_labels": torch.randint(2, (len(lengths),),
                                                                                                generator=g)}


def pretrain_step(engine, optimizer, batches, dtype):
    engine.model.train()
    for batch in batches:
        engine.step(engine.model, optimizer, batch, dtype)


class PretrainEngine:
    """A BertForPreTraining and pretrain_speed.py's step for it (minibert's or transformers')."""

    def __init__(self, model, step):
        self.model, self.step = model, step

    def parameters(self):
        return self.model.parameters()


def load_engines(minibert_folder: Path, hf_folder: Path, device: torch.device) -> tuple[dict, dict]:
    """(classifiers, pre-training models), each {engine name: model} on the device, the same weights."""
    import transformers

    transformers.logging.set_verbosity_error()  # the untrained heads are expected
    transformers.utils.logging.disable_progress_bar()
    hf = transformers.BertForSequenceClassification.from_pretrained(str(hf_folder), num_labels=NUM_LABELS,
                                                                    attn_implementation="sdpa")
    classifiers = {"minibert": minibert_classifier(minibert_folder, "padded"),
                   "mb-unpad": minibert_classifier(minibert_folder, "unpadded"), "hf-sdpa": HFClassifier(hf)}
    checkpoint = load_checkpoint(minibert_folder)
    pretraining = {}
    for name, padding in (("minibert", "padded"), ("mb-unpad", "unpadded")):
        model = BertForPreTraining(checkpoint.config)
        load_state(model, {**state_of(model), **checkpoint.state}, str(minibert_folder))
        model.bert.padding = padding
        pretraining[name] = PretrainEngine(model.to(device), minibert_step)
    hf_pretraining = transformers.BertForPreTraining.from_pretrained(str(hf_folder), attn_implementation="sdpa")
    pretraining["hf-sdpa"] = PretrainEngine(hf_pretraining.to(device), hf_step)
    return {name: model.to(device) for name, model in classifiers.items()}, pretraining


def set_checkpointing(engines: dict, on: bool) -> None:
    """minibert: the encoder's execution attribute (what --gradient_checkpointing sets); transformers:
    its own switch, non-reentrant as minibert's."""
    for name, engine in engines.items():
        model = engine.model if isinstance(engine, (PretrainEngine, HFClassifier)) else engine
        if name != "hf-sdpa":
            model.bert.checkpointing = "layers" if on else "off"
        elif hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x renamed the switch
            model.activation_checkpointing_enable({"use_reentrant": False}) if on else model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_enable({"use_reentrant": False}) if on else model.gradient_checkpointing_disable()

def rows(config: BertConfig, tiny: bool, device: torch.device):
    """(name, kind, work, batches, the real lengths they hold, checkpointing); kind picks the engines."""
    g = torch.Generator().manual_seed(0)
    mixed = lambda n, seed: random.Random(seed).choices(range(20, 513), k=n)
    on = lambda batch: tuple(t.to(device) for t in batch)
    scale = (lambda b: max(1, b // 16)) if tiny else (lambda b: b)  # --tiny: a few sequences per batch
    classifier = lambda lengths: [on(make_batch(lengths, config.vocab_size, g))]
    texts, per_batch = mixed(scale(1024), 2), 16 if tiny else 64
    pretrain = [{k: v.to(device) for k, v in pretraining_batch([128] * scale(32), config.vocab_size, g).items()}]
    result = []
    for ckpt in (False, True):
        suffix = " +ckpt" if ckpt else ""
        for name, lengths in ((f"finetune {scale(32)}x128", [128] * scale(32)),
                              (f"finetune {scale(16)}x512", [512] * scale(16)),
                              (f"finetune var {scale(32)}", mixed(scale(32), 1))):
            result.append((name + suffix, "classifier", train_step, classifier(lengths), lengths, ckpt))
        result.append((f"pretrain {scale(32)}x128" + suffix, "pretraining", pretrain_step, pretrain,
                       [128] * scale(32), ckpt))
    batches = [on(make_batch(texts[i:i + per_batch], config.vocab_size, g)) for i in range(0, len(texts), per_batch)]
    result.append(("infer var", "classifier", infer, batches, texts, False))
    return result


class Clock:
    """Synchronised timing and the peak memory one call adds: CUDA's allocator counters, or on the
    CPU the process's peak RSS (which includes every model; encoder_speed.py's helpers)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.resident = torch.cuda.memory_allocated()
        else:
            peak_rss_reset()
        self.t = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.t
        peak = (torch.cuda.max_memory_allocated() - self.resident) / 2**20 if self.cuda else peak_rss_mb()
        return seconds, peak


def measure(engines, optimizers, work, batches, repeats, warmup, clock) -> dict[str, tuple[float, float]]:
    """Median seconds per call and the largest peak memory (MB), engines interleaved."""
    times, peak = {name: [] for name in engines}, dict.fromkeys(engines, 0.0)
    for name, engine in engines.items():  # warm-up: kernels compiled/autotuned, allocator caches
        for _ in range(warmup):
            work(engine, optimizers[name], batches, "bf16")
    for _ in range(repeats):
        for name, engine in engines.items():
            clock.start()
            work(engine, optimizers[name], batches, "bf16")
            seconds, memory = clock.stop()
            times[name].append(seconds)
            peak[name] = max(peak[name], memory)
    return {name: (statistics.median(times[name]), peak[name]) for name in engines}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of hidden 64, small batches, one "
                        "timed call: checks that every row runs (with --device cpu in seconds)")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="the device's dense bf16 peak (default: "
                        "from the table of known GPUs by name; none on the CPU: MFU is then not printed)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of each engine per row (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default; 1 for "
                        "the tiny CPU run on a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_mfu.py: no CUDA device (use --device cpu --tiny for a smoke run)")
    config, repeats, warmup = (TINY, 1, 1) if args.tiny else (BERT_BASE, args.repeats, 2)
    with tempfile.TemporaryDirectory() as folder:
        classifiers, pretraining = load_engines(*write_models(Path(folder), config), device)
    peak = peak_tflops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}; {'tiny model' if args.tiny else 'BERT-base'}, random weights, bf16; "
          f"peak {peak or 'unknown'} TFLOP/s; medians of {repeats} interleaved calls; peak MB = "
          + ("allocated beyond the resident models" if device.type == "cuda" else "process peak RSS"))
    print(f"{'row':<24}{'engine':<10}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'peak MB':>9}{'vs HF':>7}")
    for row, kind, work, batches, lengths, ckpt in rows(config, args.tiny, device):
        engines = classifiers if kind == "classifier" else pretraining
        set_checkpointing(engines, ckpt)
        optimizers = {n: build_optimizer("adamw", [{"params": list(e.parameters()), "lr": 2e-5, "weight_decay": 0.01}])
                      for n, e in engines.items()}  # torch's fused AdamW for every engine
        result = measure(engines, optimizers, work, batches, repeats, warmup, Clock(device))
        flops = forward_flops(config, lengths, **({"num_labels": NUM_LABELS} if kind == "classifier"
                                                   else {"masked_positions": MASKED_POSITIONS}))
        flops *= 1 if work is infer else TRAINING
        for engine, (seconds, memory) in result.items():
            tflops = flops / seconds / 1e12
            mfu = f"{100 * tflops / peak:>6.1f}%" if peak else f"{'-':>7}"
            print(f"{row:<24}{engine:<10}{sum(lengths) / seconds:>11.0f}{tflops:>9.3f}{mfu}{memory:>9.0f}"
                  f"{result['hf-sdpa'][0] / seconds:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
