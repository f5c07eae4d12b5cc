"""What every kind of run shares: device, precision and padding resolved once, threads, the process
group, per-rank seeds, rank-0 output, the DDP wrap, and the end-of-run policy: the output folder, the
resume check, checkpoints with every rank's RNG state, the end of each step (stop signal, checkpoint,
hook) and shutdown.

Fine-tuning (minibert.finetune) and pre-training (minibert.pretraining) each write their own loop
over a RunContext; neither repeats this plumbing. The order of the calls is the order of a run:

    context = open_run(cfg.machine, output_dir, resume, overwrite, inputs)  # checks; nothing written
    ...read and check every input...
    state = LoopState(data_sha256=..., world_size=..., config=cfg.flat())   # a RunState subclass
    if resume:                               # the same settings and data, or one error line
        state = context.restore(model, optimizer, scheduler, scaler, state, may_change, data, allow)
    context.start_output_dir(outputs, resume, cfg.flat())   # only now is the output folder written
    with context.stoppable():                # SIGTERM asks the run to stop after its step
        for each optimizer step:
            ...forward, backward, optimizer step; log and evaluate what is due...
            if context.end_step(step, due, save, hooks.after_step):   # signal, checkpoint, hook
                break
    context.close()
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.data.token_cache import CACHE_FOLDER, TokenCache
from minibert.errors import CheckpointError, ConfigError
from minibert.files import atomic_write_text, remove_leftovers, swap_leftovers
from minibert.output_paths import Inputs
from minibert.schema import typed
from minibert.training.distributed import Distributed, barrier, device_for, gather_objects, init_distributed, shutdown
from minibert.training.last_checkpoint import TRAINER_FILE, capture_rng, check_output_dir, find_run, load_run, save_run
from minibert.training.machine import TrainingMachineOptions, autocast, resolve_machine
from minibert.training.run_folder import FINE_TUNING, RunLock, clear_folder, folder_kind, write_kind
from minibert.training.stop_signal import StopSignal

# Options a --resume may change in every kind of run (where and how fast it runs, how often it
# logs, the resume flags themselves); each loop adds its own. Any other change is refused.
RESUMABLE_CHANGES = frozenset({"resume", "overwrite_output_dir", "allow_data_change", "log_every", "device",
                               "threads", "padding", "gradient_checkpointing", "tensorboard"})

# A different dropout stream per rank: rank r seeds seed + RANK_SEED_STRIDE * r (the weights are the
# same on every rank: DistributedDataParallel broadcasts rank 0's when it wraps the model).
RANK_SEED_STRIDE = 1_000_003


@dataclass
class RunState:
    """What every run saves in last/ besides its tensors; each loop's state adds its own fields."""

    step: int = 0  # optimizer steps done
    world_size: int = 1  # processes (torchrun): a resume with another number would see other batches
    config: dict = field(default_factory=dict)  # the run's flat options: a resume compares them
    data_sha256: str = ""  # of the training data: a resume on other data is refused unless allowed


