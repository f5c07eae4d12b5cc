"""Optimisers, parameter groups, schedules, unfreezing and clipping against hand-computed numbers.

References are written out here independently of minibert: a float64 numpy AdamWeightDecay
following Google's optimization.py line by line, ULMFiT's slanted triangular formula as printed,
and schedule values worked out by hand.
"""

import io

import numpy as np
import pytest
import torch
from torch import nn

from minibert.training.optimization import (
    AdamWeightDecay,
    build_optimizer,
    clip_per_tensor,
    freeze_encoder,
    optimizer_step,
    parameter_groups,
    unfreeze,
)
from minibert.training.schedules import SCHEDULES, build_scheduler

H, I, V, C = 5, 7, 11, 3  # odd sizes: hidden, intermediate, vocab, classes


# ---- a stand-in classifier with minibert's parameter names ----------------------------------

class Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.word, self.position, self.token_type = nn.Embedding(V, H), nn.Embedding(9, H), nn.Embedding(2, H)
        self.norm = nn.LayerNorm(H)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value, self.attn_out = (nn.Linear(H, H) for _ in range(4))
        self.attn_norm = nn.LayerNorm(H)
        self.ffn_in, self.ffn_out = nn.Linear(H, I), nn.Linear(I, H)
        self.ffn_norm = nn.LayerNorm(H)


class Encoder(nn.Module):
    def __init__(self, num_layers):
        super().__init__()
        self.embeddings = Embeddings()
        self.layers = nn.ModuleList(Block() for _ in range(num_layers))
        self.pooler = nn.Linear(H, H)


class Head(nn.Module):
    """A head with a LayerNorm, a BiLSTM (biases named bias_ih_l0 ...) and an output layer."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(H)
        self.lstm = nn.LSTM(H, 3, batch_first=True, bidirectional=True)
        self.out = nn.Linear(6, C)


class Classifier(nn.Module):
    def __init__(self, num_layers):
        super().__init__()
        self.bert = Encoder(num_layers)
        self.head = Head()


BLOCK_LINEARS = ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"]
LSTM_SUFFIXES = ["ih_l0", "hh_l0", "ih_l0_reverse", "hh_l0_reverse"]


def expected_decay_names(num_layers):
    """Decayed parameter names, listed by hand: weights of embeddings, Linear and LSTM layers."""
    names = [f"bert.embeddings.{e}.weight" for e in ("word", "position", "token_type")]
    names += [f"bert.layers.{i}.{lin}.weight" for i in range(num_layers) for lin in BLOCK_LINEARS]
    names += ["bert.pooler.weight", "head.out.weight"]
    names += [f"head.lstm.weight_{s}" for s in LSTM_SUFFIXES]
    return set(names)


def expected_no_decay_names(num_layers):
    """Biases and LayerNorm parameters, listed by hand."""
    names = ["bert.embeddings.norm.weight", "bert.embeddings.norm.bias", "bert.pooler.bias"]
    for i in range(num_layers):
        names += [f"bert.layers.{i}.{lin}.bias" for lin in BLOCK_LINEARS]
        names += [f"bert.layers.{i}.{n}.{w}" for n in ("attn_norm", "ffn_norm") for w in ("weight", "bias")]
    names += ["head.norm.weight", "head.norm.bias", "head.out.bias"]
    names += [f"head.lstm.bias_{s}" for s in LSTM_SUFFIXES]
    return set(names)


def names_by_group(model, groups):
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: [name_of[id(p)] for p in g["params"]] for g in groups}


# ---- AdamWeightDecay --------------------------------------------------------------------------

def google_adam_reference(p0, grads, lr, weight_decay, b1=0.9, b2=0.999, eps=1e-6):
    """Google's AdamWeightDecayOptimizer.apply_gradients in float64 numpy."""
    p = np.asarray(p0, dtype=np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = m / (np.sqrt(v) + eps)
        if weight_decay:
            update = update + weight_decay * p
        p = p - lr * update
    return p


def grad_sequence(n_steps, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) * 10 ** rng.uniform(-3, 1) for _ in range(n_steps)]


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_adam_weight_decay_matches_reference_per_group(dtype, rtol):
    p0_decay, p0_plain = np.linspace(-1.0, 1.5, 6).reshape(2, 3), np.array([0.3, -0.7, 1.1])
    decayed = nn.Parameter(torch.tensor(p0_decay, dtype=dtype))
    plain = nn.Parameter(torch.tensor(p0_plain, dtype=dtype))
    opt = AdamWeightDecay([
        {"params": [decayed], "lr": 0.05, "weight_decay": 0.1},
        {"params": [plain], "lr": 0.02, "weight_decay": 0.0},
    ])
    g_decay, g_plain = grad_sequence(5, (2, 3), seed=1), grad_sequence(5, (3,), seed=2)
    for gd, gp in zip(g_decay, g_plain):
        decayed.grad = torch.tensor(gd, dtype=dtype)
        plain.grad = torch.tensor(gp, dtype=dtype)
        opt.step()
    want_decay = google_adam_reference(p0_decay, g_decay, lr=0.05, weight_decay=0.1)
    want_plain = google_adam_reference(p0_plain, g_plain, lr=0.02, weight_decay=0.0)
    np.testing.assert_allclose(decayed.detach().double().numpy(), want_decay, rtol=rtol)
    np.testing.assert_allclose(plain.detach().double().numpy(), want_plain, rtol=rtol)
    # The decay really acted: the same run without decay ends elsewhere.
    assert not np.allclose(want_decay, google_adam_reference(p0_decay, g_decay, lr=0.05, weight_decay=0.0))


