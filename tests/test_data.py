"""minibert.data: each reader format and bad-row kind, labels, splits, subsets."""

import json
import os
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.data.examples import Example, LabelSet, encode_labels, read_examples, write_jsonl
from minibert.data.splits import few_shot_subset, stratified_split
from minibert.errors import DataError


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def read_error(path, **kwargs):
    with pytest.raises(DataError) as info:
        read_examples(path, **kwargs)
    return str(info.value)


# --- formats -------------------------------------------------------------------------------------

def test_jsonl_int_and_str_labels_and_pairs(tmp_path):
    path = write(tmp_path, "d.jsonl",
                 '{"text": "good", "label": 1}\n'
                 '\n'
                 '{"text": "bad", "label": "neg", "text_b": "really"}\r\n'
                 '{"text": "meh", "label": -3, "text_b": null}\n')
    examples, bad = read_examples(path)
    assert bad == []
    assert examples == [Example("good", None, "1", f"{path}:1"),
                        Example("bad", "really", "neg", f"{path}:3"),
                        Example("meh", None, "-3", f"{path}:4")]


def test_json_extension_and_custom_fields_and_bom(tmp_path):
    path = write(tmp_path, "d.json", b'\xef\xbb\xbf{"q": "a?", "p": "b.", "y": "yes"}\n')
    examples, _ = read_examples(path, text_field="q", text_b_field="p", label_field="y")
    assert examples == [Example("a?", "b.", "yes", f"{path}:1")]


def test_csv_quoted_commas_and_embedded_newlines(tmp_path):
    path = write(tmp_path, "d.csv",
                 'label,text,extra\n'
                 '2,"hello, world",x\n'
                 '1,"line one\nline two\r\nline three",y\n'
                 '\n'
                 '3,"say ""hi""",z\n')
    examples, bad = read_examples(path)
    assert bad == []
    assert examples == [Example("hello, world", None, "2", f"{path}:2"),
                        Example("line one\nline two\r\nline three", None, "1", f"{path}:3"),
                        Example('say "hi"', None, "3", f"{path}:7")]


def test_tsv_with_pairs(tmp_path):
    path = write(tmp_path, "d.tsv", "text\ttext_b\tlabel\nA, a.\tB\tentail\nC\t\"D\tE\"\tno\n")
    examples, _ = read_examples(path)
    assert examples == [Example("A, a.", "B", "entail", f"{path}:2"),
                        Example("C", "D\tE", "no", f"{path}:3")]


def test_csv_without_label_column_when_labels_not_required(tmp_path):
    path = write(tmp_path, "d.csv", "text\nfoo\n")
    assert read_examples(path, require_label=False)[0] == [Example("foo", None, None, f"{path}:2")]
    assert "header has no column 'label' (columns: text)" in read_error(path)


def test_txt(tmp_path):
    path = write(tmp_path, "d.txt", "first text\n\n  second, with \u2028 separator \r\nthird")
    examples, bad = read_examples(path, require_label=False, on_bad_row="skip")
    assert examples == [Example("first text", None, None, f"{path}:1"),
                        Example("  second, with \u2028 separator ", None, None, f"{path}:3"),
                        Example("third", None, None, f"{path}:4")]
    # A blank line is a text too (predictions follow the input's lines): a bad row, never dropped silently.
    assert bad == [f"{path}:2: empty line (a .txt file holds one text per line)"]
    assert read_error(path, require_label=False) == bad[0]
    assert read_error(write(tmp_path, "w.txt", "a\n \t\n"), require_label=False).endswith("w.txt:2: empty line "
                                                                                           "(a .txt file holds one "
                                                                                           "text per line)")
    message = read_error(path)  # labelled data (training, dev, test) cannot be a .txt file
    assert "a .txt file holds one text per line and no labels" in message and "require_label" not in message


def test_jsonl_unlabelled_rows_allowed_without_require_label(tmp_path):
    path = write(tmp_path, "d.jsonl",
                 '{"text": "a"}\n{"text": "b", "label": ""}\n{"text": "c", "label": 0}\n')
    examples, _ = read_examples(path, require_label=False)
    assert [e.label for e in examples] == [None, None, "0"]


# --- bad rows ------------------------------------------------------------------------------------

GOOD = '{"text": "ok", "label": "a"}\n'

