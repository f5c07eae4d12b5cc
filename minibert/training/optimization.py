"""Optimisers, parameter groups, gradual unfreezing and per-tensor gradient clipping.

Learning-rate schedules live in minibert/training/schedules.py. Parameter names follow minibert's
classifier: `bert.embeddings.*`, `bert.layers.{i}.*`, `bert.pooler.*` for the encoder, and
anything else (normally `head.*`) is task-specific.

Typical use (global-norm clipping is torch.nn.utils.clip_grad_norm_, Google's default):

    groups = parameter_groups(model, lr=2e-5, layer_decay=0.95, num_layers=12)
    optimizer = build_optimizer("adam_weight_decay", groups)
    scheduler = build_scheduler(optimizer, "google_warmup_linear", total_steps, warmup_steps)
"""

from collections.abc import Iterable

import torch
from torch import nn


class AdamWeightDecay(torch.optim.Optimizer):
    """Google's AdamWeightDecayOptimizer (BERT optimization.py), also the paper's BERTAdam.

    Per parameter, with g its gradient:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g^2
        update = m / (sqrt(v) + eps)        # no bias correction, unlike Adam / torch AdamW
        update += weight_decay * p          # decoupled decay, only where weight_decay > 0
        p -= lr * update
    Without bias correction the first update is lr * (1 - b1) / sqrt(1 - b2) ~ 3.16 lr per
    coordinate (AdamW's is ~lr); Google's warm-up starts at lr 0, which hides this.
    lr and weight_decay are read per parameter group. Parameters whose .grad is None (frozen, or
    unused this step) are left untouched, decay included, as Google skips None gradients.
    State per parameter: "m" and "v" (Google's adam_m / adam_v), saved by state_dict().
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,  # as torch.optim.AdamW; parameter groups normally carry their own lr
        betas: tuple[float, float] = (0.9, 0.999),  # Google optimization.py beta_1, beta_2
        eps: float = 1e-6,  # Google optimization.py epsilon
        weight_decay: float = 0.0,
        foreach: bool = True,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamWeightDecay settings lr={lr} betas={betas} eps={eps} "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        # foreach=True runs each line of the update once over all tensors of a group (torch._foreach_*
        # kernels): the same operations in the same order, so the same numbers as the written-out
        # per-tensor loop (foreach=False, kept as the readable reference), in about a tenth of the
        # Python and dispatch overhead. Not a state_dict entry: a checkpoint resumes with either.
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("AdamWeightDecay does not support sparse gradients")
            for p in params:
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if params:
                update = _foreach_update if self.foreach else _per_tensor_update
                update(params, [self.state[p]["m"] for p in params], [self.state[p]["v"] for p in params], group)
        return loss


def _per_tensor_update(params: list, ms: list, vs: list, group: dict) -> None:
    """Google's apply_gradients, one parameter at a time (the reference for _foreach_update)."""
    beta1, beta2 = group["betas"]
    for p, m, v in zip(params, ms, vs):
        grad = p.grad
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = m / (v.sqrt() + group["eps"])
        # Google: "correct" L2 decay, added to the update so it bypasses m and v.
        if group["weight_decay"] > 0:
            update.add_(p, alpha=group["weight_decay"])
        p.add_(update, alpha=-group["lr"])


