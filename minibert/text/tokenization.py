"""WordPiece tokenization with the rules of Google's tokenization.py (current release).

Reference: google-research/bert tokenization.py (BasicTokenizer, WordpieceTokenizer). One text goes through

  1. clean      drop U+0000, U+FFFD and control characters; whitespace -> " "   (_clean_text)
  2. CJK        pad CJK ideographs with spaces                                  (_tokenize_chinese_chars)
  3. split      on whitespace                                                   (whitespace_tokenize)
  4. per word   lower-case and strip accents (only with do_lower_case),
                then split off every punctuation character                     (_run_split_on_punc)
  5. per piece  WordPiece: greedy longest-match-first, "##" continuations       (WordpieceTokenizer)

Steps 1-2 are one str.translate over the text; steps 4-5 depend only on the word, so FullTokenizer
computes them once per distinct word and caches the ids. Tokenizers that call themselves BERT
compatible differ in a few settings, collected in the VARIANTS table below.
"""

import dataclasses
import functools
import itertools
import re
import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path

from minibert.errors import ConfigError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Google's _is_chinese_char: the CJK Unified Ideographs blocks (Hangul, kana are not included).
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """The settings in which BERT tokenizers differ; everything else is shared."""

    control_categories: frozenset  # Unicode categories dropped as control (\t \n \r excepted)
    nfc: bool  # NFC-normalise the cleaned text before the whitespace split
    max_input_chars_per_word: int  # a longer punctuation-split word becomes one [UNK]
    special_tokens_intact: bool  # "[CLS]", "[MASK]"... written in the text stay one token
    strip_vocab_line: Callable[[str], str]  # how a vocab.txt line becomes a token


def _strip_newline(line):
    return line.rstrip("\n")


VARIANTS = {
    # Google's tokenization.py: _is_control tests cat in ("Cc", "Cf"); WordpieceTokenizer default
    # max_input_chars_per_word=200; load_vocab applies token.strip(); no normalisation, no special
    # handling of "[CLS]" in text (it becomes "[", "cls", "]").
    "google": Variant(
        control_categories=frozenset({"Cc", "Cf"}), nfc=False, max_input_chars_per_word=200,
        special_tokens_intact=False, strip_vocab_line=str.strip),
    # Hugging Face's slow BertTokenizer (transformers 5.x: BertTokenizerLegacy): _is_control tests
    # cat.startswith("C") (adds Cn unassigned, Co private use, Cs surrogates); BasicTokenizer
    # NFC-normalises after CJK padding; WordpieceTokenizer uses 100; PreTrainedTokenizer.tokenize
    # splits the raw text on special tokens first and BasicTokenizer never splits them;
    # load_vocab applies rstrip("\n").
    "huggingface": Variant(
        control_categories=frozenset({"Cc", "Cf", "Cn", "Co", "Cs"}), nfc=True,
        max_input_chars_per_word=100, special_tokens_intact=True, strip_vocab_line=_strip_newline),
}


def _get_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown tokenizer variant {variant!r}; choose one of {sorted(VARIANTS)}")
    return VARIANTS[variant]


# ---------------------------------------------------------------------------------------------
# Character classes (Google's _is_whitespace, _is_control, _is_punctuation, _is_chinese_char)


def is_whitespace(char):
    """Space, \\t, \\n, \\r or Unicode category Zs (Google's _is_whitespace)."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char, categories=VARIANTS["google"].control_categories):
    """A character of the given categories, except \\t \\n \\r which are whitespace (_is_control)."""
    return char not in "\t\n\r" and unicodedata.category(char) in categories


@functools.lru_cache(maxsize=1 << 16)
def is_punctuation(char):
    """ASCII 33-47, 58-64, 91-96, 123-126 (so $ ^ ` count) or Unicode category P* (_is_punctuation)."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk_ideograph(cp):
    """Whether code point `cp` lies in one of Google's CJK ranges (_is_chinese_char)."""
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


class _CleanTable(dict):
    """str.translate table doing steps 1-2 at once: drop, map to " ", pad with spaces, or keep.

    Filled lazily per code point (str.translate looks keys up through __missing__). The ASCII
    entries are all one ASCII character or None, which keeps CPython's fast ASCII path.
    """

    def __init__(self, control_categories):
        super().__init__()
        self.control_categories = control_categories
        for cp in range(128):  # every ASCII entry present: no __missing__ calls on ASCII text
            self.__missing__(cp)

    def __missing__(self, cp):
        char = chr(cp)
        if cp == 0 or cp == 0xFFFD or is_control(char, self.control_categories):
            out = None
        elif is_whitespace(char):
            out = " "
        elif is_cjk_ideograph(cp):
            out = f" {char} "
        else:
            out = char
        self[cp] = out
        return out


def _to_unicode(text):
    """Google's convert_to_unicode: str as is, bytes decoded as UTF-8 dropping invalid bytes."""
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    if not isinstance(text, str):
        raise TypeError(f"expected str or bytes, got {type(text).__name__}")
    return text


# The ASCII punctuation ranges as a regex; the capturing group keeps the separators in re.split.
_ASCII_PUNCT_SPLIT = re.compile(r"([!-/:-@\[-`{-~])").split