JSONL_BAD_ROWS = [
    ('{"text": "x", "label": "a"\n', "malformed JSON"),
    ('["x", "a"]\n', "expected a JSON object, got list"),
    ('{"label": "a"}\n', "missing field 'text'"),
    ('{"text": 5, "label": "a"}\n', "field 'text' must be a string, got int"),
    ('{"text": " \\t ", "label": "a"}\n', "empty field 'text'"),
    ('{"text": "x"}\n', "missing or empty label field 'label'"),
    ('{"text": "x", "label": "  "}\n', "missing or empty label field 'label'"),
    ('{"text": "x", "label": null}\n', "missing or empty label field 'label'"),
    ('{"text": "x", "label": ["a"]}\n', "label must be a string or an integer, got list"),
    ('{"text": "x", "label": 1.5}\n', "label must be a string or an integer, got float 1.5"),
    ('{"text": "x", "label": true}\n', "label must be a string or an integer, got bool"),
    ('{"text": "x", "text_b": "", "label": "a"}\n', "field 'text_b' must be a non-empty string"),
    # json.loads alone keeps the last of two equal keys: a silently relabelled row.
    ('{"text": "x", "label": "a", "label": "b"}\n', "duplicate key 'label' in a JSON object"),
    ('{"text": "x", "label": "a", "meta": {"k": 1, "k": 2}}\n', "duplicate key 'k' in a JSON object"),
]


@pytest.mark.parametrize("row, problem", JSONL_BAD_ROWS)
def test_each_jsonl_bad_row_names_its_line(tmp_path, row, problem):
    path = write(tmp_path, "d.jsonl", GOOD + "\n" + row + GOOD)
    message = read_error(path)
    assert message.startswith(f"{path}:3: {problem}")
    examples, bad = read_examples(path, on_bad_row="skip")
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:4"]
    assert len(bad) == 1 and bad[0] == message


def test_invalid_utf8_names_line_and_byte(tmp_path):
    path = write(tmp_path, "d.jsonl",
                 GOOD.encode() + b'{"text": "caf\xe9", "label": "a"}\n' + GOOD.encode())
    assert read_error(path) == f"{path}:2: invalid UTF-8 (byte 0xe9 at byte 14 of the line)"
    assert len(read_examples(path, on_bad_row="skip")[0]) == 2


def test_csv_bad_rows(tmp_path):
    path = write(tmp_path, "d.csv",
                 'text,label\n'
                 'ok,a\n'
                 'too,many,columns\n'           # line 3
                 '"multi\nline",b,extra\n'      # line 4, record spans 4-5
                 ',a\n'                         # line 6: empty text
                 'no label,\n'                  # line 7
                 'ok,"a"b\n'                    # line 8: stray quote (strict csv)
                 'ok,a\n')                      # line 9
    examples, bad = read_examples(path, on_bad_row="skip")
    assert [e.source for e in examples] == [f"{path}:2", f"{path}:9"]
    assert bad == [f"{path}:3: expected 2 columns, got 3",
                   f"{path}:4: expected 2 columns, got 3",
                   f"{path}:6: empty field 'text'",
                   f"{path}:7: missing or empty label field 'label'",
                   f"{path}:8: malformed CSV (',' expected after '\"')"]
    assert read_error(path) == bad[0]


def test_csv_invalid_utf8_inside_multiline_record(tmp_path):
    path = write(tmp_path, "d.csv", b'text,label\n"a\nb\xff",x\nc,y\n')
    assert read_error(path) == f"{path}:3: invalid UTF-8 (byte 0xff at byte 2 of the line)"
    examples, bad = read_examples(path, on_bad_row="skip")
    assert [e.source for e in examples] == [f"{path}:4"]


def test_csv_unclosed_quote_and_bad_header(tmp_path):
    path = write(tmp_path, "d.csv", 'text,label\nok,a\n"never closed,b\nmore\n')
    examples, bad = read_examples(path, on_bad_row="skip")
    assert len(examples) == 1 and bad == [f"{path}:3: malformed CSV (unexpected end of data)"]
    header = write(tmp_path, "h.csv", b'te\xffxt,label\nok,a\n')
    message = read_error(header, on_bad_row="skip")
    assert message.startswith(f"{header}:1: header row: invalid UTF-8")
    missing = write(tmp_path, "m.tsv", 'body\tlabel\nok\ta\n')
    assert read_error(missing) == f"{missing}:1: header has no column 'text' (columns: body, label)"


def test_file_level_errors(tmp_path):
    assert read_error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file"
    assert "unknown extension '.xml'" in read_error(write(tmp_path, "d.xml", GOOD))
    assert read_error(write(tmp_path, "e.jsonl", "\n\n")).endswith("e.jsonl: no usable examples")
    assert "no usable examples" in read_error(write(tmp_path, "h.csv", "text,label\n"))
    all_bad = write(tmp_path, "b.jsonl", "{\n")
    assert "no usable examples (1 bad rows, the first:" in read_error(all_bad, on_bad_row="skip")
    with pytest.raises(ValueError, match="on_bad_row"):
        read_examples(all_bad, on_bad_row="warn")


