"""Every script in benchmarks/ runs: each one's `--smoke` mode (a tiny model or a small input, a
couple of calls) in a subprocess, from a scratch working directory, so that none rots unnoticed.

The scripts are found by listing the folder, so a new benchmark is covered once it has `--smoke`.
A script that cannot run on this machine (the GPU kernels without CUDA, a missing peer package)
prints one line starting with "skipped: " and exits 0; the test is then skipped with that reason.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
HELPER = "bench_common.py"  # shared code, not a benchmark
# Smoke runs that take more than a few seconds even on an idle machine: whole train.py or
# pretrain.py processes, Hugging Face's Trainer, or every row of a benchmark with both libraries.
SLOW = {"create_data_scale.py", "ddp_scaling.py", "hf_trainer_bbc.py", "gpu_mfu.py", "encoder_speed.py",
        "gpu_speed.py", "last_layer_speed.py", "pretrain_speed.py", "cpu_mfu.py", "profile_step.py",
        "data_path_scale.py", "goemotions_vs_transformers.py"}
TIMEOUT_S = 600  # per script, on a shared 2-core machine


def scripts() -> list:
    found = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != HELPER)
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in found]


def run_smoke(name: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python benchmarks/NAME --smoke` with one thread, in its own process group, killed (with
    everything it started) if it outlives TIMEOUT_S."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(BENCHMARKS / name), "--smoke"], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        out, err = "", f"timed out after {TIMEOUT_S} s"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the script and whatever it left (workers, torchrun)
        except ProcessLookupError:
            pass  # the group has ended
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_the_smoke_test_finds_every_benchmark():
    names = [getattr(p, "values", [p])[0] for p in scripts()]
    assert HELPER not in names and "cpu_mfu.py" in names and "profile_step.py" in names
    assert SLOW <= set(names), "a slow entry names no script"


@pytest.mark.parametrize("name", scripts())
def test_benchmark_smoke_run(name, tmp_path):
    result = run_smoke(name, tmp_path)
    assert result.returncode == 0, f"{name} --smoke exited {result.returncode}\n{result.stdout[-3000:]}" \
                                   f"\n{result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    if lines and lines[-1].startswith("skipped: "):
        pytest.skip(lines[-1].removeprefix("skipped: "))
    assert lines, f"{name} --smoke printed nothing"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("script, option, value, named", [
    ("cpu_mfu.py", "--precisions", "fp32,fp16", "fp16"), ("cpu_mfu.py", "--rows", "train,pretrain", "pretrain"),
    ("profile_step.py", "--train_batch", "0", "0"), ("profile_step.py", "--top", "-1", "-1")])
def test_benchmark_names_a_bad_value_in_one_line(script, option, value, named, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), option, value], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and result.stdout == ""
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"{script}: error: ") and option in error and named in error


@pytest.mark.slow
def test_profile_step_lists_operators_for_the_batch_asked(tmp_path):
    """--train_batch sets the train row's batch; --top lists that many operators and the products' share."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "profile_step.py"), "--smoke", "--rows", "train",
                             "--precisions", "fp32", "--train_batch", "3", "--top", "4"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=TIMEOUT_S,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("train 3x128, fp32:") for line in lines)
    summary = [line for line in lines if "matrix products" in line]
    assert len(summary) == 1
    listed = lines[lines.index(summary[0]) + 1:]
    # Which operators lead depends on timing (on a tiny model under load, not always a product):
    # the test asks for four operator rows, slowest first.
    rows = [re.fullmatch(r"\s+(\S+)\s+([\d.]+) ms", line) for line in listed]
    assert len(listed) == 4 and all(rows), listed
    times = [float(row[2]) for row in rows]
    assert times == sorted(times, reverse=True)
