"""Run folders: the kind they record, the lock held for a run's life, and the files a run reads back
(trainer.pt, records manifests, minibert.json) checked against their declared types."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import RECORDS, ROOT, make_tiny_model

from minibert.checkpoints.formats import load_checkpoint
from minibert.data.pretraining_records import read_records
from minibert.errors import CheckpointError, ConfigError, DataError
from minibert.finetune.config import RUN_OUTPUTS
from minibert.training.last_checkpoint import check_output_dir, load_run, save_run
from minibert.training.machine import TrainingMachineOptions
from minibert.training.run_context import RunState, open_run
from minibert.training.run_folder import (
    FINE_TUNING,
    KIND_FILE,
    LOCK_FILE,
    PRE_TRAINING,
    RunLock,
    folder_kind,
    write_kind,
)

CPU = TrainingMachineOptions(device="cpu", precision="fp32", padding="padded")


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding folder's run lock (as a running train.py does) until it is killed."""
    code = ("import sys, time; from pathlib import Path; from minibert.training.run_folder import RunLock; "
            "lock = RunLock.take(Path(sys.argv[1]), print); print('locked', flush=True); time.sleep(600)")
    process = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_run_on_a_locked_folder_refuses_naming_the_pid_and_a_stale_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = hold_lock(folder)
    try:
        message = rf"--output_dir {folder} is in use by another run \(pid {holder.pid} on .*\); wait for it"
        with pytest.raises(ConfigError, match=message):
            check_output_dir(folder, resume=False, overwrite=True)
        with pytest.raises(ConfigError, match=message):
            RunLock.take(folder, print)
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone, its lock file stays: stale, taken over with a note naming the old pid.
    check_output_dir(folder, resume=False, overwrite=True)
    notes = []
    lock = RunLock.take(folder, notes.append)
    assert notes == [f"note: took over the stale lock {folder / LOCK_FILE} of a run that is gone "
                     f"(pid {holder.pid} on {socket.gethostname()}: -c {folder})"]
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (folder / LOCK_FILE).exists()


def test_a_stale_lock_file_whose_process_is_gone_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": "elsewhere", "command": "train.py"}) + "\n")
    notes = []
    lock = RunLock.take(tmp_path, notes.append)
    assert notes == [f"note: took over the stale lock {tmp_path / LOCK_FILE} of a run that is gone "
                     f"(pid {pid} on elsewhere: train.py)"]
    lock.release()


def test_a_folder_of_another_kind_is_refused_and_contradictory_flags_too(tmp_path):
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"output_dir": str(folder)}))
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    write_kind(folder, PRE_TRAINING)
    (folder / "last").mkdir()
    before = sorted(p.name for p in folder.iterdir())
    for resume, overwrite in ((False, True), (False, False), (True, False)):
        with pytest.raises(ConfigError, match=rf"^--output_dir {folder} holds a pre-training run \(pretrain.py "
                                              r"train\), not a fine-tuning run: choose another folder$"):
            check_output_dir(folder, resume, overwrite, kind=FINE_TUNING)
    check_output_dir(folder, resume=False, overwrite=True, kind=PRE_TRAINING)
    with pytest.raises(ConfigError, match="^--resume continues the run in --output_dir and --overwrite_output_dir "
                                          "replaces it: give one of them$"):
        check_output_dir(folder, resume=True, overwrite=True, kind=PRE_TRAINING)
    (folder / KIND_FILE).write_text('{"kind": "training"}')
    with pytest.raises(ConfigError, match=r'\.minibert_run\.json: kind is \{"kind": "training"\}, expected one of'):
        check_output_dir(folder, resume=False, overwrite=True, kind=PRE_TRAINING)
    assert sorted(p.name for p in folder.iterdir()) == before


def earlier_run(folder: Path, kind: str | None) -> None:
    """A finished fine-tuning run's folder with a file of the user's beside its outputs."""
    (folder / "best").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"output_dir": str(folder)}))
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    (folder / "notes.txt").write_text("mine\n")
    if kind:
        write_kind(folder, kind)


def test_overwrite_replaces_all_of_a_folder_of_its_kind_and_only_the_outputs_of_an_older_one(tmp_path):
    typed_run, legacy_run = tmp_path / "typed", tmp_path / "legacy"
    earlier_run(typed_run, FINE_TUNING)
    earlier_run(legacy_run, None)  # written before kinds were recorded
    for folder, left in ((typed_run, ["config.json"]), (legacy_run, ["config.json", "notes.txt"])):
        context = open_run(CPU, str(folder), resume=False, overwrite=True, kind=FINE_TUNING)
        context.start_output_dir(RUN_OUTPUTS, False, {"output_dir": str(folder), "seed": 7})
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()  # held while the run goes on
        assert sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE) == sorted([*left, KIND_FILE])
        assert folder_kind(folder) == FINE_TUNING and json.loads((folder / "config.json").read_text())["seed"] == 7
        context.close()
        assert not (folder / LOCK_FILE).exists()


