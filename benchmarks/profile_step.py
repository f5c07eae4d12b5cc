"""Where the time of a MiniLM training step and of inference goes, by kind of work, on the CPU.

Each step runs under torch.profiler; every profiled operator's self time (time in the operator
itself, not in operators it calls) is given to one kind of work:

  matmul       aten::mm / addmm / bmm / linear outside attention (the Linear layers, fwd and bwd)
  attention    everything inside the attention call and its backward node (scores, softmax,
               dropout mask of the probabilities, context)
  layernorm    native_layer_norm and its backward
  gelu         gelu and its backward
  dropout      the hidden-state dropout masks and products (forward), their products in backward
  embedding    embedding lookups and the embedding gradient (EmbeddingBackward)
  optimizer    the optimizer step (and gradient clipping)
  collation    padding a batch of encoded documents into tensors (collate + model_inputs)
  other ops    every other operator (adds, copies, casts of autocast, the loss, views, ...)
  python       the step's wall time minus the self time of all operators: Python and dispatch
               overhead between operators

Each step is profiled on its own and the table gives per-kind medians over the profiled steps,
in milliseconds and as a share of the median step; --top K adds the K operators with the most self
time (mean per call over the profiled calls) and the matrix products' share of all operators' self
time. The process keeps the memory its steps free, as every CPU run of the library does
(machine.keep_freed_memory). The machine may be shared with other jobs: absolute times drift,
shares are steadier.

    python benchmarks/profile_step.py                    # train 16x128 and inference, fp32 and bf16
    python benchmarks/profile_step.py --rows train --precisions bf16 --steps 3
    python benchmarks/profile_step.py --rows mixed --padding unpadded
    python benchmarks/profile_step.py --rows train --precisions bf16 --threads 1 --train_batch 24 --top 20
    python benchmarks/profile_step.py --smoke           # a tiny random model, every row once (seconds)
"""

import argparse
import functools
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import SMOKE, SMOKE_HELP, write_models
from torch.profiler import ProfilerActivity, profile, record_function

import minibert.model.bert as bert_module
from minibert.checkpoints.formats import load_checkpoint, load_state
from minibert.data.features import EncodedDoc, EncodedDocs, collate, model_inputs
from minibert.model.heads import BertClassifier, HeadConfig
from minibert.resources import minilm_folder
from minibert.training.machine import autocast, keep_freed_memory
from minibert.training.optimization import build_optimizer, parameter_groups

NUM_LABELS = 5
PAD_ID = 0  # [PAD] in the uncased BERT vocabularies (MiniLM's included)
ROWS = ("train", "infer", "mixed")  # the keys of rows()
PRECISIONS = ("fp32", "bf16")
KINDS = ("matmul", "attention", "layernorm", "gelu", "dropout", "embedding", "optimizer", "collation",
         "other ops", "python")

# Regions: an operator anywhere below an event of this name belongs to the kind (outermost wins).
REGIONS = {
    "region attention": "attention",
    "region dropout": "dropout",
    "region optimizer": "optimizer",
    "region collation": "collation",
}
# Names of autograd nodes (backward) and operators, matched as substrings, in this order.
NAME_RULES = (
    ("Attention", "attention"),  # BlockedAttentionBackward, ScaledDotProduct...Backward
    ("attention", "attention"),
    ("mbedding", "embedding"),  # aten::embedding, EmbeddingBackward0, embedding_dense_backward
    ("layer_norm", "layernorm"),
    ("LayerNorm", "layernorm"),
    ("gelu", "gelu"),
    ("Gelu", "gelu"),
    ("aten::mm", "matmul"),
    ("aten::addmm", "matmul"),
    ("aten::bmm", "matmul"),
    ("aten::linear", "matmul"),
    ("mkldnn_linear", "matmul"),
    ("aten::matmul", "matmul"),
)


def kind_of(event) -> str:
    """The kind of work of one profiled event (see the module docstring)."""
    chain, node = [], event
    while node is not None:
        chain.append(node.name)
        node = node.cpu_parent
    for name in reversed(chain):  # outermost region first
        if name in REGIONS:
            return REGIONS[name]
    for name in chain:  # innermost operator or autograd node that names a kind
        for pattern, kind in NAME_RULES:
            if pattern in name:
                return kind
    return "other ops"


def tag(function, region: str):
    """`function` wrapped in a profiler range named `region`."""
    @functools.wraps(function)
    def tagged(*args, **kwargs):
        with record_function(region):
            return function(*args, **kwargs)
    return tagged


def tag_model_regions() -> None:
    """Name the attention and dropout calls of the encoder's layers for the profiler."""
    for name in ("attention", "dropout"):
        if hasattr(bert_module, name):
            setattr(bert_module, name, tag(getattr(bert_module, name), f"region {name}"))


def build_model(folder: Path) -> BertClassifier:
    pretrained = load_checkpoint(folder)
    model = BertClassifier(pretrained.config, HeadConfig(NUM_LABELS))
    load_state(model.bert, pretrained.state, str(pretrained.source))
    return model


def make_docs(lengths: list[int], vocab_size: int, seed: int) -> list[EncodedDoc]:
    rng = random.Random(seed)
    chunks = [[([101] + [rng.randrange(1000, vocab_size) for _ in range(n - 2)] + [102], [0] * n)]  # [CLS] ... [SEP]
              for n in lengths]
    return list(EncodedDocs.from_chunks(chunks, [i % NUM_LABELS for i in range(len(lengths))]))


