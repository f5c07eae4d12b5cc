"""The resumable checkpoint of a run: what `--resume` needs to continue exactly where a run stopped.

A run's `last/` folder holds
    model.safetensors   every tensor of the model being trained
    trainer.pt          optimizer, scheduler and loss-scaler state, RNG states, the script's state
    run.json            the sha256 of both files (safetensors and torch.save have no checksum of
                        their own, so a corrupt byte would otherwise load silently)
and is swapped in whole (minibert.files.replace_folder), so a crash leaves the previous one.
The script's own state is a dataclass (its step, best score, data position, ...): it is stored as a
dict and rebuilt by the script, so each script keeps its state typed.

The RNG states (Python's `random`, torch's CPU and CUDA generators) are saved with the rest: a
resumed run draws the same dropout masks and batch orders as an uninterrupted one, so it gives
bit-identical weights.
"""

import dataclasses
import json
import pickle
import random
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from minibert.errors import CheckpointError, ConfigError
from minibert.files import (
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_text,
    find_folder,
    replace_folder,
    sha256_file,
)
from minibert.output_paths import Inputs, check_not_input, check_output_folder, is_run_folder, resolve, visible_entries
from minibert.schema import typed
from minibert.training.run_folder import FINE_TUNING, check_kind, check_unlocked, folder_kind

MODEL_FILE, TRAINER_FILE, RUN_FILE = "model.safetensors", "trainer.pt", "run.json"
TRAINER_KEYS = ("optimizer", "scheduler", "scaler", "rng", "state")  # what save_run puts in trainer.pt


def capture_rng() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_run(folder: str | Path, model: torch.nn.Module, optimizer, scheduler, scaler, state,
             rng_states: list[dict] | None = None) -> None:
    """Write `folder` (normally output_dir/last) atomically; `state` is the script's state dataclass.

    rng_states: every process's capture_rng() in rank order, for a distributed run (each rank has
    its own dropout stream); None saves this process's.
    """
    trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "scaler": scaler.state_dict(), "rng": rng_states or [capture_rng()], "state": dataclasses.asdict(state)}

    def fill(temp: Path) -> None:
        tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
        atomic_save_safetensors(tensors, temp / MODEL_FILE, {"format": "pt", "producer": "minibert"})
        atomic_torch_save(trainer, temp / TRAINER_FILE)
        sums = {name: sha256_file(temp / name) for name in (MODEL_FILE, TRAINER_FILE)}
        atomic_write_text(temp / RUN_FILE, json.dumps({"sha256": sums}, indent=2) + "\n")

    replace_folder(folder, fill)


def find_run(folder: str | Path) -> Path | None:
    """The checkpoint folder to resume from, also when a swap was interrupted (files.find_folder)."""
    return find_folder(folder)


@dataclasses.dataclass
class TrainerFile:
    """trainer.pt as save_run writes it; `state` is the script's state (RunContext.resume checks it)."""

    optimizer: dict
    scheduler: dict
    scaler: dict
    rng: list  # every process's RngState, in rank order
    state: dict


@dataclasses.dataclass
class RngState:
    """One process's capture_rng()."""

    torch: torch.Tensor
    python: tuple
    cuda: list


def load_run(folder: Path, model: torch.nn.Module, optimizer, scheduler, scaler, rank: int = 0,
             world_size: int = 1) -> dict:
    """Restore everything save_run wrote (rank: whose RNG states); returns the script's state as a dict.

    Every file is checked against run.json's sha256 first, then trainer.pt against TrainerFile; a
    missing, corrupt, mismatched or mistyped file is a CheckpointError naming it (and the key),
    before anything is changed.
    """
    sums = _read_sums(folder / RUN_FILE)
    for name in (MODEL_FILE, TRAINER_FILE):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the resume checkpoint")
        if sha256_file(path) != sums.get(name):
            raise CheckpointError(f"{path}: corrupt (its sha256 differs from the one in {folder / RUN_FILE})")
    try:
        tensors = load_file(folder / MODEL_FILE)
    except (SafetensorError, OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{folder}: cannot read the resume checkpoint: {e}") from None
    trainer = _read_trainer(folder / TRAINER_FILE)
    if len(trainer.rng) != world_size:
        raise CheckpointError(f"{folder}: the run was made by {len(trainer.rng)} processes, this is {world_size}: "
                              "its batches would differ; resume with the same number of processes")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{folder / MODEL_FILE}: does not fit the model: {e}") from None
    for key, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        try:
            target.load_state_dict(getattr(trainer, key))
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{folder / TRAINER_FILE}: {key} does not fit this run "
                                  f"({e.__class__.__name__}: {e})") from None
    rng = trainer.rng[rank]
    try:
        restore_rng({"torch": rng.torch, "python": rng.python, "cuda": rng.cuda})
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{folder / TRAINER_FILE}: rng of process {rank} cannot be restored ({e})") from None
    return trainer.state


def _read_trainer(path: Path) -> TrainerFile:
    """trainer.pt, checked against TrainerFile and RngState (CheckpointError naming the key)."""
    try:
        # weights_only: the unpickler only rebuilds tensors and plain containers, never runs code.
        trainer = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run whatever the file holds.
        raise CheckpointError(f"{path}: holds objects other than tensors and plain values, which could run code "
                              "when loaded; refused (save_run never writes such a file)") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: cannot read the resume checkpoint: {e}") from None
    missing = [k for k in TRAINER_KEYS if not isinstance(trainer, dict) or k not in trainer]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)} (not written by save_run)")
    if isinstance(trainer["rng"], dict):  # written before distributed runs: one process's states
        trainer["rng"] = [trainer["rng"]]
    checked = typed(TrainerFile, trainer, str(path), CheckpointError)
    checked.rng = [typed(RngState, rng, f"{path}: rng[{i}]", CheckpointError) for i, rng in enumerate(checked.rng)]
    return checked


def _read_sums(path: Path) -> dict:
    try:
        sums = json.loads(path.read_text(encoding="utf-8"))["sha256"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing from the resume checkpoint") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt ({e})") from None
    if not isinstance(sums, dict):
        raise CheckpointError(f"{path}: corrupt (sha256 is not an object)")
    return sums


def check_output_dir(out: Path, resume: bool, overwrite: bool, inputs: Inputs = (), kind: str = FINE_TUNING) -> None:
    """A new run never writes over an earlier one unless told to, never over a folder that is not a
    run's (output_paths.is_run_folder) or is another kind's (run_folder.check_kind), never over an
    input (`inputs`: (option, path) pairs such as the init model) and never into a folder another
    live run holds (run_folder.check_unlocked); --resume needs a checkpoint (ConfigError)."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --output_dir and --overwrite_output_dir replaces it: "
                          "give one of them")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output_dir {out}: is a file, not a folder")
    check_unlocked(out)
    check_kind(out, kind)
    if resume:
        if find_run(out / "last") is None:
            raise ConfigError(f"--resume: no checkpoint in {out / 'last'}")
        check_not_input(resolve(out, "--output_dir"), "--output_dir", inputs)
        return
    check_output_folder(out, "--output_dir", lambda folder: folder_kind(folder) == kind or is_run_folder(folder),
                        "a minibert run's (config.json with metrics.jsonl or last/)", inputs)
    earlier = visible_entries(out) if out.is_dir() else []
    if earlier and not overwrite:
        raise ConfigError(f"--output_dir {out} is not empty ({', '.join(earlier[:5])}"
                          f"{', ...' if len(earlier) > 5 else ''}): --resume continues that run, "
                          "--overwrite_output_dir replaces it")
