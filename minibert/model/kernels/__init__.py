"""Fused attention kernels for GPUs, and their written-out references.

`varlen_attention.py` holds the Triton kernel (forward and backward) and needs the optional Triton
package (`pip install -e ".[gpu]"`): import it only where Triton is installed, as
`from minibert.model.kernels.varlen_attention import varlen_attention` (check `triton_available()`).
This package itself imports no Triton, so `import minibert` never needs it.
`varlen_attention_reference` is plain torch and always available.
"""

import importlib.util

from minibert.model.kernels.varlen_reference import varlen_attention_reference


def triton_available() -> bool:
    """Whether Triton is installed (it runs on CUDA, or on the CPU under TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


__all__ = ["triton_available", "varlen_attention_reference"]
