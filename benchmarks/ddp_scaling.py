"""Data-parallel scaling of train.py: one process against torchrun with N processes, same global batch.

    python benchmarks/ddp_scaling.py --processes 2 --threads 1        # CPU: gloo, N x 1 thread vs 1 x N threads
    python benchmarks/ddp_scaling.py --processes 4 --device cuda       # GPUs: NCCL, 4 GPUs vs 1
    python benchmarks/ddp_scaling.py --smoke     # 2 processes, 16 examples at 32 tokens: checks that it runs

Both runs fine-tune the embedded MiniLM on a stratified subset of BBC News (split afresh) for one epoch with the
same global batch (one process: batch N*b; torchrun: N processes of b) and report training
examples per second from their metrics.jsonl, and the ratio. On a CPU both settings share the same
cores, so the ratio shows the overhead of the gradient all-reduce rather than a speed-up.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from minibert.data import corpora

ROOT = Path(__file__).resolve().parent.parent


def examples_per_s(run: Path) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["examples_per_s"] for r in records if r["split"] == "train"][1:]  # the first window warms up
    return sorted(speeds)[len(speeds) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (one process gets N times)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=8, help="per process")
    parser.add_argument("--train_count", type=int, default=320)
    parser.add_argument("--smoke", action="store_true", help="2 processes of 1 thread, batches of 2, 16 examples "
                        "at 32 tokens: checks that the script runs (a minute), measures nothing")
    args = parser.parse_args()
    if args.smoke:
        args.processes, args.threads, args.batch_size, args.train_count = 2, 1, 2, 16
    common = ["--train_count", str(args.train_count), "--epochs", "1", "--log_every", "2", "--device", args.device,
              "--test_file", "", "--precision", "fp32", "--padding", "padded",
              *(["--max_seq_length", "32"] if args.smoke else [])]
    with tempfile.TemporaryDirectory() as tmp:
        corpora.prepare_bbc_news(Path(tmp) / "bbc_news")  # the embedded corpus, split as train.py's default
        common += ["--train_file", f"{tmp}/bbc_news/train.jsonl", "--dev_file", f"{tmp}/bbc_news/dev.jsonl"]
        one = Path(tmp) / "one"
        subprocess.run([sys.executable, "train.py", *common, "--output_dir", str(one),
                        "--batch_size", str(args.batch_size * args.processes),
                        "--threads", str(args.threads * args.processes)], cwd=ROOT, check=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        many = Path(tmp) / "many"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.processes}",
                        f"--master_port={port}", "train.py", *common, "--output_dir", str(many),
                        "--batch_size", str(args.batch_size), "--threads", str(args.threads)],
                       cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        a, b = examples_per_s(one), examples_per_s(many)
    print(f"1 process x {args.threads * args.processes} threads, batch {args.batch_size * args.processes}: "
          f"{a:.1f} train ex/s")
    print(f"{args.processes} processes x {args.threads} threads, batch {args.batch_size} each: {b:.1f} train ex/s")
    print(f"ratio (processes / one process): {b / a:.2f}")


if __name__ == "__main__":
    main()
