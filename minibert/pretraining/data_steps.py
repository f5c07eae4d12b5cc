"""The data subcommands before training: corpus (data sets -> Google's text format), vocab (a
WordPiece vocab.txt) and create_data (Google's create_pretraining_data.py, or one process per shard).

Each takes its config and returns a report; what it did is reported on stdout through tqdm.write,
as RunContext.say does for a training run, so the progress bars stay intact.
"""

import glob
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from minibert.data import corpora
from minibert.data.pretraining_corpus import (SPLITTERS, CorpusReport, corpus_inputs, expand_sources, manifest_path,
                                              write_corpus)
from minibert.data.pretraining_instances import InstanceSettings
from minibert.data.pretraining_shards import (MANIFEST_SUFFIX, Job, check_one_set, check_shards, earlier_shards,
                                              remove_paths, run_job, run_jobs, shard_output, shard_seed)
from minibert.data.pretraining_records import NATIVE_FORMAT, is_tfrecord, manifest_of
from minibert.errors import ConfigError, DataError
from minibert.files import sha256_file
from minibert.output_paths import check_output_file, check_output_folder, is_records_folder
from minibert.pretraining.config import CorpusConfig, CreateDataConfig, VocabConfig
from minibert.text.tokenization import FullTokenizer
from minibert.text.vocab_building import VocabReport, build_vocab

say = tqdm.write


def expand_files(spec: str, flag: str) -> list[Path]:
    """Comma-separated paths or globs (Google's --input_file) -> existing paths, in the given order."""
    paths = []
    for pattern in filter(None, (p.strip() for p in spec.split(","))):
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches or not all(Path(m).exists() for m in matches):
            raise ConfigError(f"--{flag}: {pattern} matches no file")
        paths += [Path(m) for m in matches]
    if not paths:
        raise ConfigError(f"--{flag} is required")
    check_one_set(paths, flag)
    return paths


def load_tokenizer(vocab_file: str | Path, do_lower_case: bool) -> FullTokenizer:
    try:
        return FullTokenizer(vocab_file, do_lower_case)
    except ValueError as e:  # the tokenizer names the file and what is wrong with it
        raise DataError(str(e)) from None


def build_corpus(cfg: CorpusConfig) -> CorpusReport:
    """The data sets' text as one sentence per line, a blank line between documents, and its manifest."""
    splits = tuple(s.strip() for s in cfg.splits.split(",") if s.strip())
    if not splits or not set(splits) <= {"train", "dev", "test"}:
        raise ConfigError(f"--splits={cfg.splits!r}: use train, dev and/or test")
    data_dir = Path(cfg.data_dir)
    check_output_file(cfg.output_file, "--output_file", corpus_inputs(cfg.sources, data_dir))
    if cfg.sources == "bbc_news":
        corpora.ensure_bbc_news(data_dir / "bbc_news", say)
    sources = expand_sources(cfg.sources, data_dir, splits)
    if splits != ("train",):
        say(f"note: the corpus includes {', '.join(s for s in splits if s != 'train')} text (recorded in the manifest)")
    segmenter = "chinese 。？！" if cfg.language == "zh" else f"spacy {cfg.spacy_model or 'blank en + sentencizer'}"
    if cfg.shard_size_mb < 0:
        raise ConfigError(f"--shard_size_mb={cfg.shard_size_mb}: use 0 (one file) or a positive size")
    splitter = SPLITTERS[cfg.language](cfg.spacy_model)
    with tqdm(desc="documents", unit="doc") as bar:
        report = write_corpus(Path(cfg.output_file), sources, splitter, segmenter, data_dir, bar.update,
                              round(cfg.shard_size_mb * 1e6))
    for note in report.notes:
        say(note)
    for source in report.sources:
        say(f"{source['file']}: {source['documents']} documents"
            + (f", {source['dropped_overlap']} dropped by the Yelp overlap rule" if source["dropped_overlap"] else ""))
    where = (cfg.output_file if len(report.files) == 1 else
             f"{len(report.files)} shards {report.files[0]} .. {report.files[-1]}")
    say(f"wrote {report.documents} documents, {report.sentences} sentences to {where} "
        f"(manifest {manifest_path(Path(cfg.output_file))})")
    return report


def build_vocabulary(cfg: VocabConfig) -> VocabReport:
    """A WordPiece vocab.txt learned with sentencepiece, measured on held-out lines."""
    inputs = expand_files(cfg.input_file, "input_file")
    check_output_file(cfg.output_file, "--output_file", [("--input_file", path) for path in inputs])
    start = time.time()
    report = build_vocab(inputs, Path(cfg.output_file), cfg.vocab_size, cfg.do_lower_case, cfg.num_unused,
                         cfg.heldout_every, cfg.model_type, cfg.max_sentences)
    say(f"wrote {cfg.output_file}: {report.size} entries ({report.characters} characters) in {time.time() - start:.1f}s")
    if report.size < cfg.vocab_size:
        say(f"warning: --vocab_size {cfg.vocab_size} asked for more entries than the text gives: the vocabulary "
            f"has {report.size}")
    if report.heldout_words:
        say(f"held-out text ({report.heldout_words} words): {100 * report.unknown_rate:.3f}% [UNK] tokens, "
            f"{report.tokens_per_word:.3f} WordPiece tokens per word")
    return report


