"""The pre-training run: run_pretraining.py's training loop on the shared run context.

    train(cfg)   open the run (device, precision, process group; nothing written), read and check
                 the model, vocabulary and records, resume from last/ when asked, then optimizer
                 steps of train_batch_size records each (grad_accum_steps micro-batches), a
                 metrics.jsonl record every log_every steps, evaluation and last/ when due, and
                 final/ (a minibert folder with the MLM and NSP heads) at the end.

Padded batches throughout, as Google's model runs them. Under torchrun every process takes its slice
of each step's W * train_batch_size records and the losses are normalised over the global batch, so
the steps are those of one process with the global batch. SIGTERM or SIGINT: the step in progress
finishes, last/ is saved and train returns {"stopped": True, "signal": its number}; --resume then
continues with bit-identical weights (the data position, the unlogged loss window and every RNG are in last/).
"""

import glob
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.checkpoints.formats import checkpoint_of, save_minibert
from minibert.data.pretraining_batches import RecordStream
from minibert.errors import ConfigError
from minibert.files import replace_folder
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.pretraining.config import RESUMABLE_CHANGES, PretrainConfig, check_train_config
from minibert.pretraining.losses import (evaluation_metrics, evaluation_sums, pretraining_loss_terms,
                                         pretraining_outputs)
from minibert.pretraining.model_setup import read_inputs, records_sha256
from minibert.training.distributed import all_reduce_sum, no_sync
from minibert.training.metrics_log import LossWindow, MetricsLog
from minibert.training.optimization import build_optimizer, optimizer_step, parameter_groups
from minibert.training.plots import plot_pretraining_curves
from minibert.training.machine import grad_scaler
from minibert.training.run_context import MachineOptions, RunContext, check_resumable, open_run
from minibert.training.last_checkpoint import check_output_dir
from minibert.training.schedules import build_scheduler
from minibert.training.stop_signal import StopSignal

# What a new run clears from output_dir (an --overwrite_output_dir run's predecessor); a resume keeps them.
OUTPUTS = ("last", "last.old", ".last.*.old", "final", "final.old", ".final.*.old", "metrics.jsonl", "config.json", "pretraining_curves.png",
           "checkpoint-*")


@dataclass
class PretrainState:
    """Progress saved in last/: optimizer steps done and records consumed (the data position)."""
    step: int = 0
    records_seen: int = 0  # by all processes together
    world_size: int = 1  # processes (torchrun); a resume needs as many
    config: dict = field(default_factory=dict)
    # The unlogged window, so a resumed run logs the same means: (sum, steps) of the MLM and NSP
    # losses (LossWindow.state()) and the tokens seen.
    mlm_window: tuple = (0.0, 0)
    nsp_window: tuple = (0.0, 0)
    window_tokens: int = 0
    data_sha256: str = ""  # of the --input_file records (records_sha256): a resume on other data is refused


@dataclass(frozen=True)
class PretrainHooks:
    """Calls into a running pre-training, for tests and callers that watch it; none changes the run.

    after_step(step): after each optimizer step, once that step's evaluation and last/ (when due)
    are written. Raising there ends the run as a crash at that point would; sending SIGTERM there
    stops the run after the next step, as a scheduler's SIGTERM would.
    """
    after_step: Callable[[int], None] | None = None


