"""The fine-tuning loop, written out once: epochs of optimizer steps, each over grad_accum_steps
micro-batches of one task each. A single-task run is a mixture of one task; multi-task stage 1
(paper §4.3) mixes every task's batches; multi-task stage 2 is this loop again on each task alone.

Around the loop: the dev set is scored at every epoch end (and every eval_every steps), the best
model by a dev score (--selection_metric; the mean over tasks) is kept in best/, last/ is written at epoch ends (and
every checkpoint_every steps) with every rank's RNG state, so --resume continues bit-identically.
SIGTERM or SIGINT: the step in progress finishes, last/ is saved and the Training's `signalled`
holds the signal's number (every rank stops after the same step; RunContext.end_step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from minibert.data.features import collate, model_inputs
from minibert.data.splits import few_shot_subset
from minibert.finetune.config import RESUMABLE_CHANGES, RUN_OUTPUTS, FinetuneConfig
from minibert.finetune.model_setup import Optimisation, build_optimisation, set_trainable, train_mode
from minibert.finetune.selection import DevSelection, Scoring, Selection, evaluate_dev, save_best, selection_of
from minibert.finetune.tasks import Task, data_names, epoch_micro_batches, loss_weights
from minibert.model.heads import TaskClassifier
from minibert.text.encoding import TextEncoding
from minibert.training.distributed import all_reduce_sum, no_sync
from minibert.training.metrics_log import TENSORBOARD_FOLDER, LossWindow, MetricsLog
from minibert.training.optimization import optimizer_step
from minibert.training.problems import problem
from minibert.training.run_context import RunContext, RunState

MicroBatches = list[tuple[str, list[int]]]  # (task, example indices) in training order


@dataclass(frozen=True)
class FitHooks:
    """Seams into the loop for tests and tools (None = nothing is called).

    after_step(step): after optimizer step `step` and everything due after it (its log record,
    evaluation, checkpoint); an exception raised here ends the run as a crash at that point would.
    loss(step, task, loss) -> loss: each micro-batch's loss before backward (e.g. a NaN injected).
    epoch_batches(epoch, micro_batches): the micro-batches an epoch trains on, (task, example
    indices) in order, before the first of them.
    stage2_start(task, model): multi-task stage 2's starting model of `task`, before it trains.
    """

    after_step: Callable[[int], None] | None = None
    loss: Callable[[int, str, torch.Tensor], torch.Tensor] | None = None
    epoch_batches: Callable[[int, MicroBatches], None] | None = None
    stage2_start: Callable[[str, TaskClassifier], None] | None = None


@dataclass
class FinetuneState(RunState):
    """Where a run stands (RunState: step, world size, config, data digest, and the loop's own
    fields); saved in last/ and restored by --resume."""

    window_loss: float = 0.0  # training loss summed since the last log line (LossWindow)
    window_batches: int = 0
    stage1_done: bool = False  # multi-task: stage 1 finished, a --resume goes on with stage 2
    selection: DevSelection = field(default_factory=DevSelection)

    def __post_init__(self):
        if isinstance(self.selection, dict):  # as last/ stores it (dataclasses.asdict)
            stored = dict(self.selection)
            if "best_dev_error" in stored:  # last/ of a run from before --selection_metric
                stored["best_score"] = stored.pop("best_dev_error")
            self.selection = DevSelection(**stored)


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
class Training:
    """Everything one call of `fit` reads and advances, set up by `prepare_training`."""

    model: TaskClassifier
    tasks: list[Task]
    tokenizer: object
    encoding: TextEncoding
    optimisation: Optimisation
    steps_per_epoch: int
    state: FinetuneState
    log: MetricsLog
    multitask: bool  # a multi-task run: reports every task, saves every head
    selection: Selection  # the dev score the best model is chosen by
    loss_weights: dict = field(default_factory=dict)  # task -> weights of its loss (tasks.loss_weights) or None
    train_eval: dict = field(default_factory=dict)  # task -> the fixed training subset scored with dev
    window: LossWindow = field(default_factory=LossWindow)
    speed: Throughput = field(default_factory=Throughput)
    signalled: int = 0  # the signal (SIGTERM, SIGINT) that stopped the run: last/ holds the step it stopped after
    # task -> dev probabilities of the model in best/, from the evaluation that saved it (results.score_best
    # scores dev with them instead of predicting again); empty after a resume until a better evaluation.
    best_dev_probabilities: dict = field(default_factory=dict)


def prepare_training(context: RunContext, cfg: FinetuneConfig, model: TaskClassifier, tasks: list[Task], tokenizer,
                     encoding, data_sha256: str) -> Training:
    """The optimisation, the run's state (restored on --resume, after checking settings and data)
    and its output folder, started only now that every input has been read."""
    listed = epoch_micro_batches(tasks, cfg.optim, cfg.multitask, cfg.run.seed, 0, context.setup)
    # The schedule counts optimizer steps (every rank takes each one), i.e. after gradient accumulation.
    steps_per_epoch = math.ceil(len(listed) / cfg.optim.grad_accum_steps)
    optimisation = build_optimisation(cfg.optim, model, cfg.optim.epochs * steps_per_epoch, context.device,
                                      context.precision)
    weights = {t.name: loss_weights(t, cfg.optim, cfg.multilabel.pos_weight) for t in tasks}
    weights = {name: w.to(context.device) for name, w in weights.items() if w is not None}
    selection = selection_of(cfg.evaluation.selection_metric, {t.name: t.multi_label for t in tasks})
    state = FinetuneState(data_sha256=data_sha256, world_size=context.setup.world_size, config=cfg.flat(),
                          selection=DevSelection(metric=selection.name, higher_is_better=selection.higher_is_better))
    if cfg.run.resume:
        state = context.restore(model, optimisation.optimizer, optimisation.scheduler, optimisation.scaler, state,
                                RESUMABLE_CHANGES, data_names(tasks), cfg.run.allow_data_change)
    context.start_output_dir(RUN_OUTPUTS, cfg.run.resume, cfg.flat())
    log = MetricsLog(context.out / "metrics.jsonl" if context.is_main else None, state.step if cfg.run.resume else None,
                     context.out / TENSORBOARD_FOLDER if cfg.run.tensorboard else None)
    # Figure 2 plots the training error too: a fixed stratified subset, the same at every evaluation.
    count = cfg.evaluation.train_eval_count
    train_eval = {t.name: few_shot_subset(t.train_docs, count=min(count, len(t.train_docs)), seed=cfg.run.seed,
                                          key=lambda doc: doc.label) for t in tasks} if count else {}
    return Training(model, tasks, tokenizer, encoding, optimisation, steps_per_epoch, state, log,
                    cfg.multitask.enabled, selection, weights, train_eval,
                    LossWindow(state.window_loss, state.window_batches))


def fit(context: RunContext, cfg: FinetuneConfig, training: Training, hooks: FitHooks) -> FinetuneState:
    """Train until the last epoch ends, early stopping fires or SIGTERM arrives; returns the run's state."""
    with context.stoppable():
        for epoch in range(training.state.step // training.steps_per_epoch, cfg.optim.epochs):
            if training.state.selection.stopped or training.state.stage1_done or training.signalled:
                break
            run_epoch(context, cfg, training, hooks, epoch)
    training.log.close()
    context.barrier()  # best/ is complete before any rank reads it
    return training.state


def run_epoch(context: RunContext, cfg: FinetuneConfig, training: Training, hooks: FitHooks, epoch: int) -> None:
    """The epoch's optimizer steps from where the run stands (a resume may start mid-epoch)."""
    optim, state, model = cfg.optim, training.state, training.model
    docs = {t.name: t.train_docs for t in training.tasks}
    set_trainable(optim, model, epoch, context.say)
    train_mode(optim, model)
    # Wrapped per epoch: DistributedDataParallel fixes its set of trained parameters when built;
    # a head may leave the pooler or some layers without a gradient.
    train_model = context.wrap(model, find_unused_parameters=True, compile=cfg.run.compile)
    listed = epoch_micro_batches(training.tasks, optim, cfg.multitask, cfg.run.seed, epoch, context.setup)
    if hooks.epoch_batches is not None:
        hooks.epoch_batches(epoch, listed)
    # One optimizer step = grad_accum_steps micro-batches (the epoch's last step may have fewer).
    steps = [listed[i:i + optim.grad_accum_steps] for i in range(0, len(listed), optim.grad_accum_steps)]
    first = state.step - epoch * training.steps_per_epoch  # steps done in this epoch before a resume
    bar = tqdm(total=len(listed), initial=first * optim.grad_accum_steps, desc=f"epoch {epoch + 1}/{optim.epochs}",
               unit="batch", disable=not context.is_main)
    training.speed.restart()
    for s in range(first, len(steps)):
        for m, (task, micro_batch) in enumerate(steps[s]):
            with no_sync(train_model, last_micro_batch=m + 1 == len(steps[s])):
                batch = [docs[task][i] for i in micro_batch]
                loss = micro_batch_loss(context, cfg, training, train_model, task, batch, hooks)
                # Each micro-batch's loss is scaled so the accumulated gradient is their mean.
                training.optimisation.scaler.scale(loss / len(steps[s])).backward()
            training.window.add(loss, state.step + 1)
            training.speed.count(len(micro_batch))
            bar.update(1)
        # Gradients are cleared to None, not zero: another task's head or a frozen layer stays untouched.
        opt = training.optimisation
        lr = optimizer_step(model, opt.optimizer, opt.scheduler, opt.scaler, optim.max_grad_norm, optim.clip_mode)
        state.step += 1
        end_of_epoch = s + 1 == len(steps)
        log_and_evaluate(context, cfg, training, (epoch, (s + 1) / len(steps)), end_of_epoch, lr, bar)
        checkpoint_due = end_of_epoch or due(state.step, cfg.run.checkpoint_every)
        training.signalled = context.end_step(state.step, checkpoint_due, lambda: save_last(context, training),
                                              hooks.after_step)
        if state.selection.stopped:
            context.say(f"early stopping: {cfg.evaluation.early_stopping} evaluations without a better dev "
                        f"{state.selection.metric.replace('_', ' ')}")
        if state.selection.stopped or training.signalled:
            break
    bar.close()


def micro_batch_loss(context: RunContext, cfg: FinetuneConfig, training: Training, train_model, task: str,
                     docs: list, hooks: FitHooks) -> torch.Tensor:
    """The loss of one micro-batch (`docs` of `task`): a float32 scalar, ready for backward."""
    head = training.model.head_configs[task]
    batch = collate(docs, cfg.text.hierarchical, training.tokenizer.pad_id, head.num_labels)
    with context.autocast():
        logits = train_model(task, **model_inputs(batch, context.device))
    loss = problem(head.multi_label).loss(logits.float(), batch["labels"].to(context.device),
                                          training.loss_weights.get(task))
    if cfg.classifier.head == "bilstm_attention" and cfg.classifier.attention_penalty:
        # Lin et al. (2017) §2.2: the penalty keeps the attention hops apart.
        loss = loss + cfg.classifier.attention_penalty * training.model.heads[task].penalty
    if hooks.loss is not None:
        loss = hooks.loss(training.state.step + 1, task, loss)
    return loss


def due(step: int, every: int) -> bool:
    """Whether a periodic action (every N optimizer steps; 0 = never) falls on `step`."""
    return every > 0 and step % every == 0


def save_last(context: RunContext, training: Training) -> None:
    """last/: the model, optimizer, schedule, scaler and state with the unlogged loss window."""
    training.state.window_loss, training.state.window_batches = training.window.state()
    opt = training.optimisation
    context.checkpoint(training.model, opt.optimizer, opt.scheduler, opt.scaler, training.state)


def log_and_evaluate(context: RunContext, cfg: FinetuneConfig, training: Training, position: tuple[int, float],
                     end_of_epoch: bool, lr: float, bar) -> None:
    """What is due after an optimizer step besides the checkpoint: a metrics record and a dev
    evaluation (which keeps the best model). position: (epoch index, share of its steps done)."""
    state, (epoch, done) = training.state, position
    if due(state.step, cfg.run.log_every) or end_of_epoch:
        speed = training.speed.per_second(context.setup.world_size)
        loss = training.window.mean(state.step, lambda sums: all_reduce_sum(sums, context.setup))  # one host sync
        training.log.write(step=state.step, epoch=epoch + done, split="train", loss=loss, lr=lr, examples_per_s=speed)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", ex_s=f"{speed:.1f}")
        training.window.reset()
        training.speed.restart()
    if end_of_epoch or due(state.step, cfg.evaluation.eval_every):
        select_on_dev(context, cfg, training, epoch + 1)
        train_mode(cfg.optim, training.model)


def select_on_dev(context: RunContext, cfg: FinetuneConfig, training: Training, epoch: int) -> None:
    """Score dev; keep the model in best/ when it is the best so far."""
    scoring = Scoring(cfg.evaluation.eval_batch_size, cfg.text.hierarchical, training.tokenizer.pad_id)
    state = training.state
    dev = evaluate_dev(context, training.model, training.tasks, scoring, training.log, state.step, epoch,
                       training.multitask, training.train_eval, training.selection)
    better = state.selection.record(dev.score, state.step, cfg.evaluation.early_stopping)
    context.say(f"step {state.step}: {dev.line}" + (" - best so far, saved" if better else ""))
    if better:
        training.best_dev_probabilities = dev.probabilities
    if better and context.is_main:
        save_best(context.out / "best", training.model, training.tasks, training.encoding, training.tokenizer,
                  training.multitask, cfg.flat())