def test_skip_mode_counts(tmp_path):
    rows = [GOOD if i % 3 else '{"text": ""}\n' for i in range(30)]
    examples, bad = read_examples(write(tmp_path, "d.jsonl", "".join(rows)), on_bad_row="skip")
    assert (len(examples), len(bad)) == (20, 10)
    assert [m.split(":")[-2] for m in bad] == [str(i + 1) for i in range(0, 30, 3)]


# --- labels --------------------------------------------------------------------------------------

def examples_with(labels):
    return [Example(f"t{i}", None, label, f"f:{i + 1}") for i, label in enumerate(labels)]


def test_label_set_ordering():
    def names(labels):
        return LabelSet.from_examples(examples_with(labels)).names

    assert names(["10", "2", "-1", "2", "0"]) == ("-1", "0", "2", "10")
    assert names(["pos", "neg", "10", "2"]) == ("10", "2", "neg", "pos")
    assert names(["b", "B", "a"]) == ("B", "a", "b")


def test_label_set_index_json_and_errors():
    labels = LabelSet.from_examples(examples_with(["c", "a", "b"]))
    assert len(labels) == 3 and labels.index("c", "x") == 2
    assert LabelSet.from_json(json.loads(json.dumps(labels.to_json()))) == labels
    assert LabelSet.from_json(["z", "a"]).names == ("z", "a")  # saved order is kept
    with pytest.raises(DataError, match=r"^f:9: label 'd' not seen in training \(known: a, b, c\)"):
        labels.index("d", "f:9")
    with pytest.raises(DataError, match="f:2: example has no label"):
        LabelSet.from_examples(examples_with(["a", None]))
    for bad in (["a", "a"], [], "ab", [1, 2]):
        with pytest.raises(DataError):
            LabelSet.from_json(bad)


def test_encode_labels_error_and_skip():
    labels = LabelSet(["neg", "pos"])
    examples = examples_with(["pos", "neutral", "neg", None])
    with pytest.raises(DataError, match="^f:2: label 'neutral' not seen in training"):
        encode_labels(examples, labels)
    ids, kept, bad = encode_labels(examples, labels, on_bad_row="skip")
    assert ids == [1, 0] and kept == [examples[0], examples[2]]
    assert bad == ["f:2: label 'neutral' not seen in training (known: neg, pos)",
                   "f:4: example has no label"]


# --- splits and subsets --------------------------------------------------------------------------

def labelled(counts):
    """Dicts with interleaved classes, e.g. {"a": 3, "b": 2} -> a b a b a."""
    items, left = [], dict(counts)
    while any(left.values()):
        for name in counts:
            if left[name]:
                items.append({"id": len(items), "label": name})
                left[name] -= 1
    return items


def by_label(items):
    return Counter(item["label"] for item in items)


def test_stratified_split_counts_order_and_determinism():
    items = labelled({"a": 100, "b": 30, "c": 5, "d": 2, "e": 1})
    rest, held = stratified_split(items, 0.1, seed=3, key=lambda r: r["label"])
    # c: round(0.5) == 0, raised to 1; e: a class of one stays in rest
    assert by_label(held) == {"a": 10, "b": 3, "c": 1, "d": 1}
    assert by_label(rest) == {"a": 90, "b": 27, "c": 4, "d": 1, "e": 1}
    assert sorted(r["id"] for r in rest + held) == list(range(len(items)))
    assert [r["id"] for r in rest] == sorted(r["id"] for r in rest)
    assert [r["id"] for r in held] == sorted(r["id"] for r in held)
    assert stratified_split(items, 0.1, seed=3, key=lambda r: r["label"]) == (rest, held)
    assert stratified_split(items, 0.1, seed=4, key=lambda r: r["label"])[1] != held
    assert by_label(stratified_split(items, 0.9, seed=3, key=lambda r: r["label"])[0]) == \
        {"a": 10, "b": 3, "c": 1, "d": 1, "e": 1}  # fraction < 1 leaves one of each class
    assert stratified_split(items, 0.0, seed=3, key=lambda r: r["label"]) == (items, [])
    assert stratified_split(items, 1.0, seed=3, key=lambda r: r["label"]) == ([], items)


def test_stratified_split_on_examples_and_bad_fraction():
    examples = examples_with(["x", "y"] * 10)
    rest, held = stratified_split(examples, 0.25, seed=0)
    assert Counter(e.label for e in held) == {"x": 2, "y": 2}  # round(2.5) == 2 (half to even)
    with pytest.raises(ValueError):
        stratified_split(examples, 1.5, seed=0)


