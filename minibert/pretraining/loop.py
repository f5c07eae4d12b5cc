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

import contextlib
import glob
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.checkpoints.formats import checkpoint_of, save_minibert
from minibert.data.pretraining_batches import RecordStream
from minibert.files import replace_folder
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.pretraining.config import (
    RESUMABLE_CHANGES,
    RUN_OUTPUTS,
    PretrainConfig,
    PretrainOptimOptions,
    PretrainRunOptions,
    check_options,
)
from minibert.pretraining.losses import evaluation_metrics, evaluation_sums, pretraining_loss_terms, pretraining_outputs
from minibert.pretraining.model_setup import read_inputs, records_sha256
from minibert.training.distributed import all_reduce_sum, no_sync
from minibert.training.machine import grad_scaler
from minibert.training.metrics_log import TENSORBOARD_FOLDER, LossWindow, MetricsLog
from minibert.training.optimization import build_optimizer, optimizer_step, parameter_groups
from minibert.training.plots import plot_pretraining_curves
from minibert.training.run_context import RunContext, RunState, open_run
from minibert.training.run_folder import PRE_TRAINING
from minibert.training.schedules import build_scheduler


@dataclass
class PretrainState(RunState):
    """Progress saved in last/ (with RunState's step, processes, config and records digest, of the
    --input_file records): the records consumed (the data position) and the unlogged window."""
    records_seen: int = 0  # by all processes together
    # The unlogged window, so a resumed run logs the same means: (sum, steps) of the MLM and NSP
    # losses (LossWindow.state()) and the tokens seen.
    mlm_window: tuple = (0.0, 0)
    nsp_window: tuple = (0.0, 0)
    window_tokens: int = 0


