"""What the benchmark scripts share; a benchmark imports this module, never another benchmark.

(A script run as `python benchmarks/NAME.py` has this folder on sys.path, so `from bench_common
import ...` works without installing anything.)

Contents, in order:
  model shapes       BERT_BASE, MINILM (all-MiniLM-L6-v2's shape), SMOKE (the --smoke model)
  models             random weights written in both libraries' formats, minibert's default
                     classifier, transformers' BertForSequenceClassification behind one signature
  batches            random token ids padded as a collate function does; pre-training records
  steps              a classifier's training step and inference; a pre-training step in each library
  FLOP count         forward_flops: model FLOPs, the same count for every engine and device
  memory, timing     peak RSS, a clock for CPU or CUDA, interleaved medians of several engines
  GPU attention      packed q/k/v batches and the float64 reference for the attention benchmarks
"""

import contextlib
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.checkpoints.formats import checkpoint_of, load_pretrained, save_hf, save_minibert
from minibert.model.bert import BertModel, init_weights
from minibert.model.config import BertConfig
from minibert.model.heads import BertClassifier, ClsHead, HeadConfig
from minibert.pretraining.losses import pretraining_loss_terms, pretraining_outputs

NUM_LABELS = 5  # classes of the benchmarks' classifier head (BBC News has 5)
MASKED_POSITIONS = 20  # pre-training predictions per sequence (Google's max_predictions_per_seq at 128)
TRAINING = 3  # forward + backward = 3 x forward: backward computes two products per forward product
SMOKE_HELP = "a tiny random model, a couple of calls: checks that the script runs (seconds), measures nothing"

BERT_BASE = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, max_position_embeddings=512)
MINILM = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512)  # all-MiniLM-L6-v2's shape
SMOKE = BertConfig(vocab_size=1500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, max_position_embeddings=512)


# ------------------------------------------------------------------------------------------------
# Models


def write_models(folder: Path, config: BertConfig = BERT_BASE) -> tuple[Path, Path]:
    """A random BERT as a minibert folder and as a Hugging Face folder (the same weights)."""
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                               + [f"[unused{i}]" for i in range(config.vocab_size - 5)]) + "\n")
    torch.manual_seed(0)
    checkpoint = checkpoint_of(BertModel(config), vocab)
    save_minibert(folder / "minibert", checkpoint)
    save_hf(folder / "hf", checkpoint)
    return folder / "minibert", folder / "hf"


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


def quiet_transformers():
    """transformers, imported with its warnings about untrained heads and its progress bars off."""
    import transformers

    transformers.logging.set_verbosity_error()  # the untrained heads are expected
    transformers.utils.logging.disable_progress_bar()
    return transformers


def hf_classifier(folder, attention: str = "sdpa") -> HFClassifier:
    """BertForSequenceClassification of NUM_LABELS over the folder's weights, with that attention."""
    transformers = quiet_transformers()
    return HFClassifier(transformers.BertForSequenceClassification.from_pretrained(
        str(folder), num_labels=NUM_LABELS, attn_implementation=attention))


# ------------------------------------------------------------------------------------------------
# Batches