def _foreach_update(params: list, ms: list, vs: list, group: dict) -> None:
    """_per_tensor_update with every line applied to all tensors at once (same operations, same order)."""
    beta1, beta2 = group["betas"]
    grads = [p.grad for p in params]
    torch._foreach_mul_(ms, beta1)
    torch._foreach_add_(ms, grads, alpha=1 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
    denominators = torch._foreach_sqrt(vs)
    torch._foreach_add_(denominators, group["eps"])
    updates = torch._foreach_div(ms, denominators)
    del denominators
    if group["weight_decay"] > 0:
        torch._foreach_add_(updates, params, alpha=group["weight_decay"])
    torch._foreach_add_(params, updates, alpha=-group["lr"])


def _adamw(groups: list[dict], **settings) -> torch.optim.AdamW:
    """torch's AdamW with its fused kernel (one pass over each tensor for the whole update, on the CPU
    and CUDA alike); its numbers equal the per-tensor implementation's (tests/test_optimization.py)."""
    return torch.optim.AdamW(groups, fused=True, **settings)


# name -> (constructor, eps used when build_optimizer gets eps=None)
OPTIMIZERS = {
    # Google optimization.py / the paper's BERTAdam: no bias correction, eps 1e-6.
    "adam_weight_decay": (AdamWeightDecay, 1e-6),
    # Loshchilov & Hutter AdamW with Adam's bias correction; eps 1e-8 is Kingma & Ba's and torch's
    # default. Its decoupled decay p *= 1 - lr * wd equals Google's p -= lr * wd * p.
    "adamw": (_adamw, 1e-8),
}


def build_optimizer(
    name: str, groups: list[dict], *, betas: tuple[float, float] = (0.9, 0.999), eps: float | None = None
) -> torch.optim.Optimizer:
    """The optimizer OPTIMIZERS[name] over `groups` (from parameter_groups; each carries lr and
    weight_decay; they are copied, not modified). eps=None takes the optimizer's reference default
    from the table."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    for group in groups:
        if "lr" not in group or "weight_decay" not in group:
            raise ValueError(f"parameter group {group.get('name', '?')!r} lacks lr or weight_decay")
    make, default_eps = OPTIMIZERS[name]
    # torch fills the optimizer's defaults (eps, betas, ...) into the group dicts it is given;
    # copies keep `groups` reusable, e.g. to build a second optimizer with another eps.
    return make([dict(g) for g in groups], betas=betas, eps=default_eps if eps is None else eps)


def _depth_group(name: str, num_layers: int) -> str:
    """Which layer group a parameter belongs to: "embeddings", "layer {i}", "pooler" or "head".

    Parameters outside `bert.` are task-specific and all count as "head".
    """
    if not name.startswith("bert."):
        return "head"
    part = name.split(".")[1]
    if part in ("embeddings", "pooler"):
        return part
    if part == "layers":
        i = int(name.split(".")[2])
        if not 0 <= i < num_layers:
            raise ValueError(f"parameter {name} is in layer {i} but num_layers={num_layers}")
        return f"layer {i}"
    raise ValueError(f"parameter {name} is under bert. but not in embeddings, layers or pooler")


def _named_parameters_with_decay(model: nn.Module) -> list[tuple[str, nn.Parameter, bool]]:
    """(full name, parameter, decays) for every parameter once, in model order.

    Google excludes names matching "LayerNorm", "layer_norm" or "bias" from weight decay. Here the
    same set is chosen by owner and attribute name, not by substrings of the full path: parameters
    of nn.LayerNorm modules, and parameters whose attribute name has the word "bias" (Linear .bias,
    MultiheadAttention in_proj_bias, LSTM bias_ih_l0 / bias_hh_l0).
    """
    out, seen = [], set()
    for module_name, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            if id(p) in seen:  # a tied parameter is optimised once, under its first name
                continue
            seen.add(id(p))
            decays = not isinstance(module, nn.LayerNorm) and "bias" not in local.split("_")
            out.append((f"{module_name}.{local}" if module_name else local, p, decays))
    return out


def parameter_groups(
    model: nn.Module, *, lr: float, weight_decay: float = 0.01, layer_decay: float = 1.0, num_layers: int
) -> list[dict]:
    """Optimizer parameter groups with Google's weight-decay exclusions and layer-wise lrs.

    Paper (Sun et al. 2019, sec. 5.3.3): eta^{k-1} = xi * eta^k, xi = layer_decay (best 0.95).
    Layer i of num_layers (L) gets lr * xi^(L-1-i), the embeddings lr * xi^L, pooler and head lr.
    Weight decay (Google: 0.01) applies to every parameter except biases and LayerNorm parameters.

    All parameters are included, frozen ones too, so gradual unfreezing can flip requires_grad
    without rebuilding the optimizer: both optimizers skip parameters whose .grad is None (keep
    zero_grad(set_to_none=True), torch's default, so re-frozen parameters get None again).

    Returns one dict per non-empty (layer group, decay) pair, ordered embeddings, layer 0, ...,
    layer L-1, pooler, head, each with "params", "lr", "weight_decay" and a "name" such as
    "layer 3 (decay)" for logging.
    """
    exponents = {"embeddings": num_layers, "pooler": 0, "head": 0}
    # Deviation from reference: the paper's code (run_classifier_discriminative.py) leaves the
    # embeddings at the base lr. They sit below layer 0, so the paper's own rule continued one more
    # step gives lr * xi^L; the base lr would make the most general parameters move faster than
    # every layer above them, the opposite of what layer-wise decay is for.
    exponents.update({f"layer {i}": num_layers - 1 - i for i in range(num_layers)})
    order = ["embeddings"] + [f"layer {i}" for i in range(num_layers)] + ["pooler", "head"]
    buckets = {(depth, decays): [] for depth in order for decays in (True, False)}
    for name, p, decays in _named_parameters_with_decay(model):
        buckets[_depth_group(name, num_layers), decays].append(p)
    return [
        {
            "params": params,
            "lr": lr * layer_decay ** exponents[depth],
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{depth} ({'decay' if decays else 'no decay'})",
        }
        for (depth, decays), params in buckets.items()
        if params
    ]


def unfreeze(model: nn.Module, epoch: int, num_layers: int) -> list[str]:
    """Gradual unfreezing (ULMFiT, Howard & Ruder 2018): set requires_grad for `epoch` (0-based).

    Layer groups top-down: "head" (head and pooler), "layer L-1", ..., "layer 0", "embeddings".
    At epoch 0 only "head" trains; each later epoch adds the next group down, and from epoch L+1 on
    everything trains. Returns the names of the trainable groups, top-down.
    """
    top_down = ["head"] + [f"layer {i}" for i in reversed(range(num_layers))] + ["embeddings"]
    trainable = top_down[: epoch + 1]
    for name, p in model.named_parameters():
        depth = _depth_group(name, num_layers)
        p.requires_grad_(("head" if depth == "pooler" else depth) in trainable)
    return trainable


def freeze_encoder(model: nn.Module) -> None:
    """Freeze everything under `model.bert` (the paper's BERT-Feat / the paper's --frozen_bert).

    Other parameters are left as they are. Freezing does not switch off dropout: to use the
    encoder as a fixed feature extractor, also put `model.bert` in eval mode after model.train().
    """
    for p in model.bert.parameters():
        p.requires_grad_(False)


@torch.no_grad()
def clip_per_tensor(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each gradient tensor to L2 norm max_norm on its own (the paper's BERTAdam behaviour).

    The paper's code calls clip_grad_norm_(p, max_norm) for every parameter inside the optimizer
    step; Google clips the global norm instead (use torch.nn.utils.clip_grad_norm_, the default).
    Scale factor per tensor min(1, max_norm / (norm + 1e-6)), as torch's clip_grad_norm_.
    Returns the global norm of the gradients before clipping (float32 scalar), for logging.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = []
    for g in grads:
        norm = torch.linalg.vector_norm(g.float())
        g.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0).to(g.dtype))
        norms.append(norm)
    return torch.linalg.vector_norm(torch.stack(norms))


# --clip_mode: how gradients are clipped to max_grad_norm before the optimizer step.
CLIPPING = {"global": torch.nn.utils.clip_grad_norm_, "per_tensor": clip_per_tensor}


@torch.no_grad()
def fold_global_clipping(parameters: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer,
                         max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_'s clipping, done inside a fused optimizer's next step.

    The factor is clip_grad_norm_'s, min(1, max_norm / (norm + 1e-6)) over the global norm, but
    instead of a pass that multiplies every gradient by it before the step, the optimizer's fused
    kernel divides each gradient by 1 / factor as it reads it (`grad_scale`, the attribute torch's
    GradScaler hands fused optimizers to unscale in the same way). One read and write of every
    gradient fewer: 31 -> 15 ms per step for MiniLM's 22.7M gradients on one CPU thread. Where the
    norm is under max_norm the factor is 1 and the numbers are clip_grad_norm_'s exactly; where it
    clips, dividing by 1 / factor rounds differently from multiplying by factor (one float32 rounding).
    """
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    optimizer.grad_scale = 1 / torch.clamp(max_norm / (norm + 1e-6), max=1.0)


def folds_clipping(optimizer: torch.optim.Optimizer, scaler, clip_mode: str) -> bool:
    """Whether optimizer_step can fold global clipping into the step: a fused torch optimizer (torch
    marks those that read grad_scale with _step_supports_amp_scaling) and no fp16 loss scaling
    (GradScaler then sets grad_scale itself)."""
    return (clip_mode == "global" and getattr(optimizer, "_step_supports_amp_scaling", False)
            and not scaler.is_enabled())


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler,
                   max_grad_norm: float, clip_mode: str = "global") -> float:
    """One update from the gradients the step's micro-batches accumulated: unscale them (fp16's
    GradScaler; a no-op otherwise), clip to max_grad_norm (0 = no clipping) by CLIPPING[clip_mode]
    (global clipping folded into a fused optimizer's kernel: fold_global_clipping), step, clear the
    gradients to None (parameters that got no gradient, e.g. another task's head or a frozen layer,
    are then skipped by the next step), and advance the schedule.

    Returns the learning rate this update used, of the last parameter group (the head's in
    train.py, where it is the base rate; every group's in pretrain.py).
    """
    scaler.unscale_(optimizer)
    folded = max_grad_norm > 0 and folds_clipping(optimizer, scaler, clip_mode)
    if folded:
        fold_global_clipping(model.parameters(), optimizer, max_grad_norm)
    elif max_grad_norm > 0:
        CLIPPING[clip_mode](model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    if folded:
        del optimizer.grad_scale  # this step's factor only
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    lr = scheduler.get_last_lr()[-1]
    scheduler.step()
    return lr
