"""The embedded default: within-task further pre-training of MiniLM on BBC News (paper §5.4, ITPT),
every stage of a pre-training at a budget two CPU cores finish in minutes."""

import time
from pathlib import Path

from tqdm import tqdm

from minibert.pretraining.config import (
    CorpusConfig,
    CreateDataConfig,
    DefaultConfig,
    InitOptions,
    PretrainConfig,
    PretrainEvalOptions,
    PretrainOptimOptions,
    PretrainRunOptions,
    RecordOptions,
    check_options,
)
from minibert.pretraining.data_steps import build_corpus, create_data
from minibert.pretraining.loop import train
from minibert.resources import model_path


def embedded_default(cfg: DefaultConfig) -> dict:
    """BBC News training text -> instances -> MiniLM further pre-trained; MLM accuracy on the BBC
    dev text before and after. The model lands in output_dir/run/final, ready for train.py --init."""
    out = Path(cfg.output_dir)
    vocab = model_path("minilm") / "vocab.txt"
    predictions = max(1, round(cfg.max_seq_length * 0.15))  # Google's pairing: 20 for 128 tokens
    run = default_train_config(cfg, out, predictions)
    check_options(run)  # before the corpus and the records are made
    for split in ("train", "dev"):
        build_corpus(CorpusConfig(sources="bbc_news", output_file=str(out / f"bbc_{split}.txt"), splits=split))
    for split, dupe in (("train", 5), ("dev", 1)):  # dupe_factor 5: the paper's code
        create_data(CreateDataConfig(input_file=str(out / f"bbc_{split}.txt"),
                                     output_file=str(out / f"records_{split}"), vocab_file=str(vocab),
                                     max_seq_length=cfg.max_seq_length, max_predictions_per_seq=predictions,
                                     dupe_factor=dupe))
    start = time.time()
    result = train(run)
    evals = [r for r in result["records"] if r["split"] == "eval"]
    before, after = evals[0], evals[-1]
    tqdm.write(f"BBC dev text: MLM accuracy {100 * before['mlm_accuracy']:.2f}% before (MiniLM ships without MLM/NSP "
               f"heads: they start untrained), {100 * after['mlm_accuracy']:.2f}% after {cfg.num_train_steps} steps; "
               f"NSP accuracy {100 * before['nsp_accuracy']:.2f}% -> {100 * after['nsp_accuracy']:.2f}%; "
               f"training took {time.time() - start:.0f}s")
    tqdm.write(f"the further pre-trained model: {out / 'run' / 'final'}")
    return {"before": before, "after": after}


def default_train_config(cfg: DefaultConfig, out: Path, predictions: int) -> PretrainConfig:
    """The embedded default's train config: MiniLM on out/records_train, evaluated on out/records_dev
    before and after, last/ four times, on cfg's machine."""
    steps = cfg.num_train_steps
    return PretrainConfig(
        model=InitOptions(init="minilm"),
        records=RecordOptions(input_file=str(out / "records_train"), max_seq_length=cfg.max_seq_length,
                              max_predictions_per_seq=predictions),
        optim=PretrainOptimOptions(train_batch_size=cfg.train_batch_size, num_train_steps=steps,
                                   num_warmup_steps=steps // 10, learning_rate=cfg.learning_rate),
        evaluation=PretrainEvalOptions(eval_input_file=str(out / "records_dev"), eval_every=steps),
        machine=cfg.machine,
        run=PretrainRunOptions(output_dir=str(out / "run"), save_checkpoints_steps=max(1, steps // 4)))
