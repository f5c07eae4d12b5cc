"""The fine-tuning data path at paper scale: time to the first optimizer step and memory per process.

A synthetic Yahoo Answers-size training set (the paper's largest: 1.4M texts of about 150
WordPieces) is written as JSONL, its texts drawn from the MiniLM vocabulary's whole words, with 10
classes, and a dev split of 1% as many texts. The real tokenizer (FullTokenizer on MiniLM's
vocab.txt) encodes them at max_seq_length 512, so every token is kept. The model is a tiny BERT
(2 layers, hidden 32) with MiniLM's vocabulary, so the data path dominates the time to the first step.

For each --texts size and each --processes count, train.py's fine-tuning (minibert.finetune) runs in
that many CPU processes started as torchrun starts them (gloo), one thread each, and every process
stops at its first optimizer step, reporting:

    first step    seconds from the start of the processes (imports included) to the first step
    cpu           CPU seconds the process used until then (a rank that tokenized nothing uses few)
    peak RSS      the process's largest resident set size (ru_maxrss); pages of the shared token
                  cache count in every process that touched them
    PSS           proportional set size at the first step (shared pages divided among the processes
                  that map them: the memory really used)

and the script prints the token storage: bytes per token of the encoded arrays (from the cache
the processes shared), and of the list-of-lists layout (measured with tracemalloc on a sample).
With several --texts sizes it also fits each figure linearly in the number of texts and prints
it at --target_texts (1.4M): an extrapolation, said as such.

    python benchmarks/data_path_scale.py                           # 1.4M texts, 1 and 2 processes
    python benchmarks/data_path_scale.py --texts 25000,100000      # measured at two sizes, extrapolated
    python benchmarks/data_path_scale.py --smoke                   # a few seconds: 400 texts
"""

import argparse
import json
import os
import resource
import shutil
import socket
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from minibert.checkpoints.formats import checkpoint_of, save_minibert
from minibert.data import features
from minibert.data.examples import read_examples
from minibert.data.token_cache import CACHE_FOLDER
from minibert.finetune import FinetuneConfig, FitHooks, finetune
from minibert.model.bert import BertModel
from minibert.model.config import BertConfig
from minibert.resources import minilm_folder
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer

YAHOO_TEXTS = 1_400_000  # Yahoo! Answers' training set (Zhang et al. 2015), the paper's largest
WORDS_PER_TEXT = (20, 280)  # uniform: about 150 WordPieces a text, as Yahoo's ~210M tokens / 1.4M texts
NUM_CLASSES = 10
MAX_SEQ_LENGTH = 512
SAMPLE_TEXTS = 5000  # texts whose list-of-lists encoding is measured with tracemalloc (--smoke: SMOKE_TEXTS)
SMOKE_TEXTS = 400
RUN_TIMEOUT_S = 3600


def write_data(folder: Path, texts: int, vocab: list[str], seed: int) -> None:
    """train.jsonl (`texts` texts) and dev.jsonl (1% as many) of whole words drawn from the vocabulary."""
    words = np.array([w for w in vocab if w.isalpha() and w.islower()])
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", texts), ("dev", max(NUM_CLASSES, texts // 100))):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for start in range(0, count, 10_000):
                n = min(10_000, count - start)
                lengths = rng.integers(*WORDS_PER_TEXT, size=n, endpoint=True)
                drawn = words[rng.integers(len(words), size=int(lengths.sum()))]
                ends = np.cumsum(lengths)
                f.writelines(json.dumps({"text": " ".join(drawn[end - length:end]),
                                         "label": str((start + i) % NUM_CLASSES)}) + "\n"
                             for i, (end, length) in enumerate(zip(ends, lengths)))


def write_model(folder: Path, vocab_file: Path) -> None:
    """A tiny BERT with MiniLM's vocabulary: the first step costs little next to the data path."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(vocab_file, folder / "vocab.txt")
    config = BertConfig(vocab_size=len(vocab_file.read_text(encoding="utf-8").splitlines()), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=MAX_SEQ_LENGTH)
    torch.manual_seed(0)
    save_minibert(folder, checkpoint_of(BertModel(config), folder / "vocab.txt"))


def process_memory_mb() -> dict:
    """This process's peak RSS and its current RSS and PSS (MB, from /proc/self/smaps_rollup)."""
    values = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                values[f"{name.lower()}_mb"] = int(rest.split()[0]) / 1024
    return values


def _worker(rank: int, world_size: int, port: int, options: dict, launched: float, report: Path) -> None:
    """One process of the job, as torchrun starts it; it stops at its first optimizer step."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with open(report.with_name(f"{report.stem}.rank{rank}.log"), "w") as log:  # the run's lines and bars
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)

    def after_step(step: int) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        record = {"rank": rank, "first_step_s": time.time() - launched, "cpu_s": usage.ru_utime + usage.ru_stime,
                  **process_memory_mb()}
        report.with_name(f"{report.stem}.rank{rank}.json").write_text(json.dumps(record))
        raise SystemExit(0)  # every rank stops after the same step

    finetune(FinetuneConfig.of(**options), FitHooks(after_step=after_step))


def run_job(processes: int, options: dict, report: Path) -> list[dict]:
    """The job in `processes` processes; each one's record."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.start_processes(_worker, args=(processes, port, options, time.time(), report), nprocs=processes,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not context.join(timeout=2):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{processes} processes did not reach their first step in {RUN_TIMEOUT_S} s")
    except BaseException:
        for log in sorted(report.parent.glob(f"{report.stem}.rank*.log")):
            print(f"{log.name}:\n{log.read_text()[-3000:]}")
        raise
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    return [json.loads(report.with_name(f"{report.stem}.rank{r}.json").read_text()) for r in range(processes)]


