"""create_data at scale: --sharded (one input file per job, any number of worker processes), records
written in chunks, masked-LM-only instances (--next_sentence=false), and train reading the result."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import pretrain
from minibert.checkpoints.tfrecord import read_examples
from minibert.data import pretraining_records
from minibert.data.pretraining_instances import InstanceSettings, single_segment_instances
from minibert.data.pretraining_records import read_records, write_records
from minibert.data.pretraining_shards import shard_output, shard_seed
from minibert.pretraining.config import RecordOptions
from minibert.errors import ConfigError
from minibert.pretraining.model_setup import load_stream

from helpers import RECORDS, SAMPLE_TEXT, VOCAB, VOCAB_FILE, google_features, google_instances, make_documents

SHAPE = ["--max_seq_length=64", "--max_predictions_per_seq=10", "--dupe_factor=3"]


@pytest.fixture
def shards(tmp_path) -> list[Path]:
    """Google's sample_text.txt cut into three files, one document each."""
    lines = SAMPLE_TEXT.read_text().split("\n")
    paths = []
    for k, (first, last) in enumerate([(0, 3), (4, 17), (18, len(lines))]):
        paths.append(tmp_path / f"part-{k}.txt")
        paths[-1].write_text("\n".join(lines[first:last]).strip("\n") + "\n")
    return paths


def create(inputs, output, *flags):
    return pretrain.main(["create_data", f"--input_file={','.join(map(str, inputs))}", f"--output_file={output}",
                          f"--vocab_file={VOCAB_FILE}", *SHAPE, *flags])


def examples(path) -> list[dict]:
    return [{k: f.values for k, f in ex.items()} for ex in read_examples(path)]


def test_shards_are_the_same_whatever_the_number_of_workers(shards, tmp_path):
    counts = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}" / "r.tfrecord"
        counts[workers] = create(shards, out, "--sharded=true", f"--num_workers={workers}")
    assert counts[1] == counts[2] == counts[3] and len(counts[1]) == 3 and min(counts[1]) > 0
    for k in range(3):
        name = Path(shard_output("r.tfrecord", k, 3))
        assert name.name == f"r-0000{k}-of-00003.tfrecord"
        first = (tmp_path / "w1" / name).read_bytes()
        assert first == (tmp_path / "w2" / name).read_bytes() == (tmp_path / "w3" / name).read_bytes()


def test_each_shard_is_googles_run_on_its_file_with_its_seed(shards, tmp_path):
    create(shards, tmp_path / "sharded" / "r.tfrecord", "--sharded=true", "--num_workers=2")
    for k, path in enumerate(shards):
        alone = tmp_path / f"alone{k}.tfrecord"
        create([path], alone, f"--random_seed={shard_seed(12345, k)}")  # Google's one-process path
        assert examples(tmp_path / "sharded" / f"r-0000{k}-of-00003.tfrecord") == examples(alone)
        manifest = json.loads((tmp_path / "sharded" / f"r-0000{k}-of-00003.tfrecord.manifest.json").read_text())
        assert manifest["shard"] == {"index": k, "count": 3, "input": str(path), "random_seed": shard_seed(12345, k)}
        assert manifest["next_sentence"] is True and manifest["records"] == len(examples(alone))


def test_shard_seeds_differ_for_every_seed_and_shard():
    seeds = {shard_seed(seed, k) for seed in range(50) for k in range(1000)}
    assert len(seeds) == 50 * 1000


@pytest.mark.parametrize("output", ["out.tfrecord", "records"])
def test_chunked_writing_keeps_googles_records(tmp_path, output):
    """Records are padded and written 7 at a time (chunks of 4096 otherwise): still Google's file."""
    instances, _ = google_instances("sample_text_64")
    assert len(instances) % 7 != 0 and len(instances) > 2 * 7  # several chunks, the last one shorter
    write_records([tmp_path / output], instances, 64, 10, {"next_sentence": True}, chunk_size=7)
    if output.endswith(".tfrecord"):
        mine = examples(tmp_path / output)
    else:
        records = read_records(tmp_path / output, 64, 10)
        mine = [{name: np.atleast_1d(a[row]).tolist() for name, a in records.arrays.items()} for row in range(len(records))]
    assert mine == google_features("sample_text_64")


def test_train_reads_sharded_folders_and_tfrecords_by_glob_and_list(shards, tmp_path):
    create(shards, tmp_path / "f" / "r", "--sharded=true", "--num_workers=2")
    counts = create(shards, tmp_path / "t" / "r.tfrecord", "--sharded=true")
    cfg = RecordOptions(max_seq_length=64, max_predictions_per_seq=10, shuffle=False)
    folders = load_stream(f"{tmp_path}/f/r-*", cfg, 12345, 30522, None, "input_file")
    # The glob also matches the TFRecords' manifests, which are skipped.
    files = load_stream(f"{tmp_path}/t/r-*", cfg, 12345, 30522, None, "input_file")
    listed = load_stream(",".join(str(tmp_path / "t" / f"r-0000{k}-of-00003.tfrecord") for k in range(3)),
                         cfg, 12345, 30522, None, "input_file")
    assert len(folders) == len(files) == len(listed) == sum(counts)
    assert all(np.array_equal(folders.batch(0, len(folders))[name], files.batch(0, len(files))[name])
               for name in pretraining_records.FEATURES)