def train_step(model, optimizer, batches, precision):
    """One optimizer step per batch, as train.py does it (collate, autocast, loss, clip, step)."""
    model.train()
    device = torch.device("cpu")
    for docs in batches:
        with record_function("region collation"):
            batch = collate(docs, hierarchical=False, pad_id=PAD_ID)
            inputs = model_inputs(batch, device)
        with autocast(device, precision):
            logits = model(**inputs)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        loss.backward()
        with record_function("region optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def infer(model, optimizer, batches, precision):
    model.eval()
    device = torch.device("cpu")
    for docs in batches:
        with record_function("region collation"):
            inputs = model_inputs(collate(docs, hierarchical=False, pad_id=PAD_ID), device)
        with autocast(device, precision):
            model(**inputs)


def rows(vocab_size: int, train_batch: int = 16) -> dict:
    """name -> (work, batches of EncodedDocs, sequences per call)."""
    mixed = random.Random(0).choices(range(20, 513), k=64)
    mixed_docs = make_docs(sorted(mixed, reverse=True), vocab_size, 2)  # sorted, as evaluation batches
    return {
        "train": (f"train {train_batch}x128", train_step, [make_docs([128] * train_batch, vocab_size, 0)]),
        "infer": ("infer 32x128", infer, [make_docs([128] * 32, vocab_size, 1)]),
        "mixed": ("infer 64 of 20..512, sorted, batches of 8", infer,
                  [mixed_docs[i:i + 8] for i in range(0, 64, 8)]),
    }


def profile_once(work, model, optimizer, batches, precision) -> tuple[dict[str, float], Counter]:
    """Milliseconds per kind of work for one call of `work`, plus "total" (wall time), and each
    operator's self time (name -> ms)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        work(model, optimizer, batches, precision)
        wall = (time.perf_counter() - start) * 1e3
    times, operators = dict.fromkeys(KINDS, 0.0), Counter()
    for event in prof.events():
        if event.name.startswith("region ") or event.name.startswith("ProfilerStep"):
            continue
        times[kind_of(event)] += event.self_cpu_time_total / 1e3
        operators[event.name] += event.self_cpu_time_total / 1e3
    # Python: what the operators' self times do not cover. Optimizer.step#... and autograd::engine
    # ranges carry their own self time (dispatch in C++) and are already under "optimizer"/"other ops".
    times["python"] = max(0.0, wall - sum(times.values()))
    times["total"] = wall
    return times, operators


PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")  # the matrix products' operators


def print_operators(operators: Counter, calls: int, top: int) -> None:
    """The `top` operators by self time, in ms per call, and the matrix products' share of all
    operators' self time (what runs at the matrix peak; the rest is passes over memory)."""
    total = sum(operators.values())
    products = sum(operators[name] for name in PRODUCTS)
    print(f"  operators' self time {total / calls:.1f} ms per call; matrix products {products / calls:.1f} ms "
          f"({100 * products / total:.0f}%)")
    for name, ms in operators.most_common(top):
        print(f"    {name:<40} {ms / calls:8.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="train,infer,mixed", help="comma list of train, infer, mixed")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument("--steps", type=int, default=5, help="profiled calls per row (after one warm-up)")
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "adam_weight_decay"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--padding", default="padded", choices=("padded", "unpadded"),
                        help="the encoder's padding mode (BertModel.padding)")
    parser.add_argument("--train_batch", type=int, default=16, help="sequences of 128 tokens in the train row")
    parser.add_argument("--top", type=int, default=0, help="also list the K operators with the most self time")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (one profiled call per row)")
    args = parser.parse_args()
    for flag, value, least in (("--train_batch", args.train_batch, 1), ("--top", args.top, 0)):
        if value < least:
            parser.error(f"{flag} {value}: must be at least {least}")
    for flag, given, known in (("--rows", args.rows, ROWS), ("--precisions", args.precisions, PRECISIONS)):
        if unknown := sorted(set(given.split(",")) - set(known)):
            parser.error(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.manual_seed(0)
    tag_model_regions()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(write_models(Path(tmp), SMOKE)[0] if args.smoke else minilm_folder())
    steps = 1 if args.smoke else args.steps
    model.bert.padding = args.padding
    groups = parameter_groups(model, lr=1e-4, weight_decay=0.01, layer_decay=0.95,
                              num_layers=model.config.num_hidden_layers)
    optimizer = build_optimizer(args.optimizer, groups)
    table = rows(model.config.vocab_size, args.train_batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, optimizer {args.optimizer}, "
          f"{args.padding} encoder; "
          f"median ms per call over {steps} profiled calls (share of the median call)")
    for key in args.rows.split(","):
        name, work, batches = table[key]
        for precision in args.precisions.split(","):
            work(model, optimizer, batches, precision)  # warm-up: oneDNN primitives, allocator
            profiled = [profile_once(work, model, optimizer, batches, precision) for _ in range(steps)]
            runs, operators = [times for times, _ in profiled], sum((ops for _, ops in profiled), Counter())
            medians = {k: statistics.median(r[k] for r in runs) for k in (*KINDS, "total")}
            print(f"\n{name}, {precision}: {medians['total']:.0f} ms per call "
                  f"(min {min(r['total'] for r in runs):.0f}, max {max(r['total'] for r in runs):.0f})")
            for kind in KINDS:
                print(f"  {kind:<10} {medians[kind]:8.1f} ms  {100 * medians[kind] / medians['total']:5.1f}%")
            if args.top:
                print_operators(operators, steps, args.top)


if __name__ == "__main__":
    main()
