"""hidden_act names -> activation functions."""

import torch
import torch.nn.functional as F


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation Google's modeling.py has used since February 2019."""
    return F.gelu(x, approximate="tanh")


# hidden_act name -> function. "gelu" is the exact erf form the released checkpoints were trained
# with (Google's modeling.py before February 2019); the tanh form has its own names (ours, and
# Hugging Face's two spellings).
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
}
