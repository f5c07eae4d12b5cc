"""What every kind of run shares: device, precision and padding resolved once, threads, the process
group, per-rank seeds, rank-0 output, the DDP wrap, the output folder, resume checks, checkpoints
with every rank's RNG state, and shutdown.

Fine-tuning (minibert.finetune) and pre-training (minibert.pretraining) each write their own loop
over a RunContext; neither repeats this plumbing. The order of the calls is the order of a run:

    context = open_run(RunOptions(...), "runs/x")   # every check that needs no data, nothing written
    ...read and check every input...
    state = context.resume(...) if resuming          # settings and data unchanged, or one error line
    context.start_output_dir(outputs, config)        # only now is the output folder written
    ...loop: context.checkpoint(...) when due...
    context.close()
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.cli import option
from minibert.data.token_cache import CACHE_FOLDER, TokenCache
from minibert.errors import ConfigError
from minibert.files import atomic_write_text, remove_leftovers
from minibert.output_paths import Inputs
from minibert.training.distributed import (Distributed, barrier, device_for, gather_objects, init_distributed,
                                           shutdown)
from minibert.training.machine import (PADDING_CHOICES, PRECISION_CHOICES, autocast, resolve_device,
                                        resolve_padding, resolve_precision)
from minibert.training.last_checkpoint import capture_rng, check_output_dir, find_run, load_run, save_run

# A different dropout stream per rank: rank r seeds seed + RANK_SEED_STRIDE * r (the weights are the
# same on every rank: DistributedDataParallel broadcasts rank 0's when it wraps the model).
RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class MachineOptions:
    """Where and how a run computes; "auto" values are resolved once, by open_run."""

    precision: str = option("auto", "auto (bf16 where the CPU/GPU has native bf16, else fp32), fp32, "
                            "bf16 autocast (CPU or GPU), fp16 with loss scaling (GPU)", choices=PRECISION_CHOICES)
    padding: str = option("auto", "unpadded: only real tokens through the encoder's layers (same math); "
                          "auto: unpadded on CPU, and on CUDA with the Triton varlen kernel", choices=PADDING_CHOICES)
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    threads: int = option(0, "CPU threads for torch (0 = torch's default)")
    gradient_checkpointing: bool = option(False, "recompute each encoder layer in backward, with the same dropout "
                                          "masks (same numbers): less activation memory for about one more "
                                          "forward pass of compute")


@dataclass
class RunContext:
    """One run's resolved machine and process group, and its output folder."""

    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16
    padding: str  # resolved: padded or unpadded
    setup: Distributed
    out: Path
    checkpointing: str = "off"  # BertModel.checkpointing: off, or layers (recomputed in backward)

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
        """Once every input has been read: clear what a killed run left and, for a new run, the
        earlier run's `outputs` (names or globs inside out, and nothing else); write config.json."""
        if self.setup.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.out)  # temporary folders of a killed checkpoint write, half-written files
            if not resume:
                for path in (p for pattern in outputs for p in self.out.glob(pattern)):
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            atomic_write_text(self.out / "config.json", json.dumps(config, indent=2) + "\n")
        self.barrier()

    def resume(self, model, optimizer, scheduler, scaler, state_class):
        """The run in out/last restored into the model, optimizer, scheduler and scaler; returns its
        state (state_class) with this rank's RNG streams restored. check_resumable comes next."""
        folder = find_run(self.out / "last")
        state = state_class(**load_run(folder, model, optimizer, scheduler, scaler, rank=self.setup.rank,
                                       world_size=self.setup.world_size))
        self.say(f"resumed from {folder} at optimizer step {state.step}")
        return state

    def checkpoint(self, model, optimizer, scheduler, scaler, state) -> None:
        """out/last: the model, optimizer, schedule, scaler, the run's state and every rank's RNG."""
        rng_states = gather_objects(capture_rng(), self.setup)  # every rank's dropout stream
        if self.setup.is_main:
            save_run(self.out / "last", model, optimizer, scheduler, scaler, state, rng_states)
        self.barrier()

    def close(self) -> None:
        shutdown(self.setup)


def open_run(machine: MachineOptions, output_dir: str, resume: bool, overwrite: bool,
             inputs: Inputs = ()) -> RunContext:
    """Check the output folder (inputs: (option, path) of what the run reads, which it may not
    write over), resolve "auto" device/precision/padding, set threads, and join the process group
    torchrun set up (or run as one process). Nothing is written."""
    out = Path(output_dir)
    check_output_dir(out, resume, overwrite, inputs)
    if machine.threads > 0:
        torch.set_num_threads(machine.threads)
    device = resolve_device(machine.device)
    precision = resolve_precision(machine.precision, device)
    padding = resolve_padding(machine.padding, device)
    autocast(device, precision)  # refuses fp16 without CUDA now, not at the first step
    setup = init_distributed(device.type)  # one process, or this process's rank under torchrun
    checkpointing = "layers" if machine.gradient_checkpointing else "off"
    return RunContext(device_for(setup, device), precision, padding, setup, out, checkpointing)


def check_resumable(out: Path, saved: dict, current: dict, may_change: set, same_data: bool, data: str,
                    allow_data_change: bool) -> None:
    """A resumed run must have the settings it was started with (but those in may_change) and,
    unless allow_data_change, the same data (same_data: the digests agree). saved/current: flat
    {option: value} of the checkpoint's config and of this run's. output_dir may differ: a run
    folder moved elsewhere (or named by another relative path) is the same run."""
    may_change = may_change | {"output_dir"}
    changed = [k for k, v in saved.items() if k not in may_change and current.get(k, v) != v]
    if changed:
        raise ConfigError(f"--resume: the run in {out} used other values of {', '.join(changed)}")
    if not same_data and not allow_data_change:
        raise ConfigError(f"--resume: {data} changed since the run in {out} started (--allow_data_change "
                          "resumes anyway)")
