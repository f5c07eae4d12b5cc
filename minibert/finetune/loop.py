"""The fine-tuning loop, written out once: epochs of optimizer steps, each over grad_accum_steps
micro-batches of one task each. A single-task run is a mixture of one task; multi-task stage 1
(paper §4.3) mixes every task's batches; multi-task stage 2 is this loop again on each task alone.

Around the loop: the dev set is scored at every epoch end (and every eval_every steps), the best
model by dev error (the mean over tasks) is kept in best/, last/ is written at epoch ends (and
every checkpoint_every steps) with every rank's RNG state, so --resume continues bit-identically.
SIGTERM or SIGINT: the step in progress finishes, last/ is saved and the Fit's `signalled` holds the
signal's number (every rank stops after the same step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from minibert.data.features import collate, model_inputs
from minibert.data.splits import few_shot_subset
from minibert.finetune.config import RESUMABLE_CHANGES, RUN_OUTPUTS, FinetuneConfig
from minibert.finetune.model_setup import (Optimisation, build_optimisation, set_trainable, task_head, task_logits,
                                           train_mode)
from minibert.finetune.selection import evaluate_dev
from minibert.finetune.tasks import Task, class_weights, data_names, epoch_micro_batches
from minibert.text.encoding import TextEncoding
from minibert.training.distributed import all_reduce_sum, no_sync
from minibert.training.metrics_log import LossWindow, MetricsLog
from minibert.training.optimization import optimizer_step
from minibert.training.run_context import RunContext, check_resumable
from minibert.training.stop_signal import StopSignal


@dataclass
class FitHooks:
    """Seams into the loop for tests and tools (None = nothing is called).

    after_step(step): after optimizer step `step` and its logging, evaluation and checkpoint; an
    exception raised here ends the run as a crash at that point would.
    loss(step, task, loss) -> loss: each micro-batch's loss before backward (e.g. a NaN injected).
    """

    after_step: Callable[[int], None] | None = None
    loss: Callable[[int, str, torch.Tensor], torch.Tensor] | None = None


@dataclass
class DevSelection:
    """The best model by dev error, and early stopping after `patience` evaluations without a better one."""

    best_dev_error: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped: bool = False  # early stopping fired

    def record(self, error: float, step: int, patience: int) -> bool:
        """Score one evaluation; True when it is the best so far (the model is then saved)."""
        better = self.best_dev_error is None or error < self.best_dev_error
        if better:
            self.best_dev_error, self.best_step, self.evals_without_improvement = error, step, 0
        else:
            self.evals_without_improvement += 1
        self.stopped = patience > 0 and self.evals_without_improvement >= patience
        return better


@dataclass
class FinetuneState(DevSelection):
    """Where a run stands; saved in last/ and restored by --resume."""

    step: int = 0  # optimizer steps done
    window_loss: float = 0.0  # training loss summed since the last log line (LossWindow)
    window_batches: int = 0
    data_sha256: str = ""  # of every task's train and dev file: --resume refuses other data
    world_size: int = 1  # processes (torchrun): a resume with another number would see other batches
    config: dict = field(default_factory=dict)
    stage1_done: bool = False  # multi-task: stage 1 finished, a --resume goes on with stage 2


class Throughput:
    """Examples per second since the last log line (all processes)."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.start, self.examples = time.time(), 0

    def count(self, examples: int) -> None:
        self.examples += examples

    def per_second(self, world_size: int) -> float:
        return self.examples * world_size / max(time.time() - self.start, 1e-9)


@dataclass
class Fit:
    """Everything one call of `fit` reads, set up by `prepare_fit`."""

    model: torch.nn.Module
    tasks: list[Task]
    tokenizer: object
    encoding: TextEncoding
    opt: Optimisation
    steps_per_epoch: int
    state: FinetuneState
    log: MetricsLog
    weights: dict = field(default_factory=dict)  # task -> class weights of the loss (--class_weighted_loss)
    train_eval: dict = field(default_factory=dict)  # task -> the fixed training subset scored with dev
    window: LossWindow = field(default_factory=LossWindow)
    speed: Throughput = field(default_factory=Throughput)
    signalled: int = 0  # the signal (SIGTERM, SIGINT) that stopped the run: last/ holds the step it stopped after