# ---------------------------------------------------------------------------------------------
# Vocabulary


def load_vocab(vocab_file, variant="google"):
    """Read vocab.txt (UTF-8, one token per line) into {token: id}, id = line number.

    Lines are stripped as the variant's reference does (Google: str.strip()). A token listed twice
    keeps its last line number, as in both references.
    """
    strip = _get_variant(variant).strip_vocab_line
    try:
        with open(vocab_file, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{vocab_file}: cannot read vocabulary file: {e}") from None
    if not lines:
        raise ConfigError(f"{vocab_file}: vocabulary file is empty")
    return {strip(line): i for i, line in enumerate(lines)}


def _check_case(vocab, vocab_file, do_lower_case, check_case):
    """Google's validate_case_matches_checkpoint, judged from the vocabulary instead of its name.

    A token is cased when lower-casing changes it; "[...]" special tokens are ignored. An uncased
    vocab (e.g. uncased_L-12_H-768_A-12) has none, a cased one has thousands.
    """
    words = [t for t in vocab if not (t.startswith("[") and t.endswith("]"))]
    n_cased = sum(t != t.lower() for t in words)
    # Deviation from reference: Google's validate_case_matches_checkpoint judges the checkpoint's
    # folder name against a list of released models; the vocabulary itself says more and works for
    # any model. More than 1% cased tokens means cased: Google's uncased vocabularies have none,
    # the cased ones about a third.
    if do_lower_case and n_cased > 0.01 * len(words):
        problem = (f"vocabulary {vocab_file} looks cased ({n_cased} of {len(words)} tokens have "
                   "upper-case letters) but do_lower_case=True; pass do_lower_case=False")
    elif not do_lower_case and n_cased == 0:
        problem = (f"vocabulary {vocab_file} has no upper-case tokens (an uncased model) but "
                   "do_lower_case=False; pass do_lower_case=True")
    else:
        return
    if check_case:
        raise ConfigError(problem + " (or check_case=False to only warn)")
    warnings.warn(problem, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# Tokenizers


class BasicTokenizer:
    """Steps 1-4: cleaning, CJK padding, whitespace split, lower-casing, punctuation split."""

    def __init__(self, do_lower_case=True, variant="google"):
        self.do_lower_case = do_lower_case
        self.variant = _get_variant(variant)
        self._table = _CleanTable(self.variant.control_categories)

    def clean(self, text):
        """Steps 1-2 (and NFC for variants that use it) on a str."""
        text = text.translate(self._table)
        if self.variant.nfc:
            text = unicodedata.normalize("NFC", text)
        return text

    def split_word(self, word):
        """Step 4 for one whitespace-free word: list of non-empty pieces."""
        if self.do_lower_case:
            word = word.lower()
            if not word.isascii():  # ASCII has no decompositions and no Mn marks
                nfd = unicodedata.normalize("NFD", word)
                word = "".join(c for c in nfd if unicodedata.category(c) != "Mn")
        # Google then re-splits " ".join(pieces) on whitespace; lower() and NFD never create
        # whitespace (tests/test_tokenization.py checks every code point), so that is a no-op.
        if word.isascii():
            return [p for p in _ASCII_PUNCT_SPLIT(word) if p]
        pieces, start = [], 0
        for i, char in enumerate(word):
            if is_punctuation(char):
                if start < i:
                    pieces.append(word[start:i])
                pieces.append(char)
                start = i + 1
        if start < len(word):
            pieces.append(word[start:])
        return pieces

    def tokenize(self, text):
        """Text -> list of basic tokens (str), as Google's BasicTokenizer.tokenize."""
        words = self.clean(_to_unicode(text)).split()
        return [p for word in words for p in self.split_word(word)]


class WordpieceTokenizer:
    """Step 5: greedy longest-match-first WordPiece (Google's WordpieceTokenizer)."""

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=200):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        # No vocab entry is longer than this, so longer candidate substrings need not be tried.
        self._max_token_len = max((len(t) for t in vocab), default=0)

    def tokenize_word(self, word):
        """One word -> its pieces, or [unk_token] if too long or some position has no match."""
        vocab, n = self.vocab, len(word)
        if n > self.max_input_chars_per_word:
            return [self.unk_token]
        if word in vocab:
            return [word]
        pieces, start = [], 0
        while start < n:
            for end in range(min(n, start + self._max_token_len), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    break
            else:  # no prefix of word[start:] is in the vocab: the whole word is unknown
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text):
        """Whitespace-separated words -> list of word pieces."""
        return [p for word in text.split() for p in self.tokenize_word(word)]


class _WordCache(dict):
    """word -> tuple of ids, computed on first lookup; emptied when full so memory stays bounded."""

    def __init__(self, compute, max_size=1 << 18):  # about 60 MB when full
        super().__init__()
        self.compute = compute
        self.max_size = max_size

    def __missing__(self, word):
        if len(self) >= self.max_size:
            self.clear()
        ids = self[word] = self.compute(word)
        return ids


class FullTokenizer:
    """Text -> WordPiece tokens and ids, Google's FullTokenizer rules (or another VARIANTS entry).

    Attributes: vocab {token: id}, inv_vocab {id: token}, do_lower_case, variant_name (a VARIANTS
    key), variant (its settings), and the special ids pad_id, unk_id, cls_id, sep_id, mask_id.
    """

    def __init__(self, vocab_file, do_lower_case=True, variant="google", check_case=True):
        self.variant_name = variant
        self.variant = _get_variant(variant)
        self.vocab_file = Path(vocab_file)
        self.vocab = load_vocab(vocab_file, variant)
        # Deviation from reference: Google's FullTokenizer accepts any vocabulary and fails later
        # (a KeyError in run_classifier.py) when [CLS]/[SEP] are missing; minibert needs all five
        # special tokens to frame and pad inputs, so it says so when the vocabulary is read.
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ConfigError(f"{vocab_file}: the vocabulary lacks the special tokens {missing}")
        _check_case(self.vocab, vocab_file, do_lower_case, check_case)
        self.do_lower_case = do_lower_case
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self.vocab[t] for t in SPECIAL_TOKENS)
        self.basic_tokenizer = BasicTokenizer(do_lower_case, variant)
        self.wordpiece_tokenizer = WordpieceTokenizer(
            self.vocab, "[UNK]", self.variant.max_input_chars_per_word)
        self._word_ids = _WordCache(self._compute_word_ids)
        self._split_special = None
        if self.variant.special_tokens_intact:
            alternatives = "|".join(re.escape(t) for t in SPECIAL_TOKENS)
            self._split_special = re.compile(f"({alternatives})").split

    def _compute_word_ids(self, word):
        if self.variant.special_tokens_intact and word in SPECIAL_TOKENS:
            return (self.vocab[word],)  # Hugging Face's never_split: not lower-cased or split
        vocab, wordpiece = self.vocab, self.wordpiece_tokenizer.tokenize_word
        return tuple(vocab[p] for piece in self.basic_tokenizer.split_word(word)
                     for p in wordpiece(piece))

    def _encode_chunk(self, text):
        words = self.basic_tokenizer.clean(text).split()
        return list(itertools.chain.from_iterable(map(self._word_ids.__getitem__, words)))

    def encode_text(self, text):
        """Text (str, or UTF-8 bytes) -> list of token ids (int), without [CLS]/[SEP]."""
        text = _to_unicode(text)
        if self._split_special is None or "[" not in text:
            return self._encode_chunk(text)
        ids = []
        # re.split with a capturing group: odd positions hold the special tokens themselves.
        for i, chunk in enumerate(self._split_special(text)):
            if i % 2:
                ids.append(self.vocab[chunk])
            else:
                ids.extend(self._encode_chunk(chunk))
        return ids

    def tokenize(self, text):
        """Text -> list of WordPiece tokens (str), e.g. "UNwanted," -> ["un", "##want", "##ed", ","]."""
        inv = self.inv_vocab
        return [inv[i] for i in self.encode_text(text)]

    def convert_tokens_to_ids(self, tokens):
        """Tokens -> ids; a token not in the vocabulary maps to unk_id."""
        # Deviation from reference: Google's convert_by_vocab raises KeyError on an unknown token;
        # mapping it to [UNK] (as Hugging Face does) lets hand-written token lists through.
        vocab, unk = self.vocab, self.unk_id
        return [vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        """Ids -> tokens; an id outside the vocabulary raises KeyError."""
        return [self.inv_vocab[int(i)] for i in ids]