def test_first_step_no_bias_correction_vs_adamw():
    """Step 1: Google moves lr*(1-b1)g/(sqrt(1-b2)|g|+eps) (~3.16 lr), AdamW lr*g/(|g|+eps) (~lr)."""
    lr, eps, b1, b2 = 0.01, 1e-6, 0.9, 0.999
    g = torch.tensor([2.0, -0.5, 1e-3], dtype=torch.float64)
    p_google = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    p_adamw = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    p_google.grad, p_adamw.grad = g.clone(), g.clone()
    AdamWeightDecay([p_google], lr=lr, eps=eps).step()
    torch.optim.AdamW([p_adamw], lr=lr, eps=eps, weight_decay=0.0).step()
    want_google = -lr * (1 - b1) * g / (np.sqrt(1 - b2) * g.abs() + eps)
    want_adamw = -lr * g / (g.abs() + eps)
    torch.testing.assert_close(p_google.detach(), want_google, rtol=1e-10, atol=0)
    torch.testing.assert_close(p_adamw.detach(), want_adamw, rtol=1e-10, atol=0)
    # For |g| >> eps the ratio is (1 - b1) / sqrt(1 - b2) = 3.1623 (eps shifts it by ~eps/|g|).
    ratio = (p_google / p_adamw).detach()
    assert ratio[0].item() == pytest.approx((1 - b1) / np.sqrt(1 - b2), rel=1e-4)


def test_decoupled_weight_decay_equals_adamw():
    """With a zero gradient only the decay acts: Google's p -= lr*wd*p equals AdamW's p *= 1-lr*wd."""
    p0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    p_google, p_adamw = nn.Parameter(p0.clone()), nn.Parameter(p0.clone())
    opt_google = AdamWeightDecay([p_google], lr=0.5, weight_decay=0.1)
    opt_adamw = torch.optim.AdamW([p_adamw], lr=0.5, weight_decay=0.1)
    for _ in range(3):
        p_google.grad, p_adamw.grad = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        opt_google.step()
        opt_adamw.step()
    torch.testing.assert_close(p_google.detach(), p0 * 0.95 ** 3, rtol=1e-14, atol=0)
    torch.testing.assert_close(p_adamw.detach(), p0 * 0.95 ** 3, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["adam_weight_decay", "adamw"])
def test_optimizers_skip_parameters_without_grad(name):
    frozen = nn.Parameter(torch.ones(4), requires_grad=False)
    live = nn.Parameter(torch.ones(4))
    opt = build_optimizer(name, [{"params": [frozen, live], "lr": 0.1, "weight_decay": 0.5}])
    live.grad = torch.full((4,), 0.3)
    opt.step()
    assert torch.equal(frozen, torch.ones(4)) and not opt.state[frozen]
    assert not torch.equal(live, torch.ones(4))


def test_build_optimizer_table():
    groups = [{"params": [nn.Parameter(torch.ones(2))], "lr": 1e-3, "weight_decay": 0.0, "name": "x (no decay)"}]
    google = build_optimizer("adam_weight_decay", groups)
    adamw = build_optimizer("adamw", groups, eps=1e-7)
    assert isinstance(google, AdamWeightDecay) and google.param_groups[0]["eps"] == 1e-6
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["eps"] == 1e-7
    assert build_optimizer("adamw", groups).param_groups[0]["eps"] == 1e-8
    assert google.param_groups[0]["name"] == "x (no decay)"
    assert set(groups[0]) == {"params", "lr", "weight_decay", "name"}  # caller's dicts untouched
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("sgd", groups)


