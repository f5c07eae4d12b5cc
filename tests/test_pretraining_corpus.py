"""pretrain.py corpus: Google's text format from the project's splits, domain sets, the Yelp rule,
training splits only, sentence splitting, and bad input."""

import json
from pathlib import Path

import pytest

import pretrain
from minibert.data.corpora import title_dash_description
from minibert.data.pretraining_corpus import DOMAINS, ENGLISH_DATASETS, chinese_splitter, expand_sources


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "label": "x"}) + "\n" for t in texts))


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    for name in ENGLISH_DATASETS:
        for split in ("train", "dev", "test"):
            write_jsonl(root / name / f"{split}.jsonl", [f"{name} {split} text one. It has two sentences!"])
    write_jsonl(root / "yelp_full" / "train.jsonl", ["Great food. Would eat again.", "Shared review. In both sets.",
                                                     "Slow service?   Yes,\nvery slow."])
    write_jsonl(root / "yelp_polarity" / "test.jsonl", ["Shared  review. In both sets.", "Only in the test set."])
    write_jsonl(root / "yelp_polarity" / "train.jsonl", ["Only in the test set.", "A polarity review."])
    write_jsonl(root / "yelp_full" / "test.jsonl", ["A polarity review."])
    return root


def corpus(data_dir: Path, out: Path, *flags: str) -> tuple[list[list[str]], dict]:
    pretrain.main(["corpus", f"--data_dir={data_dir}", f"--output_file={out}", *flags])
    documents = [block.split("\n") for block in out.read_text().split("\n\n") if block]
    return documents, json.loads(Path(f"{out}.manifest.json").read_text())


def test_within_task_corpus_is_one_sentence_per_line(data_dir, tmp_path):
    documents, manifest = corpus(data_dir, tmp_path / "c.txt", "--sources=imdb")
    assert documents == [["imdb train text one.", "It has two sentences!"]]
    assert manifest["splits"] == ["train"] and manifest["documents"] == 1 and manifest["sentences"] == 2
    assert (tmp_path / "c.txt").read_text().endswith("sentences!\n\n")  # a blank line after every document


def test_domains_and_cross_domain_use_the_training_splits_of_their_sets(data_dir):
    assert DOMAINS == {"sentiment": ("imdb", "yelp_polarity", "yelp_full"), "question": ("trec", "yahoo_answers"),
                       "topic": ("ag_news", "dbpedia")}
    assert [(n, s) for n, s, _ in expand_sources("topic", data_dir, ("train",))] == [("ag_news", "train"), ("dbpedia", "train")]


def test_cross_domain_never_includes_dev_or_test_text(data_dir, tmp_path):
    documents, manifest = corpus(data_dir, tmp_path / "c.txt", "--sources=all")
    text = "\n".join(line for doc in documents for line in doc)
    assert {s["name"] for s in manifest["sources"]} == set(ENGLISH_DATASETS)
    for name in ENGLISH_DATASETS:
        assert f"{name} dev" not in text and f"{name} test" not in text


def test_other_splits_only_when_asked_and_recorded(data_dir, tmp_path):
    documents, manifest = corpus(data_dir, tmp_path / "c.txt", "--sources=trec", "--splits=train,test")
    assert documents == [["trec train text one.", "It has two sentences!"], ["trec test text one.", "It has two sentences!"]]
    assert manifest["splits"] == ["test", "train"]


def test_yelp_overlap_rule(data_dir, tmp_path):
    documents, manifest = corpus(data_dir, tmp_path / "c.txt", "--sources=yelp_full,yelp_polarity")
    flat = [line for doc in documents for line in doc]
    assert "Shared review." not in flat  # in Yelp P.'s test set (whitespace aside)
    assert "A polarity review." not in flat  # in Yelp F.'s test set
    assert "Only in the test set." in flat  # Yelp P. training text that is only in its own test set stays
    assert ["Slow service?", "Yes,", "very slow."] in documents  # spaCy splits, line breaks end sentences
    dropped = {s["name"]: s["dropped_overlap"] for s in manifest["sources"]}
    assert dropped == {"yelp_full": 1, "yelp_polarity": 1}


def test_chinese_sentences_end_at_full_stop_question_and_exclamation_marks():
    (sentences,) = list(chinese_splitter()(["今天天气很好。你去吗？去！好的"]))
    assert sentences == ["今天天气很好。", "你去吗？", "去！", "好的"]


def test_user_text_files(tmp_path):
    (tmp_path / "mine.txt").write_text("First document. Two sentences.\n\nSecond document.\n")
    documents, manifest = corpus(tmp_path / "nodata", tmp_path / "c.txt", f"--sources={tmp_path / 'mine.txt'}")
    assert documents == [["First document.", "Two sentences."], ["Second document."]]
    assert manifest["sources"][0]["split"] == "user"


