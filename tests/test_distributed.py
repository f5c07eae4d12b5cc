"""Data parallelism on the CPU: train.py in 2 gloo processes against 1 process with the same global batch.

Each test starts its processes itself (torch.multiprocessing, rendezvous on a free local port), as
torchrun would: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment.
Dropout is off in these models, so 2 ranks x batch b and 1 process x batch 2b must agree up to float
rounding (the order of additions in the gradient all-reduce).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import (
    PRETRAINING,
    ROOT,
    TASK_WORDS,
    TOPIC_WORDS,
    config,
    make_google_dir,
    make_tiny_model,
    write_split,
    write_task,
)
from safetensors.torch import load_file

import predict
from minibert.data.examples import read_examples
from minibert.data.features import encode_examples
from minibert.data.token_cache import CACHE_FOLDER, KEY_FILE
from minibert.finetune import FinetuneConfig, FitHooks, finetune
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer
from minibert.training.distributed import Distributed, eval_shard, shard_batches
from minibert.training.machine import TrainingMachineOptions
from minibert.training.run_context import open_run

RANKS_TIMEOUT_S = 240  # each run takes seconds; a test makes up to 3 within pytest-timeout's 900 s


@pytest.fixture(scope="module")
def setup_files(tmp_path_factory):
    """A dropout-free tiny model and the topic data set."""
    folder = tmp_path_factory.mktemp("ddp")
    make_tiny_model(folder / "model", TOPIC_WORDS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    write_split(folder / "train.jsonl", 96, 1)  # 96 = 12 global batches of 8
    write_split(folder / "dev.jsonl", 21, 2)
    write_split(folder / "test.jsonl", 33, 3)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, cfg: FinetuneConfig, crash_after: int | None):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)

    def after_step(step: int) -> None:  # both ranks stop after the same step, as a killed job would
        if step == crash_after:
            raise SystemExit(0)

    finetune(cfg, FitHooks(after_step=after_step))


class CountingTokenizer:
    """A tokenizer that counts the texts it tokenizes (and is otherwise the one it wraps)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, 0

    def encode_text(self, text):
        self.texts += 1
        return self.tokenizer.encode_text(text)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def _encode_worker(rank: int, world_size: int, port: int, files: Path, out: Path):
    """Encode the training split through the run's token cache; report how many texts this rank tokenized."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    context = open_run(TrainingMachineOptions(device="cpu", threads=1), str(out), resume=False, overwrite=False)
    tokenizer = CountingTokenizer(FullTokenizer(files / "model" / "vocab.txt"))
    examples = read_examples(files / "train.jsonl")[0]
    docs = encode_examples(examples, None, tokenizer, TextEncoding(16, truncation="head"), context.token_cache(),
                           "/train")
    report = {"texts": tokenizer.texts, "chunks": [d.chunks for d in docs]}
    (out.parent / f"rank{rank}.json").write_text(json.dumps(report))
    context.close()


def run_ranks(world_size: int, cfg: FinetuneConfig, crash_after: int | None = None) -> None:
    """Start the ranks and wait for them; a hung rank fails the test after RANKS_TIMEOUT_S.

    Spawned, not forked: a forked child inherits the parent's locks as they are at the fork (tqdm's
    monitor thread, left over from earlier tests, holds its lock for a moment every few seconds),
    and a rank that inherits a held lock waits forever. Whatever ends the wait (a failed rank, the
    timeout, pytest-timeout, Ctrl-C), no rank outlives this call.
    """
    start_ranks(world_size, _worker, (cfg, crash_after))


def start_ranks(world_size: int, worker, args: tuple) -> None:
    """run_ranks for any worker(rank, world_size, port, *args)."""
    context = mp.start_processes(worker, args=(world_size, free_port(), *args), nprocs=world_size,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + RANKS_TIMEOUT_S
    try:
        while not context.join(timeout=5):  # raises as soon as a rank fails
            if time.monotonic() > deadline:
                pytest.fail(f"{world_size} ranks did not finish within {RANKS_TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()


def run_command(command: list[str]) -> subprocess.CompletedProcess:
    """A torchrun command in its own process group: on timeout the group (torchrun and every rank
    it started) is killed, not torchrun alone."""
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=RANKS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"{' '.join(command[:5])} ... did not finish within {RANKS_TIMEOUT_S} s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def options(files, out, **overrides):
    values = dict(dropout=0.0, epochs=2, learning_rate=5e-3, layer_decay=1.0, log_every=1,
                  test_file=str(files / "test.jsonl"))
    values.update(overrides)
    return config(files / "model", files, out, **values)


def train_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_batches_are_split_into_equal_rank_slices():
    batches = [list(range(8)), list(range(8, 13)), [13]]
    ranks = [shard_batches(batches, Distributed(r, 2)) for r in range(2)]
    assert ranks[0] == [[0, 1, 2, 3], [8, 9]] and ranks[1] == [[4, 5, 6, 7], [10, 11, 12]]  # [13] is dropped
    assert sorted(i for r in range(3) for i in eval_shard(10, Distributed(r, 3))) == list(range(10))


@pytest.mark.slow
def test_a_node_tokenizes_once_and_its_ranks_map_the_same_tokens(setup_files, tmp_path):
    start_ranks(2, _encode_worker, (setup_files, tmp_path / "run"))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["texts"] == 96 and reports[1]["texts"] == 0  # local rank 1 read rank 0's cache
    assert reports[0]["chunks"] == reports[1]["chunks"]
    (entry,) = (tmp_path / "run" / CACHE_FOLDER).iterdir()
    assert json.loads((entry / KEY_FILE).read_text())["key"]["part"] == "/train"
    written = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    start_ranks(2, _encode_worker, (setup_files, tmp_path / "run"))  # the same data again: nobody tokenizes
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["texts"] for r in range(2)] == [0, 0]
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == written


@pytest.mark.slow
def test_two_ranks_train_as_one_process_with_the_global_batch(setup_files, tmp_path):
    run_ranks(2, options(setup_files, tmp_path / "ddp", batch_size=4))
    single = finetune(options(setup_files, tmp_path / "one", batch_size=8))
    # The ranks shared the encoded train and dev splits through the cache; one process writes none.
    parts = sorted(json.loads((p / KEY_FILE).read_text())["key"]["part"]
                   for p in (tmp_path / "ddp" / CACHE_FOLDER).iterdir())
    assert parts == ["task/dev", "task/train"] and not (tmp_path / "one" / CACHE_FOLDER).exists()
    ddp_records, one_records = train_records(tmp_path / "ddp"), train_records(tmp_path / "one")
    assert [r["step"] for r in ddp_records] == [r["step"] for r in one_records]  # rank 0 alone wrote
    for a, b in zip(ddp_records, one_records):
        for key in ("loss", "lr", "error"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a, b)
    a, b = (load_file(tmp_path / run / "last" / "model.safetensors") for run in ("ddp", "one"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["test_count"] == 33 and results["test_accuracy"] == pytest.approx(single["test_accuracy"])
    # The sharded, gathered evaluation equals one process scoring every example.
    predictions = predict.main(predict.PredictConfig(model=str(tmp_path / "ddp" / "best"),
                                                     input=str(setup_files / "test.jsonl"),
                                                     output=str(tmp_path / "p.jsonl")))
    gold = [json.loads(line)["label"] for line in (setup_files / "test.jsonl").read_text().splitlines()]
    assert sum(p["label"] == g for p, g in zip(predictions, gold)) / 33 == pytest.approx(results["test_accuracy"])


@pytest.mark.slow
def test_accumulation_and_resume_under_ddp(setup_files, tmp_path):
    # 2 ranks x batch 2 x 2 micro-batches (no_sync on the first) = 1 process x batch 4 x 2 micro-batches.
    cfg = options(setup_files, tmp_path / "ddp", batch_size=2, grad_accum_steps=2, checkpoint_every=5)
    run_ranks(2, cfg)
    finetune(options(setup_files, tmp_path / "one", batch_size=4, grad_accum_steps=2, checkpoint_every=5))
    for a, b in zip(train_records(tmp_path / "ddp"), train_records(tmp_path / "one")):
        assert a["step"] == b["step"] and a.get("loss", 0) == pytest.approx(b.get("loss", 0), rel=1e-4)
    # Interrupted after step 7 (28 micro-batches of 2 per rank); the checkpoint is step 5.
    run_ranks(2, options(setup_files, tmp_path / "resumed", batch_size=2, grad_accum_steps=2, checkpoint_every=5),
              crash_after=7)
    run_ranks(2, options(setup_files, tmp_path / "resumed", batch_size=2, grad_accum_steps=2, checkpoint_every=5,
                         resume=True))
    a, b = (load_file(tmp_path / run / "last" / "model.safetensors") for run in ("ddp", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda out: [{k: v for k, v in r.items() if k != "examples_per_s"} for r in train_records(out)]
    assert strip(tmp_path / "ddp") == strip(tmp_path / "resumed")
    # Another number of processes would see other batches: refused.
    with pytest.raises(Exception, match="made by 2 processes, this is 1"):
        finetune(options(setup_files, tmp_path / "resumed", batch_size=2, grad_accum_steps=2, checkpoint_every=5,
                           resume=True))


@pytest.mark.slow
def test_torchrun_runs_train_py_with_two_cpu_processes(setup_files, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "train.py", "--init", str(setup_files / "model"), "--train_file", str(setup_files / "train.jsonl"),
               "--dev_file", str(setup_files / "dev.jsonl"), "--test_file", str(setup_files / "test.jsonl"),
               "--output_dir", str(tmp_path / "run"), "--max_seq_length", "24", "--head_tokens", "6", "--epochs", "1",
               "--batch_size", "4", "--threads", "1", "--device", "cpu"]
    done = run_command(command)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("test error") == 1  # rank 0 alone reports
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test_count"] == 33


@pytest.mark.slow
def test_multitask_under_ddp_trains_as_one_process(tmp_path):
    """--tasks under 2 ranks: every rank trains the same task at each step (same mixed epoch), and
    the run equals one process with the global batch, other tasks' heads untouched included."""
    make_tiny_model(tmp_path / "model", TASK_WORDS, max_position_embeddings=32, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    write_task(tmp_path / "data" / "topics", "topics", sizes=(48, 12, 12), seed=1)
    write_task(tmp_path / "data" / "sentiment", "sentiment", sizes=(32, 12, 12), seed=2)

    def cfg(out, batch_size):
        return FinetuneConfig.of(init=str(tmp_path / "model"), tasks="topics,sentiment",
                                 tasks_dir=str(tmp_path / "data"),
                                 output_dir=str(out), max_seq_length=16, epochs=2, batch_size=batch_size,
                                 learning_rate=5e-3, layer_decay=1.0, dropout=0.0, log_every=1, device="cpu",
                                 seed=3, threads=1, stage2_epochs=0, precision="fp32")

    run_ranks(2, cfg(tmp_path / "ddp", 4))
    finetune(cfg(tmp_path / "one", 8))
    ddp_records, one_records = train_records(tmp_path / "ddp"), train_records(tmp_path / "one")
    assert len(ddp_records) == len(one_records) and len(ddp_records) > 10
    for a, b in zip(ddp_records, one_records):
        assert a["step"] == b["step"] and a.get("task") == b.get("task")
        if "loss" in a:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    a, b = (load_file(tmp_path / run / "best" / "model.safetensors") for run in ("ddp", "one"))
    assert set(a) == set(b) and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


@pytest.mark.slow
def test_torchrun_pretraining_equals_one_process_with_the_global_batch(tmp_path):
    """pretrain.py train under torchrun (2 CPU processes x 2 records per step) against one process
    with 4 records per step, on Google's records and the dropout-free tiny Google model: the same
    losses and final weights (the MLM loss is normalised over the global batch's weights)."""
    import pretrain

    init = make_google_dir(tmp_path / "init")  # the acceptance run's model: tiny_google, no dropout, tanh GELU
    common = [f"--init={init}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              f"--eval_input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              "--max_seq_length=64", "--max_predictions_per_seq=10", "--num_train_steps=6", "--num_warmup_steps=2",
              "--learning_rate=1e-3", "--log_every=1", "--save_checkpoints_steps=3", "--shuffle=false",
              "--precision=fp32", "--threads=1", "--device=cpu"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "pretrain.py", "train", *common, "--train_batch_size=2", f"--output_dir={tmp_path / 'ddp'}"]
    done = run_command(command)
    assert done.returncode == 0, done.stderr[-2000:]
    pretrain.main(["train", *common, "--train_batch_size=4", f"--output_dir={tmp_path / 'one'}"])
    ddp, one = train_records(tmp_path / "ddp"), train_records(tmp_path / "one")
    assert [r["step"] for r in ddp] == [r["step"] for r in one] and len(ddp) == 6 + 3  # 6 train, 3 eval records
    for a, b in zip(ddp, one):
        for key in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a, b)
    a, b = (load_file(tmp_path / run / "final" / "model.safetensors") for run in ("ddp", "one"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