def cache_bytes_per_token(out: Path) -> tuple[float, list[str]]:
    """Bytes per token of the arrays a job's token cache holds (.npy headers left out), and the parts."""
    tokens, size, parts = 0, 0, []
    for entry in sorted((out / CACHE_FOLDER).iterdir()):
        parts.append(json.loads((entry / "key.json").read_text())["key"]["part"])
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in entry.glob("*.npy")}
        tokens += len(arrays["input_ids"])
        size += sum(a.nbytes for a in arrays.values())
    return size / tokens, parts


def list_bytes_per_token(data: Path, tokenizer: FullTokenizer, encoding: TextEncoding) -> tuple[float, float]:
    """Bytes per token of the training texts in `data` encoded as lists of chunks of lists of int (the
    layout before numpy arrays), measured with tracemalloc, and of the same texts as EncodedDocs."""
    examples = read_examples(data / "train.jsonl")[0]
    features.encode_tokens(examples, tokenizer, encoding)  # fills the tokenizer's word cache outside the count
    tracemalloc.start()
    lists = [encoding.encode(tokenizer.encode_text(e.text), None, tokenizer.cls_id, tokenizer.sep_id) for e in examples]
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tokens = sum(len(ids) for doc in lists for ids, _ in doc)
    compact = features.encode_tokens(examples, tokenizer, encoding)
    return size / tokens, compact.nbytes / compact.num_tokens


def extrapolate(sizes: list[int], values: list[float], target: int) -> float:
    """A least-squares line through (texts, value), read at `target` texts."""
    slope, intercept = np.polyfit(np.array(sizes, dtype=float), np.array(values, dtype=float), 1)
    return slope * target + intercept


def measure(sizes: list[int], counts: list[int], work: Path) -> dict:
    """{(texts, processes): [per-rank records]}, printing each job's lines as it ends."""
    vocab_file = minilm_folder() / "vocab.txt"
    write_model(work / "model", vocab_file)
    results = {}
    for texts in sizes:
        data = work / f"data{texts}"
        started = time.time()
        write_data(data, texts, vocab_file.read_text(encoding="utf-8").splitlines(), seed=texts)
        print(f"{texts:,} texts written in {time.time() - started:.0f}s "
              f"({(data / 'train.jsonl').stat().st_size / 2 ** 20:.0f} MB)", flush=True)
        for processes in counts:
            out = work / f"run{texts}x{processes}"
            options = dict(init=str(work / "model"), train_file=str(data / "train.jsonl"),
                           dev_file=str(data / "dev.jsonl"), test_file="", output_dir=str(out),
                           max_seq_length=MAX_SEQ_LENGTH, truncation="head", batch_size=8, epochs=1, device="cpu",
                           threads=1, precision="fp32", seed=1)
            records = results[texts, processes] = run_job(processes, options, work / f"report{texts}x{processes}")
            for r in records:
                print(f"  {processes} process(es), rank {r['rank']}: first step {r['first_step_s']:.1f}s, "
                      f"cpu {r['cpu_s']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB, PSS {r['pss_mb']:.0f} MB",
                      flush=True)
            if processes > 1:
                per_token, parts = cache_bytes_per_token(out)
                print(f"  token cache: {per_token:.2f} bytes/token ({', '.join(parts)}), one entry per part",
                      flush=True)
        shutil.rmtree(data)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", default=str(YAHOO_TEXTS), help="comma-separated training set sizes")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--target_texts", type=int, default=YAHOO_TEXTS, help="extrapolate to this many texts")
    parser.add_argument("--work_dir", default="", help="where data, model and runs go (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_TEXTS} texts, 1 and 2 processes: seconds "
                        "(most of it starting the processes)")
    args = parser.parse_args()
    sizes = [SMOKE_TEXTS] if args.smoke else [int(n) for n in args.texts.split(",")]
    sample = SMOKE_TEXTS if args.smoke else SAMPLE_TEXTS
    counts = [int(n) for n in args.processes.split(",")]
    if min(sizes) < NUM_CLASSES or min(counts) < 1:
        parser.error(f"--texts must be at least {NUM_CLASSES} and --processes at least 1")
    with tempfile.TemporaryDirectory(dir=args.work_dir or None) as work:
        work = Path(work)
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; max_seq_length {MAX_SEQ_LENGTH}, "
              f"{WORDS_PER_TEXT[0]}-{WORDS_PER_TEXT[1]} words a text", flush=True)
        write_data(work / "sample", sample, (minilm_folder() / "vocab.txt").read_text(encoding="utf-8").splitlines(), 0)
        lists, compact = list_bytes_per_token(work / "sample", FullTokenizer(minilm_folder() / "vocab.txt"),
                                              TextEncoding(MAX_SEQ_LENGTH, truncation="head"))
        print(f"token storage on {sample:,} texts: lists of int {lists:.1f} bytes/token, "
              f"numpy arrays {compact:.2f} bytes/token", flush=True)
        results = measure(sizes, counts, work)
    if len(sizes) > 1:
        print(f"extrapolated linearly in the number of texts to {args.target_texts:,} texts:")
        for processes in counts:
            for rank in range(processes):
                figures = {key: extrapolate(sizes, [results[n, processes][rank][key] for n in sizes], args.target_texts)
                           for key in ("first_step_s", "cpu_s", "peak_rss_mb", "pss_mb")}
                print(f"  {processes} process(es), rank {rank}: first step {figures['first_step_s']:.0f}s, "
                      f"cpu {figures['cpu_s']:.0f}s, peak RSS {figures['peak_rss_mb']:.0f} MB, "
                      f"PSS {figures['pss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
