"""Learning-rate schedules: multipliers of each parameter group's base lr, picked by name.

Which is whose: the paper's text (§5.2) says "slanted triangular learning rates" (ULMFiT's STLR:
`slanted_triangular`); the paper's code uses BERTAdam's warm-up then `1 - x` (Google's
create_optimizer: `google_warmup_linear`, with `adam_weight_decay` = BERTAdam), which the runner's
paper recipe takes. train.py's default, `warmup_linear`, is neither: the continuous warm-up +
linear decay of Hugging Face's get_linear_schedule_with_warmup, a common modern default.

Every schedule is a plain function `multiplier(step, total_steps, warmup_steps, **kw) -> float`
listed in `SCHEDULES`; `build_scheduler` wraps one in a `torch.optim.lr_scheduler.LambdaLR`, which
multiplies each group's own base lr (so layer-wise lrs keep their ratios throughout).

What `step` means (the same for every schedule):
  `step` is the number of optimizer updates already applied, i.e. Google's `global_step` in
  create_optimizer and `state['step']` in the paper's BERTAdam. Steps count optimizer steps, after
  gradient accumulation, never micro-batches. LambdaLR evaluates multiplier(0) when it is built, so
  update k (k = 0, 1, ..., total_steps - 1) uses multiplier(k) provided the loop calls
  `scheduler.step()` once after each `optimizer.step()`. With warm-up the first update therefore
  uses lr 0, exactly as in Google's code (init_lr * global_step / num_warmup_steps with
  global_step = 0) and the paper's code (schedule(state['step'] / t_total) with step 0); that
  update still moves Adam's m and v. multiplier(total_steps) (0 for the linear decays) is reached
  by the scheduler after the last update but never applied.
"""

import functools

import torch


def constant(step: int, total_steps: int, warmup_steps: int) -> float:
    """1 throughout; `warmup_steps` is ignored (use "warmup_constant" for a warm-up)."""
    return 1.0


def warmup_constant(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from 0 to 1 over `warmup_steps`, then 1 (the paper's code: warmup_constant)."""
    if step < warmup_steps:
        return step / warmup_steps
    return 1.0


def warmup_linear(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from 0 to 1, then linear decay from 1 to 0 over the remaining steps.

    Continuous at the end of warm-up (multiplier(warmup_steps) = 1), unlike Google's form below;
    Hugging Face's get_linear_schedule_with_warmup. Not the paper's: neither its text's slanted
    triangular nor its code's `1 - x`; train.py's default.
    """
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def google_warmup_linear(step: int, total_steps: int, warmup_steps: int) -> float:
    """Google's create_optimizer (and the paper's code's BERTAdam warmup_linear: `1.0 - x`).

    The decay is tf.train.polynomial_decay(power=1, end_learning_rate=0) computed from step 0,
    1 - step / total_steps; during warm-up it is overridden by step / warmup_steps. The multiplier
    therefore jumps from (warmup-1)/warmup to 1 - warmup/total at the end of warm-up and never
    reaches 1 (0.9 instead of 1 with warm-up proportion 0.1).
    """
    if step < warmup_steps:
        return step / warmup_steps
    # polynomial_decay clamps the step at decay_steps, so the lr stays 0 past the end.
    return 1.0 - min(step, total_steps) / total_steps


def slanted_triangular(step: int, total_steps: int, warmup_steps: int, *, ratio: float = 32.0) -> float:
    """ULMFiT's slanted triangular schedule (Howard & Ruder 2018, eq. 3), peak multiplier 1: the
    schedule the paper's text names (§5.2), though its code uses google_warmup_linear.

    ULMFiT: cut = floor(T * cut_frac); p = t / cut if t < cut else 1 - (t - cut) / (cut * (1/cut_frac - 1));
    lr_t = lr_max * (1 + p * (ratio - 1)) / ratio, with cut_frac 0.1 and ratio 32.
    Here cut is the caller's `warmup_steps` (= floor(T * warmup_proportion), so warmup_proportion
    plays cut_frac, 0.1 in both ULMFiT and the paper) and one setting places the peak for every
    schedule. The multiplier climbs from 1/ratio at step 0 to 1 at step cut and falls back to
    1/ratio at step T.
    """
    cut = warmup_steps
    if step < cut:
        p = step / cut
    else:
        # Deviation from reference: ULMFiT decays over cut * (1/cut_frac - 1) steps, which equals
        # T - cut only when T * cut_frac is a whole number; otherwise it is shorter and the
        # multiplier ends below 1/ratio (negative for T = 15: cut 1, decay length 9). Decaying
        # over exactly T - cut is the same formula with cut_frac = cut / T, and p stays >= 0.
        p = max(0.0, 1.0 - (step - cut) / max(1, total_steps - cut))
    return (1.0 + p * (ratio - 1.0)) / ratio


# Schedule names accepted by build_scheduler (and the training script's `schedule` field).
SCHEDULES = {
    "warmup_linear": warmup_linear,
    "google_warmup_linear": google_warmup_linear,
    "slanted_triangular": slanted_triangular,
    "constant": constant,
    "warmup_constant": warmup_constant,
}


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup_steps: int, **kw: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying SCHEDULES[name] to every parameter group's base lr.

    total_steps and warmup_steps count optimizer updates (after gradient accumulation); `kw` goes
    to the schedule (e.g. ratio=32 for "slanted_triangular"). Call `scheduler.step()` after each
    `optimizer.step()`; see the module docstring for what step 0 means. The scheduler's
    state_dict (its step count) resumes the schedule.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, "
                         f"got total_steps={total_steps}, warmup_steps={warmup_steps}")
    multiplier = functools.partial(SCHEDULES[name], total_steps=total_steps, warmup_steps=warmup_steps, **kw)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
