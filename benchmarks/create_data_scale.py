"""Instance creation at scale: Google's one-process run against --sharded with N worker processes.

A large corpus is built from BBC News training text (`pretrain.py corpus`, spaCy sentences)
repeated up to --size_mb and written as shards of --shard_mb. Then `pretrain.py create_data` runs,
as its own process, in each mode:

    google       all shards in one process, as Google's create_pretraining_data.py (everything in
                 memory); only up to --google_max_mb, the largest corpus it is allowed to try
    sharded xN   --sharded --num_workers N: one shard per process at a time

and the script prints, per mode: wall time, instances/s, MB/s of text, and the peak memory of the
whole process tree (create_data and its workers), sampled from /proc every 0.2 s: the sum of the
processes' proportional set sizes (PSS: shared pages counted once, the memory really used) and
the largest single-process resident set size. Instance counts come from the records' manifests.

    python benchmarks/create_data_scale.py                              # 1024 MB, dupe_factor 1
    python benchmarks/create_data_scale.py --size_mb 64 --dupe_factor 5 --workers 1,2
    python benchmarks/create_data_scale.py --smoke    # 0.2 MB in 2 shards, both modes (a minute)
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (from /proc/PID/task/*/children)."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue  # the process ended meanwhile
    return pids


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in kB; (0, 0) if it has ended."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


class PeakMemory(threading.Thread):
    """Samples the process tree of `pid` until stopped; keeps the peak summed PSS, the peak summed
    RSS and the peak RSS of one process."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.stopped = pid, every, threading.Event()
        self.pss = self.rss = self.single_rss = self.processes = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            samples = [memory_kb(p) for p in tree_pids(self.pid)]
            self.pss = max(self.pss, sum(s[0] for s in samples))
            self.rss = max(self.rss, sum(s[1] for s in samples))
            self.single_rss = max([self.single_rss] + [s[1] for s in samples])
            self.processes = max(self.processes, sum(1 for s in samples if s[1]))
            self.stopped.wait(self.every)