@dataclass(frozen=True)
class PretrainHooks:
    """Calls into a running pre-training, for tests and callers that watch it; none changes the run.

    after_step(step): after each optimizer step, once that step's evaluation and last/ (when due)
    are written (RunContext.end_step). Raising there ends the run as a crash at that point would;
    sending SIGTERM there stops the run after the next step, as a scheduler's SIGTERM would.
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

    def record(self, step: int, lr: float, next_sentence: bool, batch_size: int, context: RunContext) -> dict:
        """The window's metrics.jsonl record, over every process (batch_size: sequences per step and
        process); the next window starts here."""
        W = context.setup.world_size
        steps = self.mlm.batches
        # Summed over ranks and divided by W * steps: each rank added W times its share.
        reduce = partial(all_reduce_sum, setup=context.setup)
        mlm_loss, nsp_loss = self.mlm.mean(step, reduce), self.nsp.mean(step, reduce)
        seconds = time.time() - self.start
        tokens = float(all_reduce_sum(torch.tensor(float(self.tokens), device=context.device), context.setup))
        record = dict(step=step, split="train", loss=mlm_loss + (nsp_loss if next_sentence else 0.0),
                      mlm_loss=mlm_loss, nsp_loss=nsp_loss, lr=lr,
                      sequences_per_s=steps * batch_size * W / seconds, tokens_per_s=tokens / seconds)
        self.mlm.reset()
        self.nsp.reset()
        self.tokens, self.start = 0, time.time()
        return record

    def save_into(self, state: PretrainState) -> None:
        state.mlm_window, state.nsp_window, state.window_tokens = self.mlm.state(), self.nsp.state(), self.tokens


def train(cfg: PretrainConfig, hooks: PretrainHooks = PretrainHooks()) -> dict:
    """Pre-train as run_pretraining.py does; returns {"step", "records": the metrics.jsonl records},
    or {"step", "stopped": True, "signal"} after a SIGTERM or SIGINT."""
    check_options(cfg)
    context = open_run(cfg.machine, cfg.run.output_dir, cfg.run.resume, cfg.run.overwrite_output_dir, input_paths(cfg),
                       PRE_TRAINING)
    # "auto" -> what runs, saved
    cfg = replace(cfg, machine=replace(cfg.machine, precision=context.precision, padding=context.padding))
    model, vocab_file, stream, eval_stream = read_inputs(cfg, context)
    optim, run, next_sentence = cfg.optim, cfg.run, cfg.records.next_sentence
    model.to(context.device).train()
    context.seed_rank(run.seed)  # a dropout stream per rank (weights: rank 0's)
    # Without NSP its head gets no gradient, which DDP must be told.
    train_model = context.wrap(model, find_unused_parameters=not next_sentence)
    optimizer, scheduler, scaler = build_optimisation(optim, model, context)
    state = PretrainState(world_size=context.setup.world_size, config=cfg.flat(),
                          data_sha256=records_sha256(cfg.records.input_file, "input_file"))
    if run.resume:
        state = context.restore(model, optimizer, scheduler, scaler, state, RESUMABLE_CHANGES,
                                f"--input_file {cfg.records.input_file}", run.allow_data_change)
    context.start_output_dir(RUN_OUTPUTS, run.resume, cfg.flat())  # every input has been read: only now
    log = MetricsLog(context.out / "metrics.jsonl" if context.is_main else None, state.step if run.resume else None,
                     context.out / TENSORBOARD_FOLDER if run.tensorboard else None)
    evaluate = None if eval_stream is None else partial(
        evaluate_and_log, model, eval_stream, cfg.evaluation.eval_batch_size, next_sentence, context, log)
    if evaluate is not None and state.step == 0:  # where the run starts, for the curve and the comparison
        evaluate(0)
    window, stopping = LogWindow(state), False

    def save() -> None:
        """last/, due or stopped; with eval_every 0 the evaluation that goes with every checkpoint
        first, and at the scheduled saves (not at a SIGTERM stop) the copy checkpoint-STEP/."""
        if evaluate is not None and not cfg.evaluation.eval_every:
            evaluate(state.step)
        window.save_into(state)
        context.checkpoint(model, optimizer, scheduler, scaler, state)
        if context.is_main and checkpoint_due(run, optim, state.step):
            keep_checkpoint(context.out, model, vocab_file, state.step, run.keep_checkpoints)

    bar = tqdm(total=optim.num_train_steps, initial=state.step, desc="pre-training", unit="step",
               disable=not context.is_main)
    with context.stoppable(), bar, contextlib.closing(log):
        while state.step < optim.num_train_steps and not stopping:
            mlm, nsp, tokens = forward_backward(train_model, stream, optim, next_sentence, state.records_seen, scaler,
                                                context)
            state.records_seen += optim.train_batch_size * context.setup.world_size
            window.add(state.step + 1, mlm, nsp, tokens)
            lr = optimizer_step(model, optimizer, scheduler, scaler, optim.max_grad_norm)  # Google: global-norm clip
            state.step += 1
            bar.update(1)
            if state.step % run.log_every == 0 or state.step == optim.num_train_steps:
                record = window.record(state.step, lr, next_sentence, optim.train_batch_size, context)
                log.write(**record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", seq_s=f"{record['sequences_per_s']:.1f}")
            every = cfg.evaluation.eval_every
            if evaluate is not None and every and state.step % every == 0:
                evaluate(state.step)
            stopping = context.end_step(state.step, checkpoint_due(run, optim, state.step), save, hooks.after_step)
    return finish(context, model, vocab_file, log, state.step, stopping)


def input_paths(cfg: PretrainConfig) -> list[tuple[str, str]]:
    """(option, path) of every file train reads ('minilm' left out): the output folder may not be one
    of them. A glob protects every path it matches (a folder holding the records' shards is not an output)."""
    named = {"init": cfg.model.init, "bert_config_file": cfg.model.bert_config_file,
             "vocab_file": cfg.model.vocab_file, "input_file": cfg.records.input_file,
             "eval_input_file": cfg.evaluation.eval_input_file}
    return [(f"--{name}", match) for name, spec in named.items() for path in spec.split(",")
            if path.strip() and path.strip() != "minilm"
            for match in (glob.glob(path.strip()) if any(c in path for c in "*?[") else [path.strip()])]


def build_optimisation(optim: PretrainOptimOptions, model: BertForPreTraining, context: RunContext):
    """(optimizer, scheduler, loss scaler). Google's optimization.py: AdamWeightDecay, decay on
    everything but LayerNorm and biases, linear warm-up and decay."""
    groups = parameter_groups(model, lr=optim.learning_rate, weight_decay=optim.weight_decay,
                              num_layers=model.config.num_hidden_layers)
    optimizer = build_optimizer(optim.optimizer, groups)
    scheduler = build_scheduler(optimizer, optim.schedule, optim.num_train_steps, optim.num_warmup_steps)
    return optimizer, scheduler, grad_scaler(context.device, context.precision)


def forward_backward(model, stream: RecordStream, cfg: PretrainOptimOptions, next_sentence: bool, records_seen: int,
                     scaler, context: RunContext) -> tuple[torch.Tensor, torch.Tensor, int]:
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
            loss = mlm + nsp if next_sentence else mlm
            scaler.scale(loss).backward()
        step_mlm, step_nsp = step_mlm + mlm.detach(), step_nsp + nsp.detach()
        tokens += int(batch["input_mask"].sum())
    return step_mlm, step_nsp, tokens


def checkpoint_due(run: PretrainRunOptions, optim: PretrainOptimOptions, step: int) -> bool:
    """The scheduled saves of last/: every save_checkpoints_steps steps and the last step (a SIGTERM
    stop saves too: RunContext.end_step)."""
    return step % run.save_checkpoints_steps == 0 or step == optim.num_train_steps


def evaluate_and_log(model, stream: RecordStream, batch_size: int, next_sentence: bool, context: RunContext,
                     log: MetricsLog, step: int) -> None:
    metrics = evaluate(model, stream, batch_size, context)
    log.write(step=step, split="eval", **metrics)
    context.say(eval_line(step, metrics, next_sentence))


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
    if not stopped and context.is_main:
        replace_folder(out / "final", lambda folder: save_minibert(folder, checkpoint_of(model, vocab_file)))
        plot_pretraining_curves(log.records, out / "pretraining_curves.png")
        context.say(f"model: {out / 'final'}  metrics: {out / 'metrics.jsonl'}  plot: {out / 'pretraining_curves.png'}")
        context.say(f"fine-tune it: python train.py --init {out / 'final'}")
    context.barrier()
    context.close()
    return {"step": step, "stopped": True, "signal": stopped} if stopped else {"step": step, "records": log.records}
