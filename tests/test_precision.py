"""Machine choices: --precision auto (bf16 only where the hardware multiplies bf16 natively), and the
freed memory every CPU run keeps for reuse."""

import os
import platform
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from minibert.errors import ConfigError
from minibert.training.machine import autocast, cpu_flags, cpu_has_native_bf16, resolve_precision

CPU = torch.device("cpu")


def fake_cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    return path


@pytest.mark.parametrize("flags, capability, native", [
    ("avx512f avx512_bf16", "AVX512", True),
    ("avx512f amx_tile amx_bf16", "AVX512", True),
    ("avx512f avx512_vnni", "AVX512", False),  # AVX-512 without bf16 products: emulated, slower
    ("avx2 avx512_bf16", "AVX2", False),  # torch's build does not use AVX-512 kernels here
])
def test_native_bf16_needs_the_flag_and_avx512_kernels(tmp_path, flags, capability, native):
    path = fake_cpuinfo(tmp_path, flags)
    assert cpu_has_native_bf16(path, capability) is native
    assert resolve_precision("auto", CPU, path, capability) == ("bf16" if native else "fp32")


def test_explicit_precisions_pass_through_and_bad_names_fail():
    assert [resolve_precision(p, CPU) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ConfigError, match="must be one of"):
        resolve_precision("int8", CPU)
    with pytest.raises(ConfigError, match="resolve .auto."):
        autocast(CPU, "auto")


def test_cpu_flags_of_a_missing_file_is_empty(tmp_path):
    assert cpu_flags(tmp_path / "absent") == set()
    assert "sse2" in cpu_flags(fake_cpuinfo(tmp_path, ""))


KEPT_MEMORY_PROBE = """
import ctypes, resource, sys, torch
from minibert.training.machine import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
else:  # glibc's documented defaults, fixed: 128 kB for both (its dynamic threshold depends on history)
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(M_MMAP_THRESHOLD, 128 << 10) and libc.mallopt(M_TRIM_THRESHOLD, 128 << 10)
torch.set_num_threads(1)
def step():  # five 8 MB activations alive at once, all freed at the end, as in a training step
    return [torch.ones(1 << 21) for _ in range(5)]
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_freed_memory_is_reused_without_page_faults():
    """Five 8 MB tensors allocated and freed together, again and again: with glibc's default
    thresholds (set explicitly: left alone, glibc raises them after the first free, by an amount that
    depends on what the process did before) the freed 40 MB go back to the kernel and each round pays
    its ~10,000 page faults again; with keep_freed_memory (what every CPU run applies) the heap keeps
    them for the next round."""
    def faults(mode: str) -> float:
        result = subprocess.run([sys.executable, "-c", KEPT_MEMORY_PROBE, mode], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stderr[-2000:]
        return float(result.stdout.split()[-1])

    assert faults("keep") < 50
    assert faults("glibc_defaults") > 5000
