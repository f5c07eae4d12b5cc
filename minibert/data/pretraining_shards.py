"""Pre-training records from text in jobs: Google's whole-corpus run, or one job per input file (shard).

A job is one run of Google's create_pretraining_data.py: read its input files as one text, make the
instances with one random.Random(seed), write them to its outputs. `create_data` runs

    one job      all inputs together, seed --random_seed: Google's script record for record (default)
    one per file each input file alone (a shard), seed shard_seed(--random_seed, index), written to
                 its own output (shard_output): in a process pool, so the peak memory is one shard
                 per worker instead of the corpus, and the result is the same for any number of
                 workers and any scheduling (each job depends only on its file and its seed)

Deviation from reference: Google's script shuffles the documents and instances of all its input
files together and draws random next sentences from any of them, so it holds the whole corpus in
one process. Per-file jobs give up mixing across files (no random next sentence comes from another
shard, a document never continues into the next file); Google's README itself advises splitting a
large corpus into files and running the script on each. Training shuffles all records again.
"""

import glob
import multiprocessing
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from minibert.data.pretraining_instances import Documents, InstanceSettings, Vocabulary, create_instances, read_documents
from minibert.data.pretraining_records import is_tfrecord, write_records
from minibert.errors import ConfigError, DataError
from minibert.text.tokenization import FullTokenizer


@dataclass(frozen=True)
class Job:
    """One run of Google's algorithm: these inputs read as one text, this seed, these outputs."""
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    seed: int
    manifest: dict  # written into every output's manifest (JSON values only)


@dataclass(frozen=True)
class JobReport:
    """What one job read and wrote."""
    outputs: tuple[str, ...]
    counts: tuple[int, ...]  # records per output
    documents: int
    sentences: int
    tokens: int
    text_bytes: int
    seconds: float

    @property
    def instances(self) -> int:
        return sum(self.counts)


def shard_seed(random_seed: int, index: int) -> int:
    """The seed of shard `index`: random_seed * 2**32 + index, distinct for every (seed, shard) pair,
    so shards never share a random stream and Google's script given this seed reproduces a shard."""
    return random_seed * 2**32 + index


def shard_name(path: str, index: int, count: int, suffix: str = "") -> str:
    """TensorFlow's shard names: ("corpora/x.txt", 3, 16, ".txt") -> corpora/x-00003-of-00016.txt,
    ("records/x", 3, 16) -> records/x-00003-of-00016; a glob such as x-*-of-00016* finds them all."""
    stem = path[:-len(suffix)] if suffix and path.endswith(suffix) else path.rstrip("/")
    return f"{stem}-{index:05d}-of-{count:05d}{suffix if path.endswith(suffix) else ''}"


def shard_output(output_file: str, index: int, count: int) -> str:
    """records/x.tfrecord -> records/x-00003-of-00016.tfrecord; a records folder records/x ->
    records/x-00003-of-00016."""
    return shard_name(output_file, index, count, ".tfrecord" if is_tfrecord(output_file) else "")


# TensorFlow's shard names as shard_name writes them: STEM-INDEX-of-COUNT then an optional suffix.
SHARD_NAME = re.compile(r"(?P<stem>.+)-(?P<index>[0-9]{5})-of-(?P<count>[0-9]{5})(?P<suffix>(\.[^/]*)?)")
MANIFEST_SUFFIX = ".manifest.json"  # beside a corpus or a .tfrecord file (pretraining_records.manifest_of)


def shard_set(path: str | Path) -> tuple[tuple[str, str], int] | None:
    """((stem, suffix), count) of a shard's name (its manifest's name counts as the shard's), or
    None for a name that is not a shard's."""
    text = str(path).removesuffix(MANIFEST_SUFFIX)
    match = SHARD_NAME.fullmatch(text)
    return ((match["stem"], match["suffix"]), int(match["count"])) if match else None


def check_one_set(paths: Sequence[str | Path], flag: str) -> None:
    """Refuse files that hold shards of two sets of one name (x-*-of-00003 beside x-*-of-00005: an
    earlier run's set beside a later one's, which a glob such as x-* reads together)."""
    counts: dict[tuple[str, str], set[int]] = {}
    for path in paths:
        found = shard_set(path)
        if found is not None:
            counts.setdefault(found[0], set()).add(found[1])
    for (stem, suffix), found in counts.items():
        if len(found) > 1:
            sets = ", ".join(f"{Path(stem).name}-*-of-{count:05d}{suffix}" for count in sorted(found))
            raise ConfigError(f"--{flag}: matches shards of {len(found)} sets named {stem}: {sets}; give one set "
                              "(an earlier run's shards beside a later one's?)")


