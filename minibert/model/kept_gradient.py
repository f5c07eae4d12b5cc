"""The word-embedding gradient in memory kept from one step to the next.

The word embeddings' gradient is a dense V x H table (30,522 x 384 floats, 47 MB for MiniLM) of which
only the rows of the batch's tokens are not zero. torch's embedding backward allocates and zero-fills
a fresh table every step, and a block that large comes straight from the operating system (glibc
serves allocations over 32 MB with mmap and returns them on free), so every step also pays a page
fault per 4 kB page: about 12 ms of a 130-300 ms MiniLM training step on a 2-core CPU, the same
everywhere from the smallest batch up (benchmarks/README.md has the measurements).

`KeptGradientEmbedding` is an nn.Embedding whose backward writes that table into memory it keeps:
zeroed, then the rows added with index_add_ (the numbers of torch's embedding backward). autograd
stores the table as the weight's .grad without a copy. The next backward reuses the memory only when
that gradient has been let go (optimizer.zero_grad(set_to_none=True), torch's default); while anything
still holds it (a gradient accumulated over micro-batches, a caller that kept weight.grad, a backward
still under way) the backward takes a fresh table, as torch's does.
"""

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F


class KeptMemory:
    """One weight's gradient memory and what tells whether it is free.

    `handed_out` is set when a backward gives the memory to autograd and cleared when the weight's
    gradient has been accumulated (the weight's post-accumulate-grad hook); `last` is a weak reference
    to the weight's .grad after that accumulation, dead once every holder has let it go.
    """

    def __init__(self):
        self.storage: torch.UntypedStorage | None = None
        self.handed_out = False
        self.last: weakref.ref | None = None
        self.hooked: weakref.ref | None = None  # the weight whose hook is registered

    def __deepcopy__(self, memo):
        return KeptMemory()  # a copied module gets memory of its own, first drawn in its first backward

    def watch(self, weight: nn.Parameter) -> None:
        """Registers the accumulation hook once per weight object (a module may get a new Parameter)."""
        if self.hooked is None or self.hooked() is not weight:
            weight.register_post_accumulate_grad_hook(self._accumulated)
            self.hooked = weakref.ref(weight)

    def _accumulated(self, weight: torch.Tensor) -> None:
        self.handed_out = False
        self.last = weakref.ref(weight.grad)

    def zeroed_table(self, like: torch.Tensor) -> torch.Tensor:
        """A zero tensor shaped like the weight: over the kept memory when it is free, else fresh."""
        free = not self.handed_out and (self.last is None or self.last() is None)
        if self.storage is not None and not free:
            return torch.zeros_like(like, memory_format=torch.contiguous_format)
        if self.storage is None:
            table = torch.zeros_like(like, memory_format=torch.contiguous_format)
            self.storage = table.untyped_storage()
        else:
            # A new tensor over the kept storage: autograd sees a tensor nobody else holds and makes it
            # the .grad without copying (holding the tensor itself would make it copy).
            table = like.new_empty(0).set_(self.storage, 0, like.shape, like.stride()).zero_()
        self.handed_out = True
        return table


class KeptGradientLookup(torch.autograd.Function):
    """F.embedding(ids, weight) whose weight gradient is written into `memory`'s table."""

    @staticmethod
    def forward(ctx, ids: torch.Tensor, weight: torch.Tensor, memory: KeptMemory) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.memory, ctx.weight_like = memory, weight.detach()
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[1]:
            return None, None, None
        (ids,) = ctx.saved_tensors
        table = ctx.memory.zeroed_table(ctx.weight_like)
        table.index_add_(0, ids.reshape(-1), grad_out.reshape(-1, table.shape[1]).to(table.dtype))
        return None, table, None


class KeptGradientEmbedding(nn.Embedding):
    """nn.Embedding (no padding index, no max_norm) with its weight gradient in kept memory; the same
    parameters and state_dict as nn.Embedding."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__(num_embeddings, embedding_dim)
        self.memory = KeptMemory()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad):
            return F.embedding(ids, self.weight)
        self.memory.watch(self.weight)
        return KeptGradientLookup.apply(ids, self.weight, self.memory)
