"""The word embeddings' gradient in kept memory (minibert/model/kept_gradient.py): torch's numbers,
the memory reused only when nothing holds the last gradient."""

import copy

import pytest
import torch

from minibert.model.kept_gradient import KeptGradientEmbedding


def pair(vocab: int = 200, width: int = 16):
    """torch's nn.Embedding and a KeptGradientEmbedding with the same weights."""
    torch.manual_seed(0)
    reference = torch.nn.Embedding(vocab, width)
    kept = KeptGradientEmbedding(vocab, width)
    kept.load_state_dict(reference.state_dict())
    return reference, kept


def backward(module, ids, grad_out):
    module(ids).backward(grad_out)
    return module.weight.grad


def batch(seed: int, shape=(8, 32), width: int = 16, vocab: int = 20):
    """ids with many repeated rows (a small vocabulary range) and an upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, shape, generator=g), torch.randn(*shape, width, generator=g)


def test_the_gradient_equals_torchs_and_reuses_one_block_of_memory():
    reference, kept = pair()
    for step in range(4):
        reference.weight.grad, kept.weight.grad = None, None  # optimizer.zero_grad(set_to_none=True)
        ids, grad_out = batch(step)
        assert torch.equal(backward(kept, ids, grad_out), backward(reference, ids, grad_out))
        assert kept.weight.grad.data_ptr() == kept.memory.storage.data_ptr()  # the kept memory, not a copy


def test_accumulation_over_micro_batches_and_two_lookups_in_one_graph_are_torchs():
    reference, kept = pair()
    for step in range(3):  # no zero_grad in between: the gradients add up
        ids, grad_out = batch(step)
        assert torch.equal(backward(kept, ids, grad_out), backward(reference, ids, grad_out))
    reference.weight.grad, kept.weight.grad = None, None
    (a, _), (b, _) = batch(5), batch(6)
    for module in (reference, kept):
        (module(a).sum() + 2 * module(b).pow(2).sum()).backward()
    assert torch.equal(kept.weight.grad, reference.weight.grad)


def test_a_gradient_someone_still_holds_is_never_overwritten():
    _, kept = pair()
    ids, grad_out = batch(0)
    held = backward(kept, ids, grad_out)
    expected = held.clone()
    kept.weight.grad = None  # the optimizer lets go, the caller does not
    backward(kept, *batch(1))
    assert torch.equal(held, expected)
    assert kept.weight.grad.data_ptr() != held.data_ptr()


def test_a_copy_gets_memory_of_its_own_and_autograd_grad_is_torchs():
    reference, kept = pair()
    ids, grad_out = batch(0)
    backward(kept, ids, grad_out)
    copied = copy.deepcopy(kept)
    copied.weight.grad = None
    assert backward(copied, ids, grad_out).data_ptr() != kept.weight.grad.data_ptr()
    (expected,) = torch.autograd.grad((reference(ids) * grad_out).sum(), [reference.weight])
    (got,) = torch.autograd.grad((kept(ids) * grad_out).sum(), [kept.weight])
    assert torch.equal(got, expected)


@pytest.mark.parametrize("frozen", [True, False])
def test_no_gradient_when_the_weight_is_frozen_or_grad_is_off(frozen):
    _, kept = pair()
    ids, _ = batch(0)
    if frozen:
        kept.weight.requires_grad_(False)
        out = kept(ids)
        assert not out.requires_grad
    else:
        with torch.no_grad():
            out = kept(ids)
    assert torch.equal(out, torch.nn.functional.embedding(ids, kept.weight.detach()))
    assert kept.memory.storage is None