def tiny_run(folder: Path):
    """A model, optimizer, scheduler and scaler, and save_run's last/ of them in folder."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    (folder / "config.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"output_dir": str(folder)}))
    save_run(folder / "last", model, optimizer, scheduler, scaler, RunState(step=3))
    return model, optimizer, scheduler, scaler


def rewrite_trainer(last: Path, change) -> None:
    """trainer.pt changed by change(dict), its sha256 in run.json updated (so only its content is wrong)."""
    trainer = torch.load(last / "trainer.pt", weights_only=True)
    change(trainer)
    torch.save(trainer, last / "trainer.pt")
    sums = json.loads((last / "run.json").read_text())
    sums["sha256"]["trainer.pt"] = hashlib.sha256((last / "trainer.pt").read_bytes()).hexdigest()
    (last / "run.json").write_text(json.dumps(sums))


def test_a_trainer_pt_of_wrong_types_or_a_hostile_one_is_one_line(tmp_path):
    parts = tiny_run(tmp_path / "run")
    last = tmp_path / "run" / "last"
    assert load_run(last, *parts)["step"] == 3
    pristine = (last / "trainer.pt").read_bytes(), (last / "run.json").read_bytes()
    cases = ((lambda t: t.update(optimizer="sgd"), r'trainer.pt: optimizer is "sgd", expected dict$'),
             (lambda t: t["rng"][0].update(torch=1), r"trainer.pt: rng\[0\]: torch is 1, expected Tensor$"),
             (lambda t: t.update(extra=1), r"trainer.pt: unknown key 'extra'$"),
             (lambda t: t["optimizer"].update(param_groups=[]),
              r"trainer.pt: optimizer does not fit this run \(ValueError: .*parameter groups"))
    for change, message in cases:
        rewrite_trainer(last, change)
        before = hashlib.sha256((last / "trainer.pt").read_bytes()).hexdigest()
        with pytest.raises(CheckpointError, match=message):
            load_run(last, *parts)
        assert hashlib.sha256((last / "trainer.pt").read_bytes()).hexdigest() == before
        (last / "trainer.pt").write_bytes(pristine[0])
        (last / "run.json").write_bytes(pristine[1])
    # The run's state, checked against its class when the run context resumes it.
    rewrite_trainer(last, lambda t: t["state"].update(step="3"))
    context = open_run(CPU, str(tmp_path / "run"), resume=True, overwrite=False)
    with pytest.raises(CheckpointError, match=r'last/trainer.pt: state: step is "3", expected an integer$'):
        context.resume(*parts, RunState)
    # A pickle of more than tensors: refused without torch's advice to load it with weights_only=False.
    rewrite_trainer(last, lambda t: t.update(state={"payload": Path("x")}))
    with pytest.raises(CheckpointError) as refused:
        load_run(last, *parts)
    assert str(refused.value).startswith(f"{last / 'trainer.pt'}: holds objects other than tensors and plain values")
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)


def test_a_records_manifest_is_read_against_its_types(tmp_path):
    shutil.copy(RECORDS, tmp_path / "examples.tfrecord")
    good = {"format": "tfrecord", "records": 95, "max_seq_length": 64, "max_predictions_per_seq": 10,
            "next_sentence": True, "vocab_sha256": "ab"}
    sidecar = tmp_path / "examples.tfrecord.manifest.json"
    sidecar.write_text(json.dumps(good))
    assert read_records(tmp_path / "examples.tfrecord", 64, 10).manifest == good
    for text, message in ((json.dumps({**good, "next_sentence": "false"}),
                           r'next_sentence is "false", expected true or false$'),
                          (json.dumps({**good, "records": "95"}), r'records is "95", expected an integer$'),
                          (json.dumps({**good, "records": -1}), r"records=-1, max_seq_length=64 .* cannot be$"),
                          ('{"format": "tfrecord", "records": 1, "records": 95}',
                           r"cannot read the manifest of examples.tfrecord: key records given twice$"),
                          (json.dumps({**good, "format": "csv"}), r'not a records manifest \(format is "csv"\)$')):
        sidecar.write_text(text)
        with pytest.raises(DataError, match=f"^{sidecar}: {message}"):
            read_records(tmp_path / "examples.tfrecord", 64, 10)


def test_minibert_json_is_read_against_its_types(tmp_path):
    folder = make_tiny_model(tmp_path / "model")
    metadata = json.loads((folder / "minibert.json").read_text())
    for changed, message in (({"sha256": "abc"}, r'sha256 is "abc", expected dict'),
                             ({"sha256": {"model.safetensors": 1}}, r"sha256 is \{\"model.safetensors\": 1\}"),
                             ({"architecture": 3}, r"architecture is 3, expected a string or null$"),
                             ({"extra": 1}, r"unknown key 'extra'$")):
        (folder / "minibert.json").write_text(json.dumps({**metadata, **changed}))
        with pytest.raises(CheckpointError, match=f"^{folder / 'minibert.json'}: {message}"):
            load_checkpoint(folder)