def test_bad_input_names_file_and_line_and_writes_nothing(data_dir, tmp_path, script_error):
    (data_dir / "trec" / "train.jsonl").write_bytes(b'{"text": "fine."}\n{"text": "bad \xff"}\n')
    with script_error(r"trec/train.jsonl:2: not UTF-8"):
        corpus(data_dir, tmp_path / "c.txt", "--sources=trec")
    write_jsonl(data_dir / "trec" / "train.jsonl", ["   "])
    with script_error(r"no text to write"):
        corpus(data_dir, tmp_path / "c.txt", "--sources=trec")
    with script_error(r"'nonsense' is not a data set"):
        corpus(data_dir, tmp_path / "c.txt", "--sources=nonsense")
    assert not list(tmp_path.glob("c.txt*"))


def test_shards_end_at_documents_and_hold_the_same_text(tmp_path, script_error):
    texts = [f"Document {d} begins here. " + "More words follow. " * d for d in range(7)]
    (tmp_path / "mine.txt").write_text("\n".join(texts) + "\n")
    _, whole = corpus(tmp_path / "nodata", tmp_path / "c.txt", f"--sources={tmp_path / 'mine.txt'}")
    pretrain.main(["corpus", f"--sources={tmp_path / 'mine.txt'}", f"--output_file={tmp_path / 's' / 'c.txt'}",
                   "--shard_size_mb=0.0001"])  # 100 bytes: a shard closes once it holds at least that much
    manifest = json.loads((tmp_path / "s" / "c.txt.manifest.json").read_text())
    paths = [Path(p) for p in manifest["files"]]
    assert [p.name for p in paths] == [f"c-{k:05d}-of-{len(paths):05d}.txt" for k in range(len(paths))]
    assert len(paths) > 2 and sorted((tmp_path / "s").iterdir()) == sorted([*paths, tmp_path / "s" / "c.txt.manifest.json"])
    parts = [p.read_text() for p in paths]
    assert "".join(parts) == (tmp_path / "c.txt").read_text()  # the same corpus, cut between documents
    for part in parts[:-1]:
        blocks = part.split("\n\n")[:-1]
        assert part.endswith("\n\n") and len(part.encode()) >= 100 > len(part.encode()) - len(blocks[-1]) - 2
    assert manifest["documents"] == whole["documents"] == 7
    # Fewer shards under the same name: the earlier set goes whole, so the documented glob reads one corpus.
    pretrain.main(["corpus", f"--sources={tmp_path / 'mine.txt'}", f"--output_file={tmp_path / 's' / 'c.txt'}",
                   "--shard_size_mb=0.0003"])
    fewer = [Path(p) for p in json.loads((tmp_path / "s" / "c.txt.manifest.json").read_text())["files"]]
    assert 1 < len(fewer) < len(paths)
    assert sorted((tmp_path / "s").glob("c-*")) == sorted(fewer)
    assert "".join(p.read_text() for p in fewer) == (tmp_path / "c.txt").read_text()
    with script_error(r"--shard_size_mb=-1.0: use 0 \(one file\) or a positive size"):
        pretrain.main(["corpus", f"--sources={tmp_path / 'mine.txt'}", f"--output_file={tmp_path / 'x.txt'}",
                       "--shard_size_mb=-1"])


def test_ag_news_title_is_its_own_line_before_the_description_sentences(data_dir, tmp_path):
    """The paper's code (generate_corpus_agnews.py) writes the title column as one line, then the
    description's sentences; the fine-tuning text stays "title - description"."""
    rows = [["Stocks Fall. Oil Up (Reuters)", "Reuters - Stocks fell today. Oil rose."], ["", "No title here. Two."],
            ["Only a title", ""]]
    records = [{**title_dash_description(fields), "label": "Business"} for fields in rows]
    assert records[0]["text"] == "Stocks Fall. Oil Up (Reuters) - Reuters - Stocks fell today. Oil rose."
    (data_dir / "ag_news" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    documents, manifest = corpus(data_dir, tmp_path / "c.txt", "--sources=ag_news")
    assert documents == [["Stocks Fall. Oil Up (Reuters)", "Reuters - Stocks fell today.", "Oil rose."],
                         ["No title here.", "Two."], ["Only a title"]]
    assert manifest["sources"][0]["titles"] == 2 and manifest["notes"] == []
    # Records prepared before titles were kept: one text, and the manifest says so.
    write_jsonl(data_dir / "ag_news" / "train.jsonl", ["Old Title - Old text. More."])
    documents, manifest = corpus(data_dir, tmp_path / "old.txt", "--sources=ag_news")
    assert documents == [["Old Title - Old text.", "More."]] and "no record has a title" in manifest["notes"][0]
