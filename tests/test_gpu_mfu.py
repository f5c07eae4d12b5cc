"""benchmarks/gpu_mfu.py: its FLOP count (bench_common.forward_flops, which cpu_mfu.py uses too)
against a hand count from the layer shapes, and a smoke run of every row on the CPU (a tiny model;
the measurement itself needs a GPU)."""

import subprocess
import sys
from pathlib import Path

import pytest

from minibert.model.config import BertConfig

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# Odd sizes: hidden 8 in 2 heads of 4, intermediate 12, 2 layers, vocabulary 50.
CONFIG = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
                    max_position_embeddings=16)


@pytest.fixture
def gpu_mfu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import bench_common as scripts do
    import gpu_mfu
    return gpu_mfu


@pytest.fixture
def bench_common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_common
    return bench_common


def products(shapes) -> int:
    """FLOPs of matrix products given as (m, k, n, how many): 2 m k n each."""
    return sum(2 * m * k * n * count for m, k, n, count in shapes)


def layer(T: int) -> list:
    """One encoder layer on one sequence of T tokens (H 8, N 2 heads of D 4, I 12)."""
    return [(T, 8, 8, 3),   # x (T, H) @ W_q, W_k, W_v (H, H)
            (T, 4, T, 2),   # per head: q (T, D) @ k^T (D, T)
            (T, T, 4, 2),   # per head: probabilities (T, T) @ v (T, D)
            (T, 8, 8, 1),   # context (T, H) @ W_o (H, H)
            (T, 8, 12, 1),  # FFN in: (T, H) @ (H, I)
            (T, 12, 8, 1)]  # FFN out: (T, I) @ (I, H)


def test_classifier_flops_equal_the_hand_count(bench_common):
    lengths = [3, 5]
    per_sequence = lambda T: products(2 * layer(T) + [(1, 8, 8, 1),   # pooler on [CLS]: (1, H) @ (H, H)
                                                      (1, 8, 3, 1)])  # classifier: (1, H) @ (H, 3 labels)
    hand = per_sequence(3) + per_sequence(5)
    # Written out: per layer and token 2 (4*64 + 2*96) = 896, attention 4 T^2 H = 32 T^2 per layer.
    assert hand == 2 * (896 * 8 + 32 * (9 + 25)) + 2 * (128 + 48)
    assert bench_common.forward_flops(CONFIG, lengths, num_labels=3) == hand
    # Training: 6 x non-embedding weight matrices x tokens + 12 L T^2 H per sequence, heads included.
    matrices = 2 * (4 * 64 + 2 * 96)
    assert bench_common.TRAINING * hand == 6 * matrices * 8 + 12 * 2 * (9 + 25) * 8 + 6 * 2 * (64 + 24)


def test_pretraining_flops_equal_the_hand_count(bench_common):
    lengths, masked = [6, 6, 6], 2
    per_sequence = products(2 * layer(6) + [
        (1, 8, 8, 1),        # pooler
        (1, 8, 2, 1),        # NSP classifier (H, 2)
        (masked, 8, 8, 1),   # MLM transform at the masked positions (H, H)
        (masked, 8, 50, 1)])  # decoder: the tied word embeddings (H, V)
    assert bench_common.forward_flops(CONFIG, lengths, masked_positions=masked) == 3 * per_sequence


def test_peak_table_and_override(gpu_mfu):
    import torch
    assert gpu_mfu.peak_tflops(torch.device("cpu"), 0.0) is None
    assert gpu_mfu.peak_tflops(torch.device("cpu"), 123.0) == 123.0
    find = lambda name: next(peak for key, peak in gpu_mfu.PEAK_BF16_TFLOPS if key in name)
    assert find("NVIDIA H100 80GB HBM3") == 989 and find("NVIDIA H100 PCIe") == 756
    assert find("NVIDIA H200") == 989 and find("NVIDIA A100-SXM4-80GB") == 312 and find("NVIDIA L4") == 121


@pytest.mark.slow
def test_every_row_runs_on_the_cpu(tmp_path):
    """The tiny model through every row and engine, one thread (about a minute on a shared machine)."""
    pytest.importorskip("transformers")
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_mfu.py"), "--device", "cpu", "--smoke",
                             "--threads", "1", "--peak_tflops", "1"], capture_output=True, text=True, check=True,
                            cwd=tmp_path)
    lines = [line.split() for line in result.stdout.splitlines()[2:]]
    rows = {" ".join(words[:-6]) for words in lines}
    assert {"finetune 2x128", "finetune 1x512", "finetune var 2", "pretrain 2x128", "finetune 2x128 +ckpt",
            "finetune 1x512 +ckpt", "finetune var 2 +ckpt", "pretrain 2x128 +ckpt", "infer var"} == rows
    assert len(lines) == 3 * len(rows)
    for words in lines:
        engine, tokens, tflops, mfu, memory, vs_hf = words[-6:]
        assert engine in {"minibert", "mb-unpad", "hf-sdpa"} and float(tokens) > 0 and mfu.endswith("%")
        assert float(memory) > 0 and float(vs_hf) > 0
