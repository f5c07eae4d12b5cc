"""--precision auto: bf16 only where the hardware multiplies bf16 natively."""

import pytest
import torch

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