@pytest.mark.parametrize("output", ["r.tfrecord", "r"])
def test_a_shard_set_replaces_the_earlier_one_of_its_name_whole(shards, tmp_path, script_error, output, capsys):
    """Three shards, then two of the same name: the third and its manifest go, and a glob reads only
    the new set; a glob over two sets is refused; a shard-named file create_data did not write stays
    and stops the run before any work."""
    out = tmp_path / "out"
    create(shards, out / output, "--sharded=true")
    counts = create(shards[:2], out / output, "--sharded=true")
    suffix = ".tfrecord" if output.endswith(".tfrecord") else ""
    names = [f"r-0000{k}-of-00002{suffix}" for k in range(2)]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + [f"{n}.manifest.json" for n in names if suffix])
    assert "removed" in capsys.readouterr().out
    cfg = RecordOptions(max_seq_length=64, max_predictions_per_seq=10, shuffle=False)
    assert len(load_stream(f"{out}/r-*", cfg, 12345, 30522, None, "input_file")) == sum(counts)
    create(shards, tmp_path / "other" / output, "--sharded=true")  # an earlier set copied beside the new one
    for path in (tmp_path / "other").glob("r-00002-of-00003*"):
        path.rename(out / path.name)
    with pytest.raises(ConfigError, match=r"--input_file: matches shards of 2 sets named .*out/r: "
                                          r"r-\*-of-00002.*, r-\*-of-00003"):
        load_stream(f"{out}/r-*", cfg, 12345, 30522, None, "input_file")
    for path in out.glob("r-00002-of-00003*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    stranger = out / f"r-00007-of-00009{suffix}"  # no manifest: a user's file or folder, not create_data's
    stranger.write_text("x") if suffix else stranger.mkdir()
    with script_error(r"r-00007-of-00009.* is named as one of its shards but create_data did not write it"):
        create(shards, out / output, "--sharded=true")
    assert stranger.exists() and not (out / f"r-00000-of-00003{suffix}").exists()


def test_records_without_a_manifest_train_with_a_warning(shards, tmp_path):
    create(shards, tmp_path / "r.tfrecord")
    said = []
    cfg = RecordOptions(max_seq_length=64, max_predictions_per_seq=10, shuffle=False)
    load_stream(str(tmp_path / "r.tfrecord"), cfg, 12345, 30522, None, "input_file", VOCAB_FILE, said.append)
    assert said == []  # its manifest names the vocabulary's digest, which is checked
    (tmp_path / "r.tfrecord.manifest.json").unlink()
    load_stream(str(tmp_path / "r.tfrecord"), cfg, 12345, 30522, None, "input_file", VOCAB_FILE, said.append)
    assert said == [f"warning: {tmp_path / 'r.tfrecord'}: no manifest records the vocab.txt it was made with "
                    f"(Google's records, or copied without their manifest): that it is {VOCAB_FILE} cannot be checked"]


# ---------------------------------------------------------------------------------------------
# Masked-LM-only instances: [CLS] contiguous sentences of one document [SEP]


def unmasked(instance) -> list[int]:
    tokens = list(instance.tokens)
    for position, label in zip(instance.masked_positions, instance.masked_labels):
        tokens[position] = label
    return tokens


def sentence_ids(d: int, s: int, length: int) -> list[int]:
    return [1000 * (d + 1) + 10 * s + t for t in range(length)]  # make_documents' tokens


def test_single_segments_pack_whole_sentences_up_to_the_length():
    documents = make_documents([[3, 4, 5, 2]])
    settings = InstanceSettings(max_seq_length=12, max_predictions_per_seq=5, short_seq_prob=0.0, next_sentence=False)
    instances = single_segment_instances(documents, 0, settings, VOCAB, random.Random(0))
    # 10 tokens fit between [CLS] and [SEP]: 3 + 4 = 7, and 7 + 5 > 10 starts the next instance.
    assert [unmasked(i) for i in instances] == [
        [2, *sentence_ids(0, 0, 3), *sentence_ids(0, 1, 4), 3],
        [2, *sentence_ids(0, 2, 5), *sentence_ids(0, 3, 2), 3]]
    for instance in instances:  # one segment, label 0, Google's count: round(9 * 0.15) = 1
        assert instance.a_length == len(instance.tokens) == 9 and instance.is_random_next is False
        assert len(instance.masked_positions) == 1 and instance.masked_positions[0] not in (0, 8)


def test_a_sentence_longer_than_an_instance_is_cut_into_pieces_and_nothing_is_dropped():
    documents = make_documents([[2, 23, 4]])
    settings = InstanceSettings(max_seq_length=12, max_predictions_per_seq=5, short_seq_prob=0.0, next_sentence=False)
    instances = single_segment_instances(documents, 0, settings, VOCAB, random.Random(0))
    long = sentence_ids(0, 1, 23)
    assert [unmasked(i)[1:-1] for i in instances] == [
        sentence_ids(0, 0, 2), long[:10], long[10:20], long[20:] + sentence_ids(0, 2, 4)]


def test_short_target_and_masks_come_from_googles_rules():
    documents = make_documents([[3] * 30])
    settings = InstanceSettings(max_seq_length=40, max_predictions_per_seq=20, short_seq_prob=1.0, next_sentence=False)
    rng = random.Random(5)
    instances = single_segment_instances(documents, 0, settings, VOCAB, rng)
    replay = random.Random(5)
    replay.random()
    target = replay.randint(2, 38)  # drawn once per document, as Google's create_instances_from_document
    assert all(len(i.tokens) - 2 <= max(target, 3) for i in instances)
    assert sum(len(i.tokens) - 2 for i in instances) == 90  # every token once
    for i in instances:
        assert len(i.masked_positions) == min(20, max(1, round(len(i.tokens) * 0.15)))


def test_mlm_only_records_say_so_and_train_needs_the_same_flag(shards, tmp_path, script_error):
    create(shards, tmp_path / "mlm" / "r.tfrecord", "--next_sentence=false", "--sharded=true")
    create(shards, tmp_path / "mlm" / "records", "--next_sentence=false")
    records = read_records(tmp_path / "mlm" / "records", 64, 10)
    assert records.next_sentence is False
    assert json.loads((tmp_path / "mlm" / "records" / "manifest.json").read_text())["next_sentence"] is False
    assert not records.arrays["segment_ids"].any() and not records.arrays["next_sentence_labels"].any()
    lengths = records.arrays["input_mask"].sum(1)
    ids = records.arrays["input_ids"]
    assert (ids[:, 0] == 101).all() and (ids[np.arange(len(ids)), lengths - 1] == 102).all()  # [CLS] .. [SEP]
    assert ((ids == 102).sum(1) == 1).all()  # one segment: one [SEP]
    assert read_records(tmp_path / "mlm" / "r-00000-of-00003.tfrecord", 64, 10).next_sentence is False
    config = {"vocab_size": 30522, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 8, "max_position_embeddings": 64}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    base = ["train", f"--vocab_file={VOCAB_FILE}", f"--output_dir={tmp_path / 'run'}", "--max_seq_length=64",
            "--max_predictions_per_seq=10", f"--bert_config_file={tmp_path / 'bert_config.json'}", "--device=cpu"]
    with script_error(r"records: masked-LM-only records \(create_data --next_sentence=false\) have no "
                      r"next-sentence labels; train them with --next_sentence=false"):
        pretrain.main([*base, f"--input_file={tmp_path / 'mlm' / 'records'}"])
    with script_error(r"examples.tfrecord: sentence-pair records .* with --next_sentence=false; make masked-LM-only "
                      r"records with create_data --next_sentence=false"):
        pretrain.main([*base, f"--input_file={RECORDS}",
                       "--next_sentence=false"])


# ---------------------------------------------------------------------------------------------
# Bad input: one line, nothing written


def test_bad_shards_and_options_are_refused_before_any_work(shards, tmp_path, script_error):
    out = tmp_path / "out" / "r"
    with script_error(r"missing.txt matches no file"):
        create([*shards, tmp_path / "missing.txt"], out, "--sharded=true")
    (tmp_path / "empty.txt").write_text("\n  \n\n")
    with script_error(r"empty.txt: no text \(every line is empty\): an empty shard"):
        create([shards[0], tmp_path / "empty.txt"], out, "--sharded=true", "--num_workers=2")
    with script_error(r"--num_workers=0: use 1, or more with --sharded=true"):
        create(shards, out, "--sharded=true", "--num_workers=0")
    with script_error(r"--num_workers=2: use 1, or more with --sharded=true"):
        create(shards, out, "--num_workers=2")
    with script_error(r"--sharded writes one output per input file, named after one --output_file"):
        create(shards, f"{out}a.tfrecord,{out}b.tfrecord", "--sharded=true")
    assert not (tmp_path / "out").exists()


def test_an_error_in_a_worker_stops_the_run_with_its_message(shards, tmp_path, script_error):
    shards[1].write_bytes(b"fine line.\nbroken \xff byte\n")
    with script_error(r"part-1.txt:2: not UTF-8"):
        create(shards, tmp_path / "out" / "r", "--sharded=true", "--num_workers=2")
    assert not (tmp_path / "out" / "r-00001-of-00003").exists()