@dataclass
class RunContext:
    """One run's resolved machine and process group, its output folder and its end-of-run policy."""

    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16
    padding: str  # resolved: padded or unpadded
    setup: Distributed
    out: Path
    checkpointing: str = "off"  # BertModel.checkpointing: off, or layers (recomputed in backward)
    stop: StopSignal = field(default_factory=StopSignal)  # SIGTERM, read by end_step
    kind: str = FINE_TUNING  # what the run records in its folder (run_folder.KIND_SCRIPTS)
    lock: RunLock | None = None  # rank 0's lock on out, from start_output_dir to close

    @property
    def is_main(self) -> bool:
        return self.setup.is_main

    def say(self, text: str) -> None:
        """Print on rank 0 only (through tqdm, so progress bars stay intact)."""
        if self.setup.is_main:
            tqdm.write(text)

    def set_execution(self, bert) -> None:
        """The run's execution choices on its BertModel (attributes set from outside the model)."""
        bert.padding = self.padding
        bert.checkpointing = self.checkpointing

    def autocast(self):
        return autocast(self.device, self.precision)

    def provenance(self) -> dict:
        """What produced a run's numbers (results.json): precision, device (a GPU's name too), torch."""
        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        return {"precision": self.precision, "device": device, "torch": torch.__version__}

    def seed(self, seed: int) -> None:
        """Seed Python's and torch's generators: the same on every rank (data order, new weights)."""
        torch.manual_seed(seed)
        random.seed(seed)

    def seed_rank(self, seed: int) -> None:
        """After the model is built: each rank its own dropout stream (nothing changes in one process)."""
        if self.setup.enabled:
            torch.manual_seed(seed + RANK_SEED_STRIDE * self.setup.rank)

    def wrap(self, model: torch.nn.Module, find_unused_parameters: bool, compile: bool = False) -> torch.nn.Module:
        """The module the training steps call: DistributedDataParallel under torchrun, compiled on request.
        find_unused_parameters: some parameters may get no gradient (a head that skips the pooler, a
        frozen layer, pre-training without NSP), which DDP must be told."""
        if self.setup.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters)
        return torch.compile(model, dynamic=True) if compile else model

    def barrier(self) -> None:
        barrier(self.setup)

    def token_cache(self) -> TokenCache:
        """Where the run's encoded data is kept. One process: in its memory, nothing written. Under
        torchrun: out/.token_cache, written by each node's local rank 0 and mapped by every process of
        the node (minibert.data.token_cache), so a node tokenizes once. The output folder because it
        is the one place a run writes, already checked against every input (open_run), and its own
        (no other run reads or removes its entries); a --resume on unchanged data reuses them, and an
        entry made from other data or settings is never read (the writer replaces it)."""
        if not self.setup.enabled:
            return TokenCache()
        return TokenCache(self.out / CACHE_FOLDER, writer=self.setup.local_rank == 0,
                          agree=lambda ok: all(gather_objects(ok, self.setup)))

    def start_output_dir(self, outputs: tuple[str, ...], resume: bool, config: dict) -> None:
        """Once every input has been read: lock the folder (rank 0; another live run there is a
        ConfigError), clear what a killed run left and, for a new run, the earlier run: all of a
        folder of this run's kind, or in a folder from before kinds were recorded its `outputs`
        (names or globs inside out, with the old sides of their folder swaps, and nothing else);
        record the kind; write config.json."""
        if self.setup.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.lock is None:  # a multi-task stage 2 folder lies in its stage 1 folder: locked with it
                self.lock = RunLock.take(self.out, self.say)
            remove_leftovers(self.out)  # temporary folders of a killed checkpoint write, half-written files
            if not resume and folder_kind(self.out) == self.kind:
                clear_folder(self.out)
            elif not resume:
                patterns = [p for name in outputs for p in (name, *swap_leftovers(name))]
                for path in (p for pattern in patterns for p in self.out.glob(pattern)):
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            write_kind(self.out, self.kind)
            atomic_write_text(self.out / "config.json", json.dumps(config, indent=2) + "\n")
        self.barrier()

    def resume(self, model, optimizer, scheduler, scaler, state_class):
        """The run in out/last restored into the model, optimizer, scheduler and scaler; returns its
        state (state_class) with this rank's RNG streams restored, unchecked (restore checks it)."""
        folder = find_run(self.out / "last")
        saved = load_run(folder, model, optimizer, scheduler, scaler, rank=self.setup.rank,
                         world_size=self.setup.world_size)
        state = typed(state_class, saved, f"{folder / TRAINER_FILE}: state", CheckpointError)
        self.say(f"resumed from {folder} at optimizer step {state.step}")
        return state

    def restore(self, model, optimizer, scheduler, scaler, fresh: RunState, may_change: set, data: str,
                allow_data_change: bool) -> RunState:
        """--resume: the run in out/last restored (see resume) and checked against `fresh`, the state
        a new run would start with: its options may differ only in may_change (RESUMABLE_CHANGES and
        the loop's own) and its data (data_sha256; `data` names it in the message) only with
        allow_data_change, else one ConfigError. The state returned (fresh's class) then records
        fresh's data digest: the data the run goes on with."""
        state = self.resume(model, optimizer, scheduler, scaler, type(fresh))
        check_resumable(self.out, state.config, fresh.config, may_change, state.data_sha256 == fresh.data_sha256,
                        data, allow_data_change)
        state.data_sha256 = fresh.data_sha256
        return state

    def checkpoint(self, model, optimizer, scheduler, scaler, state) -> None:
        """out/last: the model, optimizer, schedule, scaler, the run's state and every rank's RNG."""
        rng_states = gather_objects(capture_rng(), self.setup)  # every rank's dropout stream
        if self.setup.is_main:
            save_run(self.out / "last", model, optimizer, scheduler, scaler, state, rng_states)
        self.barrier()

    @contextlib.contextmanager
    def stoppable(self) -> Iterator[None]:
        """While the block runs, SIGTERM asks the run to stop after its step (end_step reads it);
        the previous handler is back afterwards."""
        self.stop.install()
        try:
            yield
        finally:
            self.stop.restore()

    def end_step(self, step: int, due: bool, save: Callable[[], None],
                 after_step: Callable[[int], None] | None) -> int:
        """The end of optimizer step `step`, after the loop logged and evaluated what was due, in the
        one order every loop follows (inside `with context.stoppable()`):

          1. the stop signal is read, on every rank, so that all ranks stop after the same step;
          2. save() runs when `due` (the loop's checkpoint schedule, its last step included) or when
             a stop was requested: it writes last/ through self.checkpoint (collective: every rank
             calls it) with whatever the run keeps with it;
          3. after_step(step), the hook, sees the step with its checkpoint written: an exception
             raised there ends the run as a crash at that point would; SIGTERM sent there stops the
             run after the next step.

        Returns True when the run is to stop (SIGTERM): last/ holds this step, the loop breaks out
        and its caller reports the run as stopped."""
        stopping = self.stop.requested(self.setup)
        if due or stopping:
            save()
        if stopping:
            self.say(f"stopped by signal at step {step}; continue with --resume")
        if after_step is not None:
            after_step(step)
        return stopping

    def close(self) -> None:
        """The end of the run: its folder unlocked, the process group ended."""
        if self.lock is not None:
            self.lock.release()
        shutdown(self.setup)