def test_few_shot_fractions_counts_and_nesting():
    items = labelled({"pos": 600, "neg": 400, "rare": 3})
    key = lambda r: r["label"]  # noqa: E731
    subsets = {}
    for fraction in (0.004, 0.01, 0.02, 0.04, 0.1, 0.2, 1.0):
        subsets[fraction] = few_shot_subset(items, fraction=fraction, seed=7, key=key)
    assert by_label(subsets[0.004]) == {"pos": 2, "neg": 2, "rare": 1}  # round(1.6), at least one
    assert by_label(subsets[0.1]) == {"pos": 60, "neg": 40, "rare": 1}
    assert subsets[1.0] == items
    ids = [{r["id"] for r in subset} for subset in subsets.values()]
    assert all(small <= large for small, large in zip(ids, ids[1:]))
    assert [r["id"] for r in subsets[0.2]] == sorted(ids[5])
    assert few_shot_subset(items, fraction=0.1, seed=7, key=key) == subsets[0.1]
    assert few_shot_subset(items, fraction=0.1, seed=8, key=key) != subsets[0.1]

    def counts(count):
        return by_label(few_shot_subset(items, count=count, seed=7, key=key))

    assert counts(3) == {"pos": 1, "neg": 1, "rare": 1}
    assert counts(103) == {"pos": 61, "neg": 41, "rare": 1}  # 61.6 and 41.1 would be proportional
    assert counts(1000) == {"pos": 598, "neg": 399, "rare": 3}
    previous = set()
    for count in range(3, len(items) + 1, 37):
        chosen = few_shot_subset(items, count=count, seed=7, key=key)
        assert len(chosen) == count and previous <= {r["id"] for r in chosen}
        previous = {r["id"] for r in chosen}
    assert few_shot_subset(items, count=len(items), seed=7, key=key) == items


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abcd"), min_size=1, max_size=60),
       st.floats(0, 1), st.integers(0, 2**32))
def test_split_and_subset_properties(labels, fraction, seed):
    items = [{"id": i, "label": label} for i, label in enumerate(labels)]
    key = lambda r: r["label"]  # noqa: E731
    rest, held = stratified_split(items, fraction, seed, key=key)
    assert sorted(r["id"] for r in rest + held) == list(range(len(items)))
    for label, n in Counter(labels).items():
        n_held = by_label(held)[label]
        assert n_held == round(fraction * n) or (0 < fraction < 1 and n_held in (1, n - 1))
        assert by_label(rest)[label] >= 1 or fraction == 1
    classes = len(set(labels))
    previous = []
    for count in range(classes, len(items) + 1):
        chosen = [r["id"] for r in few_shot_subset(items, count=count, seed=seed, key=key)]
        assert len(chosen) == count and chosen == sorted(chosen) and set(previous) <= set(chosen)
        assert by_label([items[i] for i in chosen]).keys() == set(labels)
        previous = chosen


def test_few_shot_errors():
    examples = examples_with(["a", "b", "b"])
    for kwargs in ({"fraction": 0.0}, {"fraction": 1.1}, {"count": 1}, {"count": 4}, {},
                   {"fraction": 0.5, "count": 2}):
        with pytest.raises(ValueError):
            few_shot_subset(examples, seed=0, **kwargs)
    assert few_shot_subset(examples, count=2, seed=0)[0] == examples[0]


# --- write_jsonl ---------------------------------------------------------------------------------

def test_write_jsonl_round_trip_unicode(tmp_path):
    records = [{"text": "naïve café 日本語 \u2028 line\nbreak \x85", "label": 3},
               {"text": "emoji 🙂", "text_b": "tab\there", "label": "x"}]
    path = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(path, iter(records)) == 2
    assert "日本語" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    examples, _ = read_examples(path)
    assert [(e.text, e.text_b, e.label) for e in examples] == \
        [(records[0]["text"], None, "3"), ("emoji 🙂", "tab\there", "x")]
    assert os.listdir(path.parent) == ["out.jsonl"]


def test_write_jsonl_replaces_only_when_complete(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")

    def records():
        yield {"text": "a"}
        assert path.read_text() == "old\n"  # still the old file while writing
        assert len(os.listdir(tmp_path)) == 2  # the old file and the temporary one
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, records())
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.jsonl"]
    with pytest.raises(TypeError):
        write_jsonl(path, [["not", "a", "dict"]])
    assert os.listdir(tmp_path) == ["out.jsonl"]
    assert write_jsonl(path, [{"text": "new"}]) == 1 and path.read_text() == '{"text": "new"}\n'
    assert os.listdir(tmp_path) == ["out.jsonl"]

