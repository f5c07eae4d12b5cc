"""Pre-training step throughput: minibert's pretrain.py step against transformers' BertForPreTraining.

Both models are all-MiniLM-L6-v2's encoder with freshly initialised MLM/NSP heads (MiniLM ships
none), trained on the same batches of real records: BBC News training text turned into Google's
instances (create_pretraining_data.py rules, 128 tokens, 20 predictions) with MiniLM's vocabulary.
One step = forward, run_pretraining.py's loss (minibert: MLM logits at the 20 gathered positions
only, as Google's get_masked_lm_output, and by the library's default the last encoder layer computed
at [CLS] and those positions only (BertModel.last_layer); transformers: logits at every position with
labels -100 elsewhere, as its BertForPreTraining computes them), backward, global-norm clipping and an
optimizer update, in train mode (dropout 0.1). Each engine gets the optimizer its trainer uses by
default: minibert pretrain.py's (`--optimizer`, Google's AdamWeightDecay unless told otherwise,
built by the same code), transformers Trainer's for torch >= 2.8 (`adamw_torch_fused`: torch's
fused AdamW), both with weight decay 0.01 on everything but biases and LayerNorm. The engines are timed
interleaved (one step of each in turn); the ratio of the medians is what to read on a shared machine.

Instance creation is timed too (instances/s and the process's peak memory over create_data's work).

    python benchmarks/pretrain_speed.py            # fp32 and bf16, 16 x 128, about 5 minutes on 2 cores
    python benchmarks/pretrain_speed.py --quick    # fp32 only, fewer steps
    python benchmarks/pretrain_speed.py --threads 1 --optimizer adamw
    python benchmarks/pretrain_speed.py --smoke    # a tiny random model, a few articles (seconds)
"""

import argparse
import dataclasses
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_common import (
    SMOKE,
    SMOKE_HELP,
    hf_parameter_groups,
    hf_pretrain_step,
    minibert_pretrain_step,
    peak_rss_mb,
    quiet_transformers,
    write_models,
)

from minibert.checkpoints.formats import load_checkpoint, load_state, state_of
from minibert.data import corpora
from minibert.data.pretraining_batches import RecordStream
from minibert.data.pretraining_instances import Documents, InstanceSettings, Vocabulary, create_instances
from minibert.data.pretraining_records import instance_arrays
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.resources import minilm_folder
from minibert.text.tokenization import FullTokenizer
from minibert.training.optimization import OPTIMIZERS, build_optimizer, parameter_groups

SMOKE_ARTICLES = 40  # --smoke: instances from the first articles only


def bbc_documents(tokenizer: FullTokenizer, articles: int | None = None) -> Documents:
    """BBC News training articles (all, or the first `articles`), one sentence per line as Google's
    reader sees them (line breaks)."""
    split = Path("data/bbc_news/train.jsonl")
    if not split.exists():
        corpora.prepare_bbc_news("data/bbc_news")
    documents = Documents()
    for line in split.read_text(encoding="utf-8").splitlines()[:articles]:
        for sentence in json.loads(line)["text"].splitlines():
            if sentence.strip() and (ids := tokenizer.encode_text(sentence.strip())):
                documents.add_sentence(ids)
        documents.end_document()
    return documents


def load_models(smoke: bool, folder: Path) -> tuple:
    """(minibert BertForPreTraining, transformers BertForPreTraining): MiniLM's encoder with the same
    fresh heads, or with --smoke a tiny random model of MiniLM's vocabulary written to `folder`."""
    if smoke:
        ours_folder, hf_folder = write_models(folder, dataclasses.replace(SMOKE, vocab_size=30522))
    else:
        ours_folder = hf_folder = minilm_folder()
    checkpoint = load_checkpoint(ours_folder)
    ours = BertForPreTraining(checkpoint.config)
    load_state(ours, {**state_of(ours), **checkpoint.state}, str(ours_folder))
    hf = quiet_transformers().BertForPreTraining.from_pretrained(str(hf_folder), attn_implementation="sdpa")
    return ours, hf


def bbc_records(folder: Path, articles: int | None) -> dict:
    """Google's instances from BBC News (128 tokens, 20 predictions, dupe_factor 2), timed."""
    tokenizer = FullTokenizer(folder / "vocab.txt")
    start, rss_before = time.time(), peak_rss_mb()
    documents = bbc_documents(tokenizer, articles)
    read_s = time.time() - start
    settings = InstanceSettings(max_seq_length=128, max_predictions_per_seq=20, dupe_factor=2)
    start = time.time()
    instances = create_instances(documents, settings, Vocabulary.of(tokenizer), random.Random(12345))
    records = instance_arrays(instances, 128, 20)
    create_s = time.time() - start
    print(f"instances: {len(documents)} BBC articles ({len(documents.tokens)} tokens) read and tokenized in "
          f"{read_s:.1f}s; {len(instances)} instances (dupe_factor 2) in {create_s:.1f}s = "
          f"{len(instances) / create_s:.0f} instances/s; peak RSS {peak_rss_mb():.0f} MB "
          f"(was {rss_before:.0f} MB before reading)")
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--optimizer", default="adam_weight_decay", choices=sorted(OPTIMIZERS),
                        help="minibert's optimizer, as pretrain.py --optimizer")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + f" (instances of {SMOKE_ARTICLES} "
                        "articles, batches of 2, one timed step per precision)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    records = bbc_records(minilm_folder(), SMOKE_ARTICLES if args.smoke else None)
    with tempfile.TemporaryDirectory() as folder:
        ours, hf = load_models(args.smoke, Path(folder))
    engines = {"minibert": (ours, minibert_pretrain_step), "hf-sdpa": (hf, hf_pretrain_step)}
    optimizers = {
        "minibert": build_optimizer(args.optimizer, parameter_groups(ours, lr=1e-5, weight_decay=0.01,
                                                                     num_layers=ours.config.num_hidden_layers)),
        "hf-sdpa": torch.optim.AdamW(hf_parameter_groups(hf, 0.01), lr=1e-5, fused=True),
    }
    print(f"optimizers: minibert {args.optimizer}, transformers fused AdamW (Trainer's default); "
          f"{torch.get_num_threads()} threads")
    for model, _ in engines.values():
        model.train()
    stream = RecordStream([records], shuffle=True, seed=0)
    batch_size, steps = (2, 1) if args.smoke else (args.batch, 4 if args.quick else 8)
    for precision in ("fp32",) if args.quick else ("fp32", "bf16"):
        times, tokens = {name: [] for name in engines}, []
        for step in range(steps + 1):  # step 0 warms up and is not counted
            batch = stream.batch(step * batch_size, batch_size)
            tokens.append(int(batch["input_mask"].sum()))
            for name, (model, step_fn) in engines.items():
                t = time.perf_counter()
                step_fn(model, optimizers[name], batch, precision)
                if step:
                    times[name].append(time.perf_counter() - t)
        mean_tokens = statistics.mean(tokens)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        line = ", ".join(f"{name} {mean_tokens / s:.0f} tokens/s ({batch_size / s:.2f} seq/s)"
                         for name, s in medians.items())
        print(f"train step {batch_size}x128 {precision}: {line}; ratio minibert/hf "
              f"{medians['hf-sdpa'] / medians['minibert']:.2f}x (medians of {steps} interleaved steps)")


if __name__ == "__main__":
    main()
