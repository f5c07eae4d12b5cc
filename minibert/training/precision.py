"""Device and numeric precision, applied from outside the model (autocast, loss scaling)."""

import contextlib

import torch

from minibert.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: minibert runs on cpu or cuda")
    return device


def autocast(device: torch.device, precision: str):
    """The autocast context for a precision; fp32 runs without autocast.

    bf16 autocast works on CPU too (oneDNN bf16 kernels; several times faster with AVX512-BF16/AMX).
    fp16 is offered on CUDA only, where it comes with loss scaling (see grad_scaler).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: must be one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device (it needs loss scaling and is slow on CPU); use bf16")
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16; a disabled scaler (a no-op) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
