"""Model FLOPs utilisation (MFU) of BERT-base fine-tuning, pre-training and inference, against
Hugging Face transformers, with and without activation checkpointing.

Needs a CUDA device and transformers (`pip install -e ".[bench,gpu]"`); `--smoke` runs
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

What is counted (bench_common.forward_flops, shared with cpu_mfu.py; model FLOPs: the same count for every engine,
whatever it computes): 2 FLOPs per multiply-add of the matrix products of the model on the real tokens only:
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
    python benchmarks/gpu_mfu.py --smoke --threads 1   # the smoke run (on the CPU without a GPU), under a minute
"""

import argparse
import random
import tempfile
from pathlib import Path

import torch
from bench_common import (
    BERT_BASE,
    MASKED_POSITIONS,
    NUM_LABELS,
    SMOKE,
    SMOKE_HELP,
    TRAINING,
    Clock,
    HFClassifier,
    forward_flops,
    hf_classifier,
    hf_pretrain_step,
    infer,
    interleaved,
    make_batch,
    minibert_classifier,
    minibert_pretrain_step,
    pretraining_batch,
    quiet_transformers,
    train_step,
    write_models,
)

from minibert.checkpoints.formats import load_checkpoint, load_state, state_of
from minibert.model.config import BertConfig
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.training.optimization import build_optimizer

# Dense bf16 tensor-core peaks in TFLOP/s (no sparsity), from the vendors' data sheets; the first
# substring found in torch.cuda.get_device_name() wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756), ("H100 NVL", 835), ("H100", 989), ("H200", 989), ("H20", 148), ("GH200", 989),
    ("B200", 2250), ("A100", 312), ("A800", 312), ("A10G", 70), ("A10", 125), ("L40S", 362), ("L40", 181),
    ("L4", 121), ("RTX 4090", 165), ("A6000", 155),
)


def peak_tflops(device: torch.device, override: float) -> float | None:
    """The device's dense bf16 peak: --peak_tflops, else the table; None if unknown (the CPU)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def pretrain_step(engine, optimizer, batches, dtype):
    engine.model.train()
    for batch in batches:
        engine.step(engine.model, optimizer, batch, dtype)


class PretrainEngine:
    """A BertForPreTraining and the pre-training step for it (minibert's or transformers')."""

    def __init__(self, model, step):
        self.model, self.step = model, step

    def parameters(self):
        return self.model.parameters()


def load_engines(minibert_folder: Path, hf_folder: Path, device: torch.device) -> tuple[dict, dict]:
    """(classifiers, pre-training models), each {engine name: model} on the device, the same weights."""
    classifiers = {"minibert": minibert_classifier(minibert_folder, "padded"),
                   "mb-unpad": minibert_classifier(minibert_folder, "unpadded"), "hf-sdpa": hf_classifier(hf_folder)}
    checkpoint = load_checkpoint(minibert_folder)
    pretraining = {}
    for name, padding in (("minibert", "padded"), ("mb-unpad", "unpadded")):
        model = BertForPreTraining(checkpoint.config)
        load_state(model, {**state_of(model), **checkpoint.state}, str(minibert_folder))
        model.bert.padding = padding
        pretraining[name] = PretrainEngine(model.to(device), minibert_pretrain_step)
    hf_pretraining = quiet_transformers().BertForPreTraining.from_pretrained(str(hf_folder),
                                                                             attn_implementation="sdpa")
    pretraining["hf-sdpa"] = PretrainEngine(hf_pretraining.to(device), hf_pretrain_step)
    return {name: model.to(device) for name, model in classifiers.items()}, pretraining


def set_checkpointing(engines: dict, on: bool) -> None:
    """minibert: the encoder's execution attribute (what --gradient_checkpointing sets); transformers:
    its own switch, non-reentrant as minibert's."""
    for name, engine in engines.items():
        model = engine.model if isinstance(engine, (PretrainEngine, HFClassifier)) else engine
        if name != "hf-sdpa":
            model.bert.checkpointing = "layers" if on else "off"
        elif hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x renamed the switch
            (model.activation_checkpointing_enable({"use_reentrant": False}) if on
             else model.activation_checkpointing_disable())
        else:
            (model.gradient_checkpointing_enable({"use_reentrant": False}) if on
             else model.gradient_checkpointing_disable())

def rows(config: BertConfig, smoke: bool, device: torch.device):
    """(name, kind, work, batches, the real lengths they hold, checkpointing); kind picks the engines."""
    g = torch.Generator().manual_seed(0)
    mixed = lambda n, seed: random.Random(seed).choices(range(20, 513), k=n)
    on = lambda batch: tuple(t.to(device) for t in batch)
    scale = (lambda b: max(1, b // 16)) if smoke else (lambda b: b)  # --smoke: a few sequences per batch
    classifier = lambda lengths: [on(make_batch(lengths, config.vocab_size, g))]
    texts, per_batch = mixed(scale(1024), 2), 16 if smoke else 64
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


def measure(engines, optimizers, work, batches, repeats, warmup, clock) -> dict[str, tuple[float, float]]:
    """Median seconds per call and the largest peak memory (MB), engines interleaved, bf16."""
    calls = {name: (lambda name=name: work(engines[name], optimizers[name], batches, "bf16")) for name in engines}
    return interleaved(calls, repeats, warmup, clock)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="", help="cuda (the default), cuda:N or cpu (the default of --smoke "
                        "without a GPU)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (every row, small batches, one timed "
                        "call)")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="the device's dense bf16 peak (default: "
                        "from the table of known GPUs by name; none on the CPU: MFU is then not printed)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of each engine per row (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default; 1 for "
                        "the tiny CPU run on a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cpu" if args.smoke and not torch.cuda.is_available() else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_mfu.py: no CUDA device (--smoke runs a tiny model on the CPU)")
    config, repeats, warmup = (SMOKE, 1, 1) if args.smoke else (BERT_BASE, args.repeats, 2)
    with tempfile.TemporaryDirectory() as folder:
        classifiers, pretraining = load_engines(*write_models(Path(folder), config), device)
    peak = peak_tflops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}; {'tiny model' if args.smoke else 'BERT-base'}, random weights, bf16; "
          f"peak {peak or 'unknown'} TFLOP/s; medians of {repeats} interleaved calls; peak MB = "
          + ("allocated beyond the resident models" if device.type == "cuda" else "process peak RSS"))
    print(f"{'row':<24}{'engine':<10}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'peak MB':>9}{'vs HF':>7}")
    for row, kind, work, batches, lengths, ckpt in rows(config, args.smoke, device):
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