def prepare_fit(context: RunContext, cfg: FinetuneConfig, model, tasks: list[Task], tokenizer, encoding,
                data_sha256: str) -> Fit:
    """The optimisation, the run's state (restored on --resume, after checking settings and data)
    and its output folder, started only now that every input has been read."""
    listed = epoch_micro_batches(tasks, cfg.optim, cfg.multitask, cfg.run.seed, 0, context.setup)
    # The schedule counts optimizer steps (every rank takes each one), i.e. after gradient accumulation.
    steps_per_epoch = math.ceil(len(listed) / cfg.optim.grad_accum_steps)
    opt = build_optimisation(cfg.optim, model, cfg.optim.epochs * steps_per_epoch, context.device, context.precision)
    weights = {t.name: class_weights([d.label for d in t.train_docs], len(t.labels)).to(context.device)
               for t in tasks} if cfg.optim.class_weighted_loss else {}
    state = FinetuneState(data_sha256=data_sha256, world_size=context.setup.world_size, config=cfg.flat())
    if cfg.run.resume:
        fresh, state = state, context.resume(model, opt.optimizer, opt.scheduler, opt.scaler, FinetuneState)
        check_resumable(context.out, state.config, fresh.config, RESUMABLE_CHANGES,
                        state.data_sha256 == fresh.data_sha256, data_names(tasks), cfg.run.allow_data_change)
    context.start_output_dir(RUN_OUTPUTS, cfg.run.resume, cfg.flat())
    log = MetricsLog(context.out / "metrics.jsonl" if context.is_main else None,
                     state.step if cfg.run.resume else None)
    # Figure 2 plots the training error too: a fixed stratified subset, the same at every evaluation.
    count = cfg.evaluation.train_eval_count
    train_eval = {t.name: few_shot_subset(t.train_docs, count=min(count, len(t.train_docs)), seed=cfg.run.seed,
                                          key=lambda doc: doc.label) for t in tasks} if count else {}
    return Fit(model, tasks, tokenizer, encoding, opt, steps_per_epoch, state, log, weights, train_eval,
               LossWindow(state.window_loss, state.window_batches))