def open_run(machine: TrainingMachineOptions, output_dir: str, resume: bool, overwrite: bool,
             inputs: Inputs = (), kind: str = FINE_TUNING) -> RunContext:
    """Check the output folder (inputs: (option, path) of what the run reads, which it may not
    write over; kind: what the run is, run_folder.KIND_SCRIPTS), resolve the machine options
    (resolve_machine), and join the process group torchrun set up (or run as one process). Nothing
    is written."""
    out = Path(output_dir)
    check_output_dir(out, resume, overwrite, inputs, kind)
    device, precision, padding = resolve_machine(machine)
    setup = init_distributed(device.type)  # one process, or this process's rank under torchrun
    checkpointing = "layers" if machine.gradient_checkpointing else "off"
    return RunContext(device_for(setup, device), precision, padding, setup, out, checkpointing, kind=kind)


def check_resumable(out: Path, saved: dict, current: dict, may_change: set, same_data: bool, data: str,
                    allow_data_change: bool) -> None:
    """A resumed run must have the settings it was started with (but those in may_change) and,
    unless allow_data_change, the same data (same_data: the digests agree). saved/current: flat
    {option: value} of the checkpoint's config and of this run's. output_dir may differ: a run
    folder moved elsewhere (or named by another relative path) is the same run. (RunContext.restore
    calls it.)"""
    may_change = may_change | {"output_dir"}
    changed = [k for k, v in saved.items() if k not in may_change and current.get(k, v) != v]
    if changed:
        raise ConfigError(f"--resume: the run in {out} used other values of {', '.join(changed)}")
    if not same_data and not allow_data_change:
        raise ConfigError(f"--resume: {data} changed since the run in {out} started (--allow_data_change "
                          "resumes anyway)")