class LogWindow:
    """The steps since the last metrics.jsonl record: their MLM and NSP losses (LossWindow reads them
    only when logging, and stops the run at a NaN/inf loss), tokens and start time."""

    def __init__(self, state: PretrainState):
        self.mlm, self.nsp = LossWindow(*state.mlm_window), LossWindow(*state.nsp_window)
        self.tokens, self.start = state.window_tokens, time.time()

    def add(self, step: int, mlm: torch.Tensor, nsp: torch.Tensor, tokens: int) -> None:
        self.mlm.add(mlm, step)
        self.nsp.add(nsp, step)
        self.tokens += tokens

    def record(self, step: int, lr: float, cfg: PretrainConfig, context: RunContext) -> dict:
        """The window's metrics.jsonl record, over every process; the next window starts here."""
        W = context.setup.world_size
        steps = self.mlm.batches
        # Summed over ranks and divided by W * steps: each rank added W times its share.
        reduce = partial(all_reduce_sum, setup=context.setup)
        mlm_loss, nsp_loss = self.mlm.mean(step, reduce), self.nsp.mean(step, reduce)
        seconds = time.time() - self.start
        tokens = float(all_reduce_sum(torch.tensor(float(self.tokens), device=context.device), context.setup))
        record = dict(step=step, split="train", loss=mlm_loss + (nsp_loss if cfg.next_sentence else 0.0),
                      mlm_loss=mlm_loss, nsp_loss=nsp_loss, lr=lr,
                      sequences_per_s=steps * cfg.train_batch_size * W / seconds, tokens_per_s=tokens / seconds)
        self.mlm.reset()
        self.nsp.reset()
        self.tokens, self.start = 0, time.time()
        return record

    def save_into(self, state: PretrainState) -> None:
        state.mlm_window, state.nsp_window, state.window_tokens = self.mlm.state(), self.nsp.state(), self.tokens