def earlier_shards(output: str, suffix: str, keep: Sequence[str | Path]) -> list[Path]:
    """Shards named after `output` (shard_name's names for any count, and their manifests) other
    than `keep`: an earlier set of that name, which the set being written replaces."""
    stem = output[:-len(suffix)] if suffix and output.endswith(suffix) else output.rstrip("/")
    digits = "[0-9]" * 5
    pattern = f"{glob.escape(stem)}-{digits}-of-{digits}{glob.escape(suffix if output.endswith(suffix) else '')}"
    kept = {Path(p).resolve() for p in keep}
    found = glob.glob(pattern) + glob.glob(pattern + MANIFEST_SUFFIX)
    return sorted(Path(p) for p in found
                  if Path(p.removesuffix(MANIFEST_SUFFIX)).resolve() not in kept and shard_set(p) is not None)


def remove_paths(paths: Sequence[Path]) -> None:
    """Delete files and folders (an earlier shard set, after the new one is complete)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def has_text(path: Path) -> bool:
    """Whether the file has a line that is not blank (read only up to the first one)."""
    with open(path, "rb") as f:
        return any(line.strip() for line in f)


def check_shards(inputs: Sequence[Path], outputs: Sequence[str], num_workers: int) -> None:
    """Refuse what would fail in the middle of the work: no workers, an input without text (a shard
    whose Google run would stop at "no documents"), an output that would overwrite an input."""
    if num_workers < 1:
        raise ConfigError(f"--num_workers={num_workers}: need at least 1 process")
    for path in inputs:
        if not has_text(path):
            raise DataError(f"{path}: no text (every line is empty): an empty shard")
    clash = {str(Path(p).resolve()) for p in outputs} & {str(p.resolve()) for p in inputs}
    if clash:
        raise ConfigError(f"--output_file: {sorted(clash)[0]} is also an input")


def run_job(job: Job, settings: InstanceSettings, tokenizer: FullTokenizer,
            on_read: Callable[[Documents], None] | None = None,
            progress: Callable[[int], None] | None = None) -> JobReport:
    """Read, make instances (create_training_instances), write. `on_read` sees the documents once
    read; `progress` is called with the number of documents done (dupe_factor rounds)."""
    start = time.time()
    documents = read_documents(job.inputs, tokenizer)
    if len(documents) == 0:
        raise DataError(f"{', '.join(job.inputs)}: no text (every line is empty)")
    if on_read is not None:
        on_read(documents)
    instances = create_instances(documents, settings, Vocabulary.of(tokenizer), random.Random(job.seed), progress)
    counts = write_records(job.outputs, instances, settings.max_seq_length, settings.max_predictions_per_seq,
                           {**job.manifest, "next_sentence": settings.next_sentence})
    return JobReport(job.outputs, tuple(counts), len(documents), len(documents.sentence_ends), len(documents.tokens),
                     sum(Path(p).stat().st_size for p in job.inputs), time.time() - start)


def _pool_job(task: tuple) -> JobReport:
    """run_job in a worker process; the tokenizer is rebuilt there from its file (checked already)."""
    job, settings, vocab_file, do_lower_case = task
    return run_job(job, settings, FullTokenizer(vocab_file, do_lower_case))


def run_jobs(jobs: Sequence[Job], settings: InstanceSettings, vocab_file: str, do_lower_case: bool,
             num_workers: int, done: Callable[[JobReport], None] | None = None) -> list[JobReport]:
    """Run independent jobs on `num_workers` processes; reports in job order, `done` called as each
    finishes. One worker runs them here, one after the other; more run in a pool, each worker one
    job at a time (a finished shard's arrays are freed, and large blocks go back to the system).
    The first error stops the pool; outputs of jobs that finished stay (each is complete)."""
    if num_workers == 1:
        tokenizer = FullTokenizer(vocab_file, do_lower_case)
        reports = []
        for job in jobs:
            reports.append(run_job(job, settings, tokenizer))
            if done is not None:
                done(reports[-1])
        return reports
    # spawn: each worker is a fresh interpreter (about two seconds to import torch with
    # minibert.files). A forked worker inherits the parent's locks as they are at the fork,
    # including process-shared ones (tqdm's), and was seen to hang on one under pytest.
    tasks = [(job, settings, vocab_file, do_lower_case) for job in jobs]
    by_output = {}
    with multiprocessing.get_context("spawn").Pool(min(num_workers, len(jobs))) as pool:
        for report in pool.imap_unordered(_pool_job, tasks):
            by_output[report.outputs] = report
            if done is not None:
                done(report)
    return [by_output[job.outputs] for job in jobs]