def build_corpus(work: Path, size_mb: float, shard_mb: float) -> list[Path]:
    """BBC News training text in Google's format, repeated to size_mb, as shards of ~shard_mb."""
    bbc = work / "bbc.txt"
    if not bbc.exists():
        subprocess.run([sys.executable, str(ROOT / "pretrain.py"), "corpus", "--sources=bbc_news",
                        f"--output_file={bbc}", f"--data_dir={work / 'data'}"], check=True)
    text = bbc.read_bytes()  # ends with a blank line: copies are separate documents
    shards, written, k = [], 0, 0
    target, shard_bytes = int(size_mb * 1e6), int(shard_mb * 1e6)
    folder = work / f"corpus_{size_mb:g}mb_{shard_mb:g}"
    if folder.exists() and (folder / "done").exists():
        return sorted(folder.glob("part-*.txt"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    while written < target:
        path = folder / f"part-{k:05d}.txt"
        with open(path, "wb") as f:
            size = 0
            while size < shard_bytes and written < target:
                piece = text[:min(len(text), target - written)]
                piece = piece[:piece.rfind(b"\n\n") + 2] if len(piece) < len(text) else piece
                if not piece.strip():
                    written = target
                    break
                f.write(piece)
                size += len(piece)
                written += len(piece)
        shards.append(path)
        k += 1
    (folder / "done").write_text("")
    return shards


def run_mode(name: str, args: list[str], outputs: Path, megabytes: float) -> dict:
    """One create_data run as a child process, its time and memory; the instances from the manifests."""
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    command = [sys.executable, str(ROOT / "pretrain.py"), "create_data", *args]
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = PeakMemory(process.pid)
    sampler.start()
    output, _ = process.communicate()
    seconds = time.time() - start
    sampler.stopped.set()
    sampler.join()
    if process.returncode != 0:
        print(output[-2000:])
        return {"mode": name,
                "error": output.strip().splitlines()[-1] if output.strip() else f"exit {process.returncode}",
                "seconds": seconds, "peak_pss_mb": sampler.pss / 1024, "peak_single_rss_mb": sampler.single_rss / 1024}
    instances = sum(json.loads(p.read_text())["records"] for p in outputs.glob("*/manifest.json"))
    return {"mode": name, "seconds": seconds, "instances": instances, "instances_per_s": instances / seconds,
            "mb_per_s": megabytes / seconds, "peak_pss_mb": sampler.pss / 1024, "peak_rss_sum_mb": sampler.rss / 1024,
            "peak_single_rss_mb": sampler.single_rss / 1024, "processes": sampler.processes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size_mb", type=float, default=1024, help="corpus size in MB (default 1024)")
    parser.add_argument("--shard_mb", type=float, default=32, help="size of each input file (shard)")
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}", help="comma-separated worker counts for --sharded")
    parser.add_argument("--google_max_mb", type=float, default=1024,
                        help="run Google's one-process mode only up to this corpus size (it holds everything)")
    parser.add_argument("--dupe_factor", type=int, default=1, help="Google's default is 10; 1 keeps big runs short")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--work_dir", default="runs/create_data_scale")
    parser.add_argument("--smoke", action="store_true", help="a 0.2 MB corpus in 2 shards, one worker: checks that "
                        "the script runs, measures nothing")
    args = parser.parse_args()
    if args.smoke:
        args.size_mb, args.shard_mb, args.workers = 0.2, 0.1, "1"

    from minibert.resources import minilm_folder  # noqa: E402 (only the vocabulary file is needed)
    vocab = minilm_folder() / "vocab.txt"
    work = Path(args.work_dir)
    shards = build_corpus(work, args.size_mb, args.shard_mb)
    megabytes = sum(p.stat().st_size for p in shards) / 1e6
    print(f"corpus: {megabytes:.1f} MB of BBC News training text repeated, "
          f"{len(shards)} shards of ~{args.shard_mb:g} MB in {shards[0].parent}; "
          f"dupe_factor {args.dupe_factor}, max_seq_length {args.max_seq_length}, "
          f"MiniLM's vocabulary; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
    common = [f"--vocab_file={vocab}", f"--dupe_factor={args.dupe_factor}", f"--max_seq_length={args.max_seq_length}",
              f"--max_predictions_per_seq={max(1, round(args.max_seq_length * 0.15))}"]
    inputs = f"--input_file={shards[0].parent}/part-*.txt"
    modes = []
    if megabytes <= args.google_max_mb:
        modes.append(("google (1 process, all files)", [inputs, f"--output_file={work / 'out_google' / 'records'}"],
                      work / "out_google"))
    else:
        print(f"google mode skipped: {megabytes:.0f} MB is above --google_max_mb {args.google_max_mb:g}")
    for n in (int(w) for w in args.workers.split(",")):
        modes.append((f"sharded x{n}", [inputs, f"--output_file={work / f'out_sharded_{n}' / 'records'}",
                                         "--sharded=true", f"--num_workers={n}"], work / f"out_sharded_{n}"))
    results = []
    for name, mode_args, outputs in modes:
        result = run_mode(name, [*mode_args, *common], outputs, megabytes)
        result["load_average"] = os.getloadavg()[0]
        results.append(result)
        print(json.dumps(result), flush=True)
        shutil.rmtree(outputs, ignore_errors=True)  # the records of a 1 GB corpus take several GB
    print(f"\n{megabytes:.0f} MB corpus, dupe_factor {args.dupe_factor}:")
    print(f"{'mode':<32} {'wall s':>8} {'instances':>10} {'inst/s':>8} {'MB/s':>6} {'peak PSS MB':>12} "
          f"{'max 1-proc RSS MB':>18} {'load':>5}")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:<32} {r['seconds']:>8.0f}  failed: {r['error']} (peak PSS {r['peak_pss_mb']:.0f} MB)")
            continue
        print(f"{r['mode']:<32} {r['seconds']:>8.0f} {r['instances']:>10} {r['instances_per_s']:>8.0f} "
              f"{r['mb_per_s']:>6.2f} {r['peak_pss_mb']:>12.0f} {r['peak_single_rss_mb']:>18.0f} "
              f"{r['load_average']:>5.2f}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"largest resident set of any child process (getrusage RUSAGE_CHILDREN): {children:.0f} MB")


if __name__ == "__main__":
    main()