def train(cfg: PretrainConfig, hooks: PretrainHooks = PretrainHooks()) -> dict:
    """Pre-train as run_pretraining.py does; returns {"step", "records": the metrics.jsonl records},
    or {"step", "stopped": True, "signal"} after a SIGTERM or SIGINT."""
    check_train_config(cfg)
    context = open_pretraining(cfg)
    cfg = replace(cfg, precision=context.precision)  # "auto" -> what runs, saved
    model, vocab_file, stream, eval_stream = read_inputs(cfg, context)
    digest = records_sha256(cfg.input_file, "input_file")
    W = context.setup.world_size
    model.to(context.device).train()
    context.seed_rank(cfg.seed)  # a dropout stream per rank (weights: rank 0's)
    # Without NSP its head gets no gradient, which DDP must be told.
    train_model = context.wrap(model, find_unused_parameters=not cfg.next_sentence)
    # Google's optimization.py: AdamWeightDecay, decay on everything but LayerNorm and biases.
    groups = parameter_groups(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                              num_layers=model.config.num_hidden_layers)
    optimizer = build_optimizer(cfg.optimizer, groups)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.num_train_steps, cfg.num_warmup_steps)
    scaler = grad_scaler(context.device, cfg.precision)
    state = PretrainState(world_size=W, config=asdict(cfg), data_sha256=digest)
    if cfg.resume:
        state = resume(cfg, context, model, optimizer, scheduler, scaler, digest)
    context.start_output_dir(OUTPUTS, cfg.resume, asdict(cfg))  # every input has been read: only now
    log = MetricsLog(context.out / "metrics.jsonl" if context.is_main else None, state.step if cfg.resume else None)
    if eval_stream is not None and state.step == 0:  # where the run starts, for the curve and the comparison
        evaluate_and_log(model, eval_stream, cfg, context, log, 0)

    window, stop, stopping = LogWindow(state), StopSignal(), 0
    bar = tqdm(total=cfg.num_train_steps, initial=state.step, desc="pre-training", unit="step",
               disable=not context.is_main)
    stop.install()
    try:
        while state.step < cfg.num_train_steps and not stopping:
            mlm, nsp, tokens = forward_backward(train_model, stream, cfg, state.records_seen, scaler, context)
            state.records_seen += cfg.train_batch_size * W
            window.add(state.step + 1, mlm, nsp, tokens)
            lr = optimizer_step(model, optimizer, scheduler, scaler, cfg.max_grad_norm)  # Google: global-norm clip
            state.step += 1
            bar.update(1)
            if state.step % cfg.log_every == 0 or state.step == cfg.num_train_steps:
                record = window.record(state.step, lr, cfg, context)
                log.write(**record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", seq_s=f"{record['sequences_per_s']:.1f}")
            # Read once per step, here, so a SIGTERM at any moment gets this step or the next saved.
            stopping = stop.requested(context.setup)
            at_end = state.step == cfg.num_train_steps or stopping
            if eval_stream is not None and evaluation_due(cfg, state.step, at_end):
                evaluate_and_log(model, eval_stream, cfg, context, log, state.step)
            if checkpoint_due(cfg, state.step, at_end):
                window.save_into(state)
                context.checkpoint(model, optimizer, scheduler, scaler, state)
                # A copy at every save_checkpoints_steps and the last step, not at a SIGTERM stop: last/
                # holds that step for --resume, and an extra copy would push out an older kept one.
                if context.is_main and (state.step % cfg.save_checkpoints_steps == 0 or
                                        state.step == cfg.num_train_steps):
                    keep_checkpoint(context.out, model, vocab_file, state.step, cfg.keep_checkpoints)
            if hooks.after_step is not None:
                hooks.after_step(state.step)
    finally:
        bar.close()
        stop.restore()
        log.close()
    return finish(context, model, vocab_file, log, state.step, stopping)


def open_pretraining(cfg: PretrainConfig) -> RunContext:
    """The run context, padded as Google's model runs; device and precision errors name both flags."""
    # A glob protects every path it matches (a folder holding the records' shards is not an output).
    inputs = [(f"--{name}", match) for name in ("init", "bert_config_file", "vocab_file", "input_file",
                                                "eval_input_file")
              for path in getattr(cfg, name).split(",") if path.strip() and path.strip() != "minilm"
              for match in (glob.glob(path.strip()) if any(c in path for c in "*?[") else [path.strip()])]
    check_output_dir(Path(cfg.output_dir), cfg.resume, cfg.overwrite_output_dir, inputs)  # its own errors name it
    machine = MachineOptions(device=cfg.device, precision=cfg.precision, padding="padded", threads=cfg.threads,
                             gradient_checkpointing=cfg.gradient_checkpointing)
    try:
        return open_run(machine, cfg.output_dir, cfg.resume, cfg.overwrite_output_dir, inputs)
    except ValueError as e:
        raise ConfigError(f"--device={cfg.device} --precision={cfg.precision}: {e}") from None


def resume(cfg: PretrainConfig, context: RunContext, model, optimizer, scheduler, scaler, digest: str) -> PretrainState:
    """The run in last/ restored, after checking it had the same settings and, unless
    --allow_data_change, the same --input_file records (digest)."""
    state = context.resume(model, optimizer, scheduler, scaler, PretrainState)
    check_resumable(context.out, state.config, asdict(cfg), RESUMABLE_CHANGES, state.data_sha256 == digest,
                    f"--input_file {cfg.input_file}", cfg.allow_data_change)
    state.data_sha256 = digest  # the records the run goes on with
    return state


def forward_backward(model, stream: RecordStream, cfg: PretrainConfig, records_seen: int, scaler,
                     context: RunContext) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One optimizer step's forward and backward passes over its grad_accum_steps micro-batches, the
    step's batch starting at record records_seen. Returns this process's W-scaled shares of the step's
    MLM and NSP losses (float32 scalars) and the tokens it read."""
    setup, W = context.setup, context.setup.world_size
    # Every micro-batch of the step is assembled first: the MLM loss divides by the weight sum
    # of the whole step's batch (run_pretraining.py), which accumulation must not change. Under
    # torchrun the step's batch is W * train_batch_size records, this rank's the r-th slice.
    micro = cfg.train_batch_size // cfg.grad_accum_steps
    first = records_seen + setup.rank * cfg.train_batch_size
    batches = [stream.batch(first + k * micro, micro) for k in range(cfg.grad_accum_steps)]
    weights = torch.stack([b["masked_lm_weights"].sum() for b in batches]).sum().double()
    weight_total = float(all_reduce_sum(weights.to(context.device), setup))  # of the whole global batch
    step_mlm = step_nsp = 0.0
    tokens = 0
    for k, batch in enumerate(batches):
        batch = {key: v.to(context.device, non_blocking=True) for key, v in batch.items()}
        with no_sync(model, last_micro_batch=k + 1 == len(batches)):
            with context.autocast():
                output = pretraining_outputs(model, batch)
            # This rank's shares of the global batch's losses; DDP averages gradients over the W
            # ranks, so the shares are scaled by W: the gradient is exactly the global batch's.
            mlm, nsp = pretraining_loss_terms(output, batch, weight_total, cfg.train_batch_size * W)
            mlm, nsp = W * mlm, W * nsp
            loss = mlm + nsp if cfg.next_sentence else mlm
            scaler.scale(loss).backward()
        step_mlm, step_nsp = step_mlm + mlm.detach(), step_nsp + nsp.detach()
        tokens += int(batch["input_mask"].sum())
    return step_mlm, step_nsp, tokens


def checkpoint_due(cfg: PretrainConfig, step: int, at_end: bool) -> bool:
    """last/ every save_checkpoints_steps steps, at the last step and when stopped."""
    return step % cfg.save_checkpoints_steps == 0 or at_end


def evaluation_due(cfg: PretrainConfig, step: int, at_end: bool) -> bool:
    """Every eval_every steps, or (eval_every 0) with every checkpoint."""
    return step % cfg.eval_every == 0 if cfg.eval_every else checkpoint_due(cfg, step, at_end)


def evaluate_and_log(model, stream: RecordStream, cfg: PretrainConfig, context: RunContext, log: MetricsLog,
                     step: int) -> None:
    metrics = evaluate(model, stream, cfg.eval_batch_size, context)
    log.write(step=step, split="eval", **metrics)
    context.say(eval_line(step, metrics, cfg.next_sentence))


@torch.no_grad()
def evaluate(model, stream: RecordStream, batch_size: int, context: RunContext) -> dict:
    """run_pretraining.py's eval metrics over every record of `stream`, once, in file order; under
    torchrun each process takes every N-th batch and the sums are added up."""
    model.eval()
    setup = context.setup
    sums = torch.zeros(6, dtype=torch.float64)
    starts = range(setup.rank * batch_size, len(stream), batch_size * setup.world_size)
    for start in tqdm(starts, desc="eval", leave=False, unit="batch", disable=not setup.is_main):
        batch = {k: v.to(context.device) for k, v in stream.batch(start, min(batch_size, len(stream) - start)).items()}
        with context.autocast():
            output = pretraining_outputs(model, batch)
        sums += evaluation_sums(output, batch).cpu()
    model.train()
    return evaluation_metrics(all_reduce_sum(sums, setup))


def eval_line(step: int, metrics: dict, next_sentence: bool) -> str:
    """The evaluation's one line (NSP accuracy only where the records have next-sentence labels)."""
    line = f"step {step}: eval MLM loss {metrics['mlm_loss']:.4f}, MLM accuracy {100 * metrics['mlm_accuracy']:.2f}%"
    return line + (f", NSP accuracy {100 * metrics['nsp_accuracy']:.2f}%" if next_sentence else "")


def keep_checkpoint(out: Path, model: BertForPreTraining, vocab_file: Path, step: int, keep: int) -> None:
    """With keep > 1, the model is also saved as checkpoint-STEP/ (a minibert folder that train.py
    --init reads) and only the newest keep - 1 stay (e.g. after 10k, 20k, ... steps for Figure 3).
    Called at the scheduled saves only, so a run stopped by SIGTERM and resumed keeps the same ones."""
    if keep <= 1:
        return
    replace_folder(out / f"checkpoint-{step}", lambda tmp: save_minibert(tmp, checkpoint_of(model, vocab_file)))
    copies = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in copies[:-(keep - 1)]:
        shutil.rmtree(old)


def finish(context: RunContext, model: BertForPreTraining, vocab_file: Path, log: MetricsLog, step: int,
           stopped: int) -> dict:
    """final/ and the curves (rank 0), or, after a SIGTERM or SIGINT (`stopped`: its number), only the
    line saying how to go on."""
    out = context.out
    if stopped:
        context.say(f"stopped by signal at step {step}; continue with --resume")
    elif context.is_main:
        replace_folder(out / "final", lambda folder: save_minibert(folder, checkpoint_of(model, vocab_file)))
        plot_pretraining_curves(log.records, out / "pretraining_curves.png")
        context.say(f"model: {out / 'final'}  metrics: {out / 'metrics.jsonl'}  plot: {out / 'pretraining_curves.png'}")
        context.say(f"fine-tune it: python train.py --init {out / 'final'}")
    context.barrier()
    context.close()
    return {"step": step, "stopped": True, "signal": stopped} if stopped else {"step": step, "records": log.records}