def make_batch(lengths: list[int], vocab_size: int, generator: torch.Generator) -> tuple:
    """Random token ids, padded to the longest length with mask 0 (as a collate function does)."""
    B, T = len(lengths), max(lengths)
    low = min(1000, vocab_size // 2)  # past the special tokens of BERT's vocabularies
    ids = torch.randint(low, vocab_size, (B, T), generator=generator)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    ids = ids * mask
    ids[:, 0] = min(101, vocab_size - 1)  # [CLS] in BERT's uncased vocabulary
    return ids, torch.zeros_like(ids), mask


def pretraining_batch(lengths: list[int], vocab_size: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random records in Google's feature names, MASKED_POSITIONS distinct positions per sequence."""
    ids, types, mask = make_batch(lengths, vocab_size, g)
    positions = torch.stack([torch.randperm(T - 1, generator=g)[:MASKED_POSITIONS] + 1 for T in lengths])
    low = min(1000, vocab_size // 2)
    return {"input_ids": ids, "segment_ids": types, "input_mask": mask, "masked_lm_positions": positions,
            "masked_lm_ids": torch.randint(low, vocab_size, positions.shape, generator=g),
            "masked_lm_weights": torch.ones(positions.shape),
            "next_sentence_labels": torch.randint(2, (len(lengths),), generator=g)}


# ------------------------------------------------------------------------------------------------
# Steps: work(model, optimizer, batches, dtype), dtype "fp32" or "bf16" (autocast)


def autocast_context(dtype: str, device_type: str = "cpu"):
    """bf16 autocast on the device, or nothing for fp32."""
    if dtype == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, optimizer, batches, dtype):
    """fwd + bwd + optimizer step per (ids, types, mask) batch, on the batches' device."""
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
    """Eval mode, no_grad, every batch once (optimizer unused: the same signature as train_step)."""
    model.eval()
    with torch.no_grad(), autocast_context(dtype, batches[0][0].device.type):
        for ids, types, mask in batches:
            model(ids, types, mask)


def minibert_pretrain_step(model, optimizer, batch, precision):
    """pretrain.py's step on a minibert BertForPreTraining: MLM at the gathered positions + NSP,
    backward, global-norm clipping at 1.0, optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(precision, batch["input_ids"].device.type):
        output = pretraining_outputs(model, batch)
    weight = float(batch["masked_lm_weights"].sum())
    mlm, nsp = pretraining_loss_terms(output, batch, weight, len(batch["input_ids"]))
    (mlm + nsp).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def hf_pretrain_step(model, optimizer, batch, precision):
    """The same targets for transformers' BertForPreTraining: labels at the masked positions, -100
    elsewhere (it computes the MLM logits at every position)."""
    labels = torch.full_like(batch["input_ids"], -100)
    rows = torch.arange(len(labels), device=labels.device)[:, None].expand_as(batch["masked_lm_positions"])
    real = batch["masked_lm_weights"] > 0
    labels[rows[real], batch["masked_lm_positions"][real]] = batch["masked_lm_ids"][real]
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(precision, batch["input_ids"].device.type):
        out = model(input_ids=batch["input_ids"], token_type_ids=batch["segment_ids"],
                    attention_mask=batch["input_mask"])
    mlm = F.cross_entropy(out.prediction_logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
    nsp = F.cross_entropy(out.seq_relationship_logits.float(), batch["next_sentence_labels"])
    (mlm + nsp).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def hf_parameter_groups(model, weight_decay: float) -> list[dict]:
    """Trainer's grouping: weight decay on every parameter except biases and LayerNorm weights."""
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------------
# FLOP count (gpu_mfu.py and cpu_mfu.py)


def forward_flops(config: BertConfig, lengths: list[int], num_labels: int = 0, masked_positions: int = 0) -> int:
    """Model FLOPs of one forward pass over sequences of the given real lengths: 2 per multiply-add
    of the encoder's matrix products (per layer and token Q, K, V, output 4 H^2 and the FFN 2 H I;
    per layer and sequence of T tokens QK^T and the weighted values 2 T^2 H), the pooler, and either
    a classifier of num_labels (fine-tuning, inference) or NSP plus the MLM transform and decoder at
    masked_positions per sequence (pre-training, as Google's get_masked_lm_output). Not counted:
    embeddings, biases, LayerNorm, softmax, GELU, dropout, padding, the optimizer, recomputation.
    Training is TRAINING times this."""
    H, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    per_token = 4 * H * H + 2 * H * I  # multiply-adds of one layer per token: Q, K, V, output; FFN in, out
    attention = lambda T: 2 * T * T * H  # per layer: scores (T x D by D x T) and values (T x T by T x D), all heads
    encoder = L * sum(per_token * T + attention(T) for T in lengths)
    head = H * H + (H * num_labels if num_labels else H * 2 + masked_positions * (H * H + H * V))
    return 2 * (encoder + len(lengths) * head)


# ------------------------------------------------------------------------------------------------
# Memory and timing


def peak_rss_reset() -> None:
    """Reset the process's resident-set high-water mark (VmHWM; Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_rss_mb() -> float:
    """The process's resident-set high-water mark in MB (nan where /proc has none)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


class Clock:
    """Synchronised timing and the peak memory of one call: on CUDA what it allocates beyond what
    was resident when it started; on the CPU the process's peak RSS (which includes every model)."""

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
        """(seconds since start, peak MB)."""
        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.t
        peak = (torch.cuda.max_memory_allocated() - self.resident) / 2**20 if self.cuda else peak_rss_mb()
        return seconds, peak


def interleaved(calls: dict, repeats: int, warmup: int = 1, clock: Clock | None = None
                ) -> dict[str, tuple[float, float]]:
    """{name: (median seconds, largest peak MB)} of the zero-argument `calls`, one call of each in
    turn, `repeats` times, after `warmup` untimed calls of each (kernel and allocator caches)."""
    clock = clock or Clock(torch.device("cpu"))
    for call in calls.values():
        for _ in range(warmup):
            call()
    times, peak = {name: [] for name in calls}, dict.fromkeys(calls, 0.0)
    for _ in range(repeats):
        for name, call in calls.items():
            clock.start()
            call()
            seconds, memory = clock.stop()
            times[name].append(seconds)
            peak[name] = max(peak[name], memory)
    return {name: (statistics.median(times[name]), peak[name]) for name in calls}


def skip(script: str, reason: str) -> int:
    """A run that cannot happen on this machine: one line saying why (the smoke test reads
    'skipped: '), exit status 0."""
    print(f"skipped: {script} {reason}")
    return 0


# ------------------------------------------------------------------------------------------------
# GPU attention (gpu_attention.py and varlen_tiles.py): q, k, v packed (T, N, D) on CUDA

HEADS, HEAD_DIM = 12, 64  # BERT-base
TOKENS = 32768  # packed tokens per benchmark batch (64 x 512)


def packed(lengths, heads, head_dim, dtype, seed=0):
    """q, k, v (T, N, D) leaves on the GPU, cu_seqlens int32 (B + 1,), max_seqlen."""
    g = torch.Generator().manual_seed(seed)
    shape = (sum(lengths), heads, head_dim)
    q, k, v = (torch.randn(shape, generator=g).cuda().to(dtype).requires_grad_() for _ in range(3))
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    return q, k, v, cu_seqlens, max(lengths)


def padding_index(cu_seqlens, L):
    """Rows of the (B * L) padded batch that hold the packed tokens, and the (B, L) real-token mask."""
    bounds = cu_seqlens.tolist()
    rows = torch.cat([torch.arange(b * L, b * L + e - s) for b, (s, e) in enumerate(zip(bounds, bounds[1:]))]).cuda()
    lengths = torch.tensor([e - s for s, e in zip(bounds, bounds[1:])], device="cuda")
    return rows, torch.arange(L, device="cuda")[None, :] < lengths[:, None]


def to_padded(x, rows, B, L):
    """(T, N, D) -> (B, N, L, D), zeros in the padding (differentiable)."""
    padded = x.new_zeros(B * L, *x.shape[1:]).index_copy(0, rows, x)
    return padded.view(B, L, *x.shape[1:]).transpose(1, 2)


def sdpa_packed(q, k, v, cu_seqlens, L, dropout_p=0.0, masked=True, backend=None):
    """SDPA on the padded batch, returned packed (T, N, D); without `masked` padded keys take part."""
    from torch.nn.attention import sdpa_kernel

    rows, real = padding_index(cu_seqlens, L)
    B = cu_seqlens.numel() - 1
    qp, kp, vp = (to_padded(t, rows, B, L) for t in (q, k, v))
    mask = real[:, None, None, :] if masked else None
    with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(B * L, *q.shape[1:])[rows]


def exact_results(q, k, v, cu_seqlens, L, dropout_p=0.0, keep=None):
    """float64 out and (out, dq, dk, dv) for a fixed random dout, from the written-out formula."""
    from minibert.model.kernels import varlen_attention_reference

    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out = varlen_attention_reference(*exact, cu_seqlens, L, dropout_p, keep)
    grad_out = torch.randn(out.shape, dtype=torch.float64, device="cuda")
    return grad_out, [out.detach(), *torch.autograd.grad(out, exact, grad_out)]


def errors(out, inputs, grad_out, expected):
    """Max abs error of out, dq, dk, dv against the float64 results."""
    found = [out, *torch.autograd.grad(out, inputs, grad_out.to(out.dtype))]
    return [(a.double() - b).abs().max().item() for a, b in zip(found, expected)]


class Batch:
    """One benchmark batch twice: packed (T, N, D) for the varlen kernels and padded (B, N, L, D)
    for SDPA, each with its own leaves and dout, so that no engine is timed padding or unpadding."""

    def __init__(self, lengths, head_dim=HEAD_DIM, dtype=torch.bfloat16):
        self.q, self.k, self.v, self.cu, self.L = packed(lengths, HEADS, head_dim, dtype)
        self.grad_out = torch.randn_like(self.q)
        rows, real = padding_index(self.cu, self.L)
        padded = [to_padded(t.detach(), rows, len(lengths), self.L) for t in (self.q, self.k, self.v, self.grad_out)]
        self.qp, self.kp, self.vp = (t.contiguous().requires_grad_() for t in padded[:3])
        self.grad_out_padded = padded[3].contiguous()
        self.mask = real[:, None, None, :]  # (B, 1, 1, L) real keys

    def packed_step(self, attend):
        out = attend(self.q, self.k, self.v, self.cu, self.L)
        torch.autograd.grad(out, (self.q, self.k, self.v), self.grad_out)

    def padded_step(self, backend, dropout_p=0.0, masked=False):
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(self.qp, self.kp, self.vp, attn_mask=self.mask if masked else None,
                                                 dropout_p=dropout_p)
        torch.autograd.grad(out, (self.qp, self.kp, self.vp), self.grad_out_padded)