def random_gradients(model, step):
    for j, p in enumerate(model.parameters()):
        gen = torch.Generator().manual_seed(1000 * step + j)
        p.grad = (torch.randn(p.shape, generator=gen) * 10 ** (j % 3 - 1)).to(p.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_foreach_adam_weight_decay_equals_per_tensor_loop(dtype):
    """The foreach step does the written-out loop's operations in its order: equal numbers (bit for bit
    in fp32; within a bf16 rounding step in bf16)."""
    torch.manual_seed(0)
    models = [Classifier(num_layers=2).to(dtype) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    models[0].bert.layers[1].requires_grad_(False)  # frozen tensors: no grad, no update, no decay
    optimizers = [AdamWeightDecay(parameter_groups(m, lr=1e-2, layer_decay=0.9, num_layers=2), foreach=f)
                  for m, f in zip(models, (True, False))]
    for step in range(3):
        for model, opt in zip(models, optimizers):
            random_gradients(model, step)
            for p in model.bert.layers[1].parameters():
                p.grad = None
            opt.step()
    for (name, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        if dtype == torch.float32:
            assert torch.equal(a, b), name
        else:  # bf16 foreach kernels may round an intermediate less often than the per-tensor ops
            torch.testing.assert_close(a, b, rtol=1.6e-2, atol=4e-3, msg=name)  # a few bf16 steps
    state = optimizers[0].state_dict()["state"]
    assert all(set(s) == {"m", "v"} for s in state.values())  # Google's adam_m / adam_v, same names
    assert not torch.equal(models[0].bert.pooler.weight, Classifier(num_layers=2).to(dtype).bert.pooler.weight)


def test_fused_adamw_equals_torch_per_tensor_adamw():
    torch.manual_seed(0)
    fused_model, loop_model = Classifier(num_layers=2), Classifier(num_layers=2)
    loop_model.load_state_dict(fused_model.state_dict())
    groups = lambda m: parameter_groups(m, lr=1e-2, layer_decay=0.9, num_layers=2)
    fused = build_optimizer("adamw", groups(fused_model))
    loop = torch.optim.AdamW(groups(loop_model), eps=1e-8, foreach=False)
    assert fused.defaults["fused"]
    for step in range(4):
        for model, opt in ((fused_model, fused), (loop_model, loop)):
            random_gradients(model, step)
            opt.step()
    for (name, a), (_, b) in zip(fused_model.named_parameters(), loop_model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def run_steps(model, opt, sched, steps):
    for k in steps:
        for j, p in enumerate(model.parameters()):
            gen = torch.Generator().manual_seed(1000 * k + j)
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        sched.step()


def make_training(model):
    groups = parameter_groups(model, lr=1e-2, layer_decay=0.9, num_layers=2)
    opt = build_optimizer("adam_weight_decay", groups)
    return opt, build_scheduler(opt, "google_warmup_linear", total_steps=8, warmup_steps=2)


def test_resume_matches_uninterrupted_run():
    torch.manual_seed(0)
    straight = Classifier(num_layers=2)
    resumed = Classifier(num_layers=2)
    resumed.load_state_dict(straight.state_dict())

    opt, sched = make_training(straight)
    run_steps(straight, opt, sched, range(6))

    opt, sched = make_training(resumed)
    run_steps(resumed, opt, sched, range(3))
    buffer = io.BytesIO()
    torch.save({"model": resumed.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    fresh = Classifier(num_layers=2)
    fresh.load_state_dict(saved["model"])
    opt, sched = make_training(fresh)
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    run_steps(fresh, opt, sched, range(3, 6))

    for (name, a), (_, b) in zip(straight.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), name


# ---- parameter groups ---------------------------------------------------------------------------

def test_parameter_groups_cover_every_parameter_once_with_google_decay():
    model = Classifier(num_layers=3)
    groups = parameter_groups(model, lr=1e-3, num_layers=3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    by_name = names_by_group(model, groups)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in by_name[g["name"]]}
    plain = {n for g in groups if g["weight_decay"] == 0 for n in by_name[g["name"]]}
    assert decayed == expected_decay_names(3)
    assert plain == expected_no_decay_names(3)
    assert all(g["weight_decay"] == 0.01 for g in groups if g["name"].endswith("(decay)"))


def test_parameter_groups_include_frozen_parameters():
    model = Classifier(num_layers=2)
    freeze_encoder(model)
    groups = parameter_groups(model, lr=1e-3, num_layers=2)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_layerwise_lr_l4_xi095():
    lr, xi, L = 2e-5, 0.95, 4
    model = Classifier(num_layers=L)
    groups = parameter_groups(model, lr=lr, layer_decay=xi, num_layers=L)
    by_name = names_by_group(model, groups)
    lr_of = {n: g["lr"] for g in groups for n in by_name[g["name"]]}
    want = {"bert.embeddings.": lr * xi**4, "bert.layers.0.": lr * xi**3, "bert.layers.1.": lr * xi**2,
            "bert.layers.2.": lr * xi, "bert.layers.3.": lr, "bert.pooler.": lr, "head.": lr}
    for name, got in lr_of.items():
        (prefix,) = [p for p in want if name.startswith(p)]
        assert got == pytest.approx(want[prefix], rel=1e-12), name
    assert [g["name"] for g in groups][:4] == ["embeddings (decay)", "embeddings (no decay)",
                                               "layer 0 (decay)", "layer 0 (no decay)"]
    assert groups[-1]["name"] == "head (no decay)"


def test_layer_decay_one_gives_single_lr():
    groups = parameter_groups(Classifier(num_layers=3), lr=3e-5, num_layers=3)
    assert {g["lr"] for g in groups} == {3e-5}


def test_parameter_groups_reject_wrong_num_layers():
    with pytest.raises(ValueError, match="layer 2 but num_layers=2"):
        parameter_groups(Classifier(num_layers=3), lr=1e-3, num_layers=2)


# ---- schedules ----------------------------------------------------------------------------------

T, W = 100, 10  # total optimizer steps, warm-up steps


def ulmfit_slanted_triangular(t, total, cut_frac=0.1, ratio=32):
    """Howard & Ruder (2018) eq. 3, as printed."""
    cut = int(np.floor(total * cut_frac))
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + p * (ratio - 1)) / ratio


@pytest.mark.parametrize("name, values", [
    # steps:              0    5    9    10   55    99                  100
    ("warmup_linear",        [0.0, 0.5, 0.9, 1.0, 0.5, 1 / 90, 0.0]),
    ("google_warmup_linear", [0.0, 0.5, 0.9, 0.9, 0.45, 0.01, 0.0]),
    ("slanted_triangular",   [1 / 32, 16.5 / 32, (1 + 0.9 * 31) / 32, 1.0, 16.5 / 32, (1 + 31 / 90) / 32, 1 / 32]),
    ("constant",             [1.0] * 7),
    ("warmup_constant",      [0.0, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0]),
])
def test_schedule_values(name, values):
    got = [SCHEDULES[name](s, T, W) for s in (0, 5, 9, 10, 55, 99, 100)]
    assert got == pytest.approx(values, abs=1e-12)


def test_google_and_continuous_differ_at_end_of_warmup():
    google, continuous = SCHEDULES["google_warmup_linear"], SCHEDULES["warmup_linear"]
    assert all(google(s, T, W) == continuous(s, T, W) for s in range(W))
    assert google(W, T, W) == pytest.approx(1 - W / T) and continuous(W, T, W) == 1.0
    assert google(T, T, W) == continuous(T, T, W) == 0.0
    assert google(T + 5, T, W) == continuous(T + 5, T, W) == 0.0


def test_slanted_triangular_is_ulmfit():
    ours = [SCHEDULES["slanted_triangular"](t, T, W) for t in range(T + 1)]
    assert ours == pytest.approx([ulmfit_slanted_triangular(t, T) for t in range(T + 1)], abs=1e-12)
    # T * cut_frac not whole: ULMFiT's formula goes negative, ours ends at 1/ratio.
    assert ulmfit_slanted_triangular(15, 15) < 0
    assert SCHEDULES["slanted_triangular"](15, 15, 1) == pytest.approx(1 / 32)
    assert SCHEDULES["slanted_triangular"](T + 5, T, W) == pytest.approx(1 / 32)  # past the end
    assert SCHEDULES["slanted_triangular"](0, T, W, ratio=4) == 0.25


def test_scheduler_sets_lr_of_each_group():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = AdamWeightDecay([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 2e-4}])
    sched = build_scheduler(opt, "warmup_linear", total_steps=20, warmup_steps=4)
    for k in range(21):
        want = SCHEDULES["warmup_linear"](k, 20, 4)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * want, 2e-4 * want], rel=1e-12)
        if k < 20:
            opt.step()
            sched.step()
    assert [g["lr"] for g in opt.param_groups][0] == 0.0
    assert [SCHEDULES["warmup_linear"](k, 20, 4) for k in (2, 4, 12)] == [0.5, 1.0, 0.5]


def test_first_update_uses_step_zero():
    """Google's convention: with warm-up the first update has lr 0 but still moves m and v."""
    p = nn.Parameter(torch.ones(3))
    opt = AdamWeightDecay([p], lr=0.1, weight_decay=0.01)
    sched = build_scheduler(opt, "google_warmup_linear", total_steps=10, warmup_steps=2)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    assert torch.equal(p.detach(), torch.ones(3)) and opt.state[p]["m"].sum() > 0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # second update: lr * 1/2


def test_build_scheduler_rejects_bad_arguments():
    opt = AdamWeightDecay([nn.Parameter(torch.ones(1))])
    with pytest.raises(ValueError, match="unknown schedule"):
        build_scheduler(opt, "cosine", 10, 1)
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(opt, "warmup_linear", 10, 11)


# ---- gradual unfreezing and freezing -------------------------------------------------------------

def test_gradual_unfreezing_order_l3():
    model = Classifier(num_layers=3)
    all_names = {n for n, _ in model.named_parameters()}

    def under(*prefixes):
        return {n for n in all_names if n.startswith(prefixes)}

    top = under("head.", "bert.pooler.")
    expected = [
        (["head"], top),
        (["head", "layer 2"], top | under("bert.layers.2.")),
        (["head", "layer 2", "layer 1"], top | under("bert.layers.2.", "bert.layers.1.")),
        (["head", "layer 2", "layer 1", "layer 0"], all_names - under("bert.embeddings.")),
        (["head", "layer 2", "layer 1", "layer 0", "embeddings"], all_names),
        (["head", "layer 2", "layer 1", "layer 0", "embeddings"], all_names),
    ]
    for epoch, (groups, names) in enumerate(expected):
        assert unfreeze(model, epoch, num_layers=3) == groups
        assert {n for n, p in model.named_parameters() if p.requires_grad} == names, epoch


def test_freeze_encoder():
    model = Classifier(num_layers=2)
    freeze_encoder(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("head.")}


# ---- clipping -----------------------------------------------------------------------------------

def test_per_tensor_vs_global_clipping():
    def params_with_grads():
        a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
        a.grad = torch.tensor([3.0, 4.0])  # norm 5
        b.grad = torch.tensor([0.0, 0.3, 0.4])  # norm 0.5
        return a, b

    a, b = params_with_grads()
    total = clip_per_tensor([a, b], max_norm=1.0)
    assert total.item() == pytest.approx(np.sqrt(25.25))
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8]), rtol=1e-6, atol=0)  # scaled to norm 1
    torch.testing.assert_close(b.grad, torch.tensor([0.0, 0.3, 0.4]))  # under the limit: untouched

    a, b = params_with_grads()
    total = torch.nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    scale = 1.0 / np.sqrt(25.25)  # every tensor scaled by the same factor
    assert total.item() == pytest.approx(np.sqrt(25.25))
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0]) * scale, rtol=1e-5, atol=0)
    torch.testing.assert_close(b.grad, torch.tensor([0.0, 0.3, 0.4]) * scale, rtol=1e-5, atol=0)