def create_data(cfg: CreateDataConfig) -> list[int]:
    """Instances from text exactly as Google's script (or one shard per input file); returns the
    number of records per output."""
    inputs = expand_files(cfg.input_file, "input_file")
    outputs = [p.strip() for p in cfg.output_file.split(",") if p.strip()]
    if not outputs or not cfg.vocab_file:
        raise ConfigError("--output_file and --vocab_file are required")
    if cfg.num_workers < 1 or (cfg.num_workers > 1 and not cfg.sharded):
        raise ConfigError(f"--num_workers={cfg.num_workers}: use 1, or more with --sharded=true (Google's "
                          f"single run shuffles all inputs together in one process)")
    settings = InstanceSettings(cfg.max_seq_length, cfg.max_predictions_per_seq, cfg.masked_lm_prob,
                                cfg.short_seq_prob, cfg.dupe_factor, cfg.do_whole_word_mask, cfg.next_sentence)
    settings.check()  # every check before the long work starts
    read = [("--input_file", path) for path in inputs] + [("--vocab_file", cfg.vocab_file)]
    count = len(inputs) if cfg.sharded else 1
    for output in (shard_output(o, k, count) if cfg.sharded else o for o in outputs for k in range(count)):
        check_records_output(output, read)
    tokenizer = load_tokenizer(cfg.vocab_file, cfg.do_lower_case)
    # The vocabulary's digest: pretrain.py train refuses the records with another vocab.txt.
    manifest = {"create_data": asdict(cfg), "vocab_size": len(tokenizer.vocab),
                "vocab_sha256": sha256_file(cfg.vocab_file)}
    if cfg.sharded:
        return create_shards(cfg, inputs, outputs, settings, manifest)
    job = Job(tuple(map(str, inputs)), tuple(outputs), cfg.random_seed, manifest)
    with tqdm(desc="instances", unit="doc") as bar:
        def on_read(documents):  # sizes the bar once the text is read; changes nothing else
            bar.total = len(documents) * settings.dupe_factor
            bar.write(f"read {len(documents)} documents, {len(documents.sentence_ends)} sentences, "
                      f"{len(documents.tokens)} tokens")
        report = run_job(job, settings, tokenizer, on_read, bar.update)
    for path, count in zip(outputs, report.counts):
        say(f"wrote {count} records to {path}")
    say(f"{report.instances} instances in {report.seconds:.1f}s ({report.instances / report.seconds:.0f} instances/s)")
    return list(report.counts)


def check_records_output(output: str, inputs: list[tuple[str, str | Path]]) -> None:
    """create_data writes a .tfrecord file (replacing one that exists, as Google's script does) or a
    records folder, which may be new, empty or an earlier create_data output (its manifest.json);
    any other folder, a file where a folder goes and an input (or a folder holding one) are refused."""
    if is_tfrecord(output):
        check_output_file(output, "--output_file", inputs)
    else:
        check_output_folder(output, "--output_file", lambda folder: is_records_folder(folder, NATIVE_FORMAT),
                            "create_data's records", inputs, "a name without .tfrecord is a records folder")


def earlier_records(output: str, outputs: list[str]) -> list[Path]:
    """The shards of an earlier `create_data --sharded` of this name that the new set will not
    overwrite (another count), checked before any work: each must be create_data's (a records folder,
    or a .tfrecord file with its manifest), so replacing the set never deletes anything else."""
    earlier = earlier_shards(output, ".tfrecord" if is_tfrecord(output) else "", outputs)
    for path in earlier:
        ours = (is_records_folder(path, NATIVE_FORMAT) if path.is_dir() else
                path.name.endswith(MANIFEST_SUFFIX) or manifest_of(path).is_file())
        if not ours:
            raise ConfigError(f"--output_file {output}: {path} is named as one of its shards but create_data did not "
                              "write it (no manifest); it would be removed with the earlier set: move it away")
    return earlier


def create_shards(cfg: CreateDataConfig, inputs: list[Path], outputs: list[str], settings: InstanceSettings,
                  manifest: dict) -> list[int]:
    """--sharded: input file k -> OUTPUT-0000k-of-0000n, seed shard_seed(random_seed, k), in a pool."""
    if len(outputs) != 1:
        raise ConfigError("--sharded writes one output per input file, named after one --output_file "
                          f"(got {len(outputs)} comma-separated outputs)")
    n = len(inputs)
    jobs = [Job((str(path),), (shard_output(outputs[0], k, n),), shard_seed(cfg.random_seed, k),
                {**manifest, "shard": {"index": k, "count": n, "input": str(path),
                                       "random_seed": shard_seed(cfg.random_seed, k)}})
            for k, path in enumerate(inputs)]
    check_shards(inputs, [out for job in jobs for out in job.outputs], cfg.num_workers)
    earlier = earlier_records(outputs[0], [out for job in jobs for out in job.outputs])
    start, megabytes = time.time(), sum(p.stat().st_size for p in inputs) / 1e6
    with tqdm(total=round(megabytes, 1), desc=f"shards ({cfg.num_workers} processes)", unit="MB") as bar:
        reports = run_jobs(jobs, settings, cfg.vocab_file, cfg.do_lower_case, cfg.num_workers,
                           lambda report: bar.update(round(report.text_bytes / 1e6, 1)))
    seconds = time.time() - start
    remove_paths(earlier)  # the new set is complete: the earlier one of this name goes, whole
    if earlier:
        say(f"removed {len(earlier)} files and folders of an earlier set of shards named {outputs[0]}")
    instances = sum(r.instances for r in reports)
    say(f"wrote {n} shards {shard_output(outputs[0], 0, n)} .. {shard_output(outputs[0], n - 1, n)}: "
        f"{sum(r.documents for r in reports)} documents, {instances} instances")
    say(f"{instances} instances from {megabytes:.1f} MB of text in {seconds:.1f}s ({instances / seconds:.0f} "
        f"instances/s, {megabytes / seconds:.2f} MB/s)")
    return [count for report in reports for count in report.counts]
