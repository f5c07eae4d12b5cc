"""Device, numeric precision and padding choices, applied from outside the model (autocast, loss
scaling, int8 quantization, BertModel.padding): the options every run that computes has
(MachineOptions; training adds gradient checkpointing) and the one function that resolves them.

`resolve_precision("auto", device)` picks bf16 autocast where the hardware computes bf16 natively
(CPUs with AVX512-BF16 or AMX, CUDA GPUs of compute capability 8.0 or later) and fp32 elsewhere.
On a CPU without those instructions bf16 is emulated and slower than fp32; on such a CPU with them,
bf16 matrix multiplies run about 3x faster than fp32 ones (benchmarks/README.md).

On the CPU a run also keeps the memory its steps free (`keep_freed_memory`).
"""

import contextlib
import ctypes
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from minibert.cli import at_least, option
from minibert.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # what the scripts' --precision accepts

# /proc/cpuinfo flags of the x86 instructions that compute bf16 products natively.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device. Errors name `flag`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{flag} {name}: not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{flag} {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{flag} {name}: minibert runs on cpu or cuda")
    return device


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where the file does not exist)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo", capability: str | None = None) -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16) and torch's build uses
    AVX-512 kernels (oneDNN then takes the bf16 paths). `capability` is torch's name for the kernels
    it uses ("AVX2", "AVX512", ...; torch.backends.cpu.get_cpu_capability() when None)."""
    if capability is None:
        capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return False
    return any(flag in cpu_flags(cpuinfo) for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device, cpuinfo: str | Path = "/proc/cpuinfo",
                      cpu_capability: str | None = None) -> str:
    """'auto' -> 'bf16' where the device has native bf16, else 'fp32'; other names are checked and
    returned as they are. The scripts print and save the resolved name with the run. On a CPU device
    `cpuinfo` and `cpu_capability` are what `cpu_has_native_bf16` reads (this machine's by default)."""
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"--precision {precision}: must be one of {', '.join(PRECISION_CHOICES)}")
    if precision != "auto":
        return precision
    native = {"cpu": lambda: cpu_has_native_bf16(cpuinfo, cpu_capability),
              "cuda": lambda: torch.cuda.is_bf16_supported(including_emulation=False)}
    check = native.get(device.type)
    return "bf16" if check is not None and check() else "fp32"


# --padding auto: the unpadded encoder where it measured faster. On the CPU it runs only the real
# tokens through the linear layers (benchmarks/README.md: 1.5x the padded encoder on training
# batches of mixed lengths, equal on full batches); on CUDA it pays off with the fused varlen
# kernel (attention.varlen_attention's "triton" entry), otherwise attention re-pads.
PADDING_CHOICES = ("auto", "padded", "unpadded")


def resolve_padding(padding: str, device: torch.device) -> str:
    """'auto' -> 'unpadded' on the CPU, and on CUDA where the Triton varlen kernel imports; else 'padded'."""
    if padding not in PADDING_CHOICES:
        raise ConfigError(f"--padding {padding}: must be one of {', '.join(PADDING_CHOICES)}")
    if padding != "auto":
        return padding
    if device.type == "cpu":
        return "unpadded"
    from minibert.model.attention import _triton_varlen_attention  # the kernel is optional

    return "unpadded" if device.type == "cuda" and _triton_varlen_attention() is not None else "padded"


def autocast(device: torch.device, precision: str):
    """The autocast context for a precision; fp32 runs without autocast.

    bf16 autocast works on CPU too (oneDNN bf16 kernels; several times faster with AVX512-BF16/AMX).
    fp16 is offered on CUDA only, where it comes with loss scaling (see grad_scaler).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: must be one of {', '.join(PRECISIONS)} "
                          "(resolve 'auto' with resolve_precision first)")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device (it needs loss scaling and is slow on CPU); use bf16")
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16; a disabled scaler (a no-op) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` whose nn.Linear layers are int8 dynamically quantized, for CPU inference.

    Weights are stored as int8 (per-tensor scale); activations are quantized per batch on the fly
    and the products accumulate in int32 (torch.ao.quantization.quantize_dynamic, fbgemm/oneDNN
    kernels). Embeddings, LayerNorm and attention stay fp32. Run it without autocast: the
    quantized layers take and return fp32.
    """
    with warnings.catch_warnings():  # torch marks its quantized tensor types as deprecated
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model.cpu(), {nn.Linear}, dtype=torch.qint8)


@dataclass(frozen=True)
class MachineOptions:
    """Where and how a run computes (train.py, pretrain.py train and default, predict.py); the
    "auto" values are resolved once, by resolve_machine."""

    precision: str = option("auto", "auto (bf16 where the CPU/GPU has native bf16, else fp32), fp32, "
                            "bf16 autocast (CPU or GPU), fp16 with loss scaling (GPU)", choices=PRECISION_CHOICES)
    padding: str = option("auto", "unpadded: only real tokens through the encoder's layers (same math); "
                          "auto: unpadded on CPU, and on CUDA with the Triton varlen kernel", choices=PADDING_CHOICES)
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    threads: int = option(0, "CPU threads for torch (0 = torch's default)")


@dataclass(frozen=True)
class TrainingMachineOptions(MachineOptions):
    """MachineOptions of a run that trains: also whether backward recomputes the encoder's layers."""

    gradient_checkpointing: bool = option(False, "recompute each encoder layer in backward, with the same dropout "
                                          "masks (same numbers): less activation memory for about one more "
                                          "forward pass of compute")


# The machine options' RULES (minibert.cli.check_rules); the choices are checked by the parser.
MACHINE_RULES = {"threads": (at_least(0), "at least 0 (0 = torch's default)")}


# mallopt's parameter numbers (glibc's malloc.h) and the values keep_freed_memory sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_BLOCK_LIMIT = 32 << 20  # blocks up to this size come from the heap: glibc's largest mmap threshold
HEAP_KEPT = 1 << 30  # free memory at the heap's top given back to the kernel only beyond this


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep the memory a CPU step frees, for the next step to reuse.

    By default glibc serves a block over its mmap threshold (128 kB, rising with what is freed, up to
    32 MB) straight from the kernel and returns it on free, and gives back free memory at the top of
    its heap: a training step that frees its activations and allocates them again the next step then
    pays a page fault (and the kernel's zeroing) per 4 kB page, every step. Blocks up to 32 MB from the
    heap, and the heap kept: about 10% of a MiniLM bf16 training step at 16 x 128 tokens on one core
    (benchmarks/README.md); the process's resident memory then stays near its peak. Returns False,
    changing nothing, where the C library is not glibc. Process-wide: it also serves any other code in
    the process.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)) and bool(libc.mallopt(M_TRIM_THRESHOLD, HEAP_KEPT))


def resolve_machine(machine: MachineOptions) -> tuple[torch.device, str, str]:
    """(device, precision, padding) with "auto" resolved, for every kind of run: fp16 without CUDA
    and a device this machine lacks are refused (ConfigError) before any work; --threads is applied,
    and on the CPU freed memory is kept for reuse (keep_freed_memory)."""
    if machine.threads > 0:
        torch.set_num_threads(machine.threads)
    device = resolve_device(machine.device)
    if device.type == "cpu":
        keep_freed_memory()
    precision = resolve_precision(machine.precision, device)
    autocast(device, precision)  # refuses fp16 without CUDA now, not at the first step
    return device, precision, resolve_padding(machine.padding, device)