@pytest.mark.parametrize("max_norm", [1e9, 0.05])  # never clips / clips every step
def test_global_clipping_folded_into_fused_adamw_equals_clip_grad_norm_then_step(max_norm):
    """optimizer_step's folded clipping (the fused kernel divides by 1 / factor) against torch's
    clip_grad_norm_ followed by the step: the same numbers where nothing is clipped, one float32
    rounding apart where every step clips."""
    torch.manual_seed(0)
    initial = nn.Sequential(nn.Linear(50, 40), nn.Linear(40, 3))
    finals = []
    for folded in (True, False):
        model = nn.Sequential(nn.Linear(50, 40), nn.Linear(40, 3))
        model.load_state_dict(initial.state_dict())
        opt = build_optimizer("adamw", [{"params": list(model.parameters()), "lr": 1e-2, "weight_decay": 0.01}])
        scaler, schedule = torch.amp.GradScaler("cpu", enabled=False), build_scheduler(opt, "constant", 4, 0)
        inputs = torch.Generator().manual_seed(1)
        norms = []
        for _ in range(4):
            model(torch.randn(8, 50, generator=inputs)).pow(2).sum().backward()
            norms.append(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item())
            if folded:
                optimizer_step(model, opt, schedule, scaler, max_norm)
                assert not hasattr(opt, "grad_scale")  # the factor was this step's only
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                opt.step()
                opt.zero_grad()
        assert all(norm > max_norm for norm in norms) == (max_norm < 1)
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals):
        if max_norm > 1:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