def fit(context: RunContext, cfg: FinetuneConfig, run: Fit, hooks: FitHooks) -> FinetuneState:
    """Train until the last epoch ends, early stopping fires or SIGTERM arrives; returns the run's state."""
    stop = StopSignal()
    stop.install()
    try:
        for epoch in range(run.state.step // run.steps_per_epoch, cfg.optim.epochs):
            if run.state.stopped or run.state.stage1_done or run.signalled:
                break
            run_epoch(context, cfg, run, hooks, epoch, stop)
    finally:
        stop.restore()
    run.log.close()
    context.barrier()  # best/ is complete before any rank reads it
    return run.state


def run_epoch(context: RunContext, cfg: FinetuneConfig, run: Fit, hooks: FitHooks, epoch: int,
              stop: StopSignal) -> None:
    """The epoch's optimizer steps from where the run stands (a resume may start mid-epoch)."""
    optim, state, model, opt = cfg.optim, run.state, run.model, run.opt
    docs = {t.name: t.train_docs for t in run.tasks}
    set_trainable(optim, model, epoch)
    train_mode(optim, model)
    # Wrapped per epoch: DistributedDataParallel fixes its set of trained parameters when built;
    # a head may leave the pooler or some layers without a gradient.
    train_model = context.wrap(model, find_unused_parameters=True, compile=cfg.run.compile)
    listed = epoch_micro_batches(run.tasks, optim, cfg.multitask, cfg.run.seed, epoch, context.setup)
    # One optimizer step = grad_accum_steps micro-batches (the epoch's last step may have fewer).
    steps = [listed[i:i + optim.grad_accum_steps] for i in range(0, len(listed), optim.grad_accum_steps)]
    first = state.step - epoch * run.steps_per_epoch  # steps done in this epoch before a resume
    bar = tqdm(total=len(listed), initial=first * optim.grad_accum_steps, desc=f"epoch {epoch + 1}/{optim.epochs}",
               unit="batch", disable=not context.is_main)
    run.speed.restart()
    for s in range(first, len(steps)):
        for m, (task, micro_batch) in enumerate(steps[s]):
            batch = collate([docs[task][i] for i in micro_batch], cfg.text.hierarchical, run.tokenizer.pad_id)
            with no_sync(train_model, last_micro_batch=m + 1 == len(steps[s])):
                with context.autocast():
                    logits = task_logits(train_model, task, model_inputs(batch, context.device))
                loss = F.cross_entropy(logits.float(), batch["labels"].to(context.device),
                                       weight=run.weights.get(task))
                if cfg.classifier.head == "bilstm_attention" and cfg.classifier.attention_penalty:
                    # Lin et al. (2017) §2.2: the penalty keeps the attention hops apart.
                    loss = loss + cfg.classifier.attention_penalty * task_head(model, task).penalty
                if hooks.loss is not None:
                    loss = hooks.loss(state.step + 1, task, loss)
                # Each micro-batch's loss is scaled so the accumulated gradient is their mean.
                opt.scaler.scale(loss / len(steps[s])).backward()
            run.window.add(loss, state.step + 1)
            run.speed.count(len(micro_batch))
            bar.update(1)
        # Gradients are cleared to None, not zero: another task's head or a frozen layer stays untouched.
        lr = optimizer_step(model, opt.optimizer, opt.scheduler, opt.scaler, optim.max_grad_norm, optim.clip_mode)
        state.step += 1
        after_step(context, cfg, run, epoch, (s + 1) / len(steps), lr, bar)
        # Read once per step, on every rank, so a SIGTERM at any moment gets this step saved.
        run.signalled = stop.requested(context.setup)
        if run.signalled:
            save_last(context, run)
            context.say(f"stopped by signal at step {state.step}; continue with --resume")
        if hooks.after_step is not None:
            hooks.after_step(state.step)
        if state.stopped:
            context.say(f"early stopping: {cfg.evaluation.early_stopping} evaluations without a better dev error")
        if state.stopped or run.signalled:
            break
    bar.close()


def save_last(context: RunContext, run: Fit) -> None:
    """last/: the model, optimizer, schedule, scaler and state with the unlogged loss window."""
    run.state.window_loss, run.state.window_batches = run.window.state()
    context.checkpoint(run.model, run.opt.optimizer, run.opt.scheduler, run.opt.scaler, run.state)


def after_step(context: RunContext, cfg: FinetuneConfig, run: Fit, epoch: int, done: float, lr: float, bar) -> None:
    """What is due after an optimizer step: a metrics record, a dev evaluation, a checkpoint.
    done: the share of the epoch's steps taken (1 at its end)."""
    state, end_of_epoch = run.state, done == 1
    if state.step % cfg.run.log_every == 0 or end_of_epoch:
        speed = run.speed.per_second(context.setup.world_size)
        loss = run.window.mean(state.step, lambda sums: all_reduce_sum(sums, context.setup))  # one host sync
        run.log.write(step=state.step, epoch=epoch + done, split="train", loss=loss, lr=lr, examples_per_s=speed)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", ex_s=f"{speed:.1f}")
        run.window.reset()
        run.speed.restart()
    every = cfg.evaluation.eval_every
    if end_of_epoch or (every > 0 and state.step % every == 0):
        evaluate_dev(context, cfg, run, epoch + 1)
        train_mode(cfg.optim, run.model)
    every = cfg.run.checkpoint_every
    if end_of_epoch or (every > 0 and state.step % every == 0):
        save_last(context, run)
