"""Learn a WordPiece vocab.txt for a new domain or language with sentencepiece.

Google never released its WordPiece trainer; sentencepiece (Kudo & Richardson 2018) learns a
subword vocabulary of the same kind. The text is first split exactly as FullTokenizer will split
it (BasicTokenizer: cleaning, CJK spacing, lower-casing, punctuation), so no piece crosses a
boundary the tokenizer keeps. sentencepiece marks word-initial pieces with "▁"; converted to
Google's convention they are written as they are, and pieces inside a word get "##":

    "▁play" -> "play"      "ing" -> "##ing"

The file starts like Google's vocabularies: [PAD], [unused0]..[unused{k-1}], [UNK], [CLS], [SEP],
[MASK] (so the uncased release's ids 0 and 100-103 when k = 99), then every character seen, in both
forms (WordPiece turns a word into [UNK] when one of its characters has no piece), then the learned
pieces by sentencepiece's score until the requested size.
"""

import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import ConfigError, DataError
from minibert.files import atomic_write_text
from minibert.text.tokenization import BasicTokenizer, FullTokenizer

WORD_START = "\u2581"  # sentencepiece's "▁"
SPECIALS_AFTER_UNUSED = ("[UNK]", "[CLS]", "[SEP]", "[MASK]")


MODEL_TYPES = ("bpe", "unigram")  # the sentencepiece algorithms a vocabulary can be learned with


@dataclass
class VocabReport:
    size: int
    characters: int
    heldout_words: int
    heldout_tokens: int
    heldout_unknown: int

    @property
    def unknown_rate(self) -> float:
        return self.heldout_unknown / max(1, self.heldout_tokens)

    @property
    def tokens_per_word(self) -> float:
        return self.heldout_tokens / max(1, self.heldout_words)


def corpus_lines(paths: Iterable[Path]) -> Iterator[tuple[Path, int, str]]:
    """(file, line number, stripped line) of every non-empty line; non-UTF-8 raises DataError."""
    for path in paths:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start})") from None
                if line:
                    yield path, number, line


def to_wordpiece(pieces: list[str]) -> list[str]:
    """sentencepiece pieces (in score order) -> Google-convention tokens, duplicates dropped."""
    out, seen = [], set()
    for piece in pieces:
        if piece.startswith(WORD_START):
            token = piece[len(WORD_START):]
        else:
            token = "##" + piece
        if token and token != "##" and token not in seen:
            seen.add(token)
            out.append(token)
    return out


def build_vocab(paths: list[Path], output: Path, vocab_size: int, do_lower_case: bool = True,
                num_unused: int = 99, heldout_every: int = 100, model_type: str = "bpe",
                max_sentences: int = 2_000_000, seed: int = 12345) -> VocabReport:
    """Train on the corpus lines (every `heldout_every`-th line held out), write vocab.txt atomically,
    and measure it on the held-out lines. Returns the report."""
    import sentencepiece as spm  # imported here: only vocabulary building needs it

    specials = 1 + num_unused + len(SPECIALS_AFTER_UNUSED)
    if vocab_size < specials + 10:
        raise ConfigError(f"--vocab_size={vocab_size} leaves no room after {specials} special tokens")
    basic = BasicTokenizer(do_lower_case)
    characters: Counter = Counter()
    heldout: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        lines = 0
        with open(train_file, "w", encoding="utf-8") as f:
            for i, (_, _, line) in enumerate(corpus_lines(paths)):
                words = basic.tokenize(line)
                if not words:
                    continue
                if heldout_every and i % heldout_every == heldout_every - 1:
                    heldout.append(line)
                    continue
                characters.update(c for word in words for c in word)
                f.write(" ".join(words) + "\n")
                lines += 1
        if lines == 0:
            raise DataError(f"{', '.join(map(str, paths))}: no text to learn a vocabulary from")
        char_tokens = [c for c, _ in characters.most_common()]
        char_tokens += ["##" + c for c in char_tokens]
        room = vocab_size - specials - len(char_tokens)
        if room < 1:
            raise ConfigError(f"--vocab_size={vocab_size} is too small: the corpus has {len(characters)} distinct "
                              f"characters, which need {len(char_tokens)} entries plus {specials} special tokens")
        # sentencepiece counts its own <unk>/<s>/</s> and single characters in vocab_size; asking for
        # more than needed and cutting after conversion gives exactly vocab_size entries when the
        # corpus is rich enough (hard_vocab_limit=False lets a small corpus give fewer).
        spm.set_random_generator_seed(seed)  # the sample of lines, so the same corpus gives the same vocabulary
        spm.SentencePieceTrainer.train(
            input=str(train_file), model_prefix=str(Path(tmp) / "sp"), vocab_size=room + 2 * len(characters) + 16,
            model_type=model_type, character_coverage=1.0, hard_vocab_limit=False,
            input_sentence_size=max_sentences, shuffle_input_sentence=True, seed_sentencepiece_size=1_000_000,
            split_digits=False, add_dummy_prefix=True, minloglevel=2, num_threads=1)
        processor = spm.SentencePieceProcessor(model_file=str(Path(tmp) / "sp.model"))
        pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
                  if not (processor.is_unknown(i) or processor.is_control(i))]
    learned = [t for t in to_wordpiece(pieces) if t not in set(char_tokens)]
    tokens = (["[PAD]"] + [f"[unused{i}]" for i in range(num_unused)] + list(SPECIALS_AFTER_UNUSED)
              + char_tokens + learned)[:vocab_size]
    atomic_write_text(output, "\n".join(tokens) + "\n")
    return measure(output, heldout, do_lower_case, len(characters))


def measure(vocab_file: Path, lines: list[str], do_lower_case: bool, characters: int = 0) -> VocabReport:
    """[UNK] share and WordPiece tokens per BasicTokenizer word on `lines`, with FullTokenizer."""
    tokenizer = FullTokenizer(vocab_file, do_lower_case, check_case=False)
    words = tokens = unknown = 0
    for line in lines:
        ids = tokenizer.encode_text(line)
        words += len(tokenizer.basic_tokenizer.tokenize(line))
        tokens += len(ids)
        unknown += sum(i == tokenizer.unk_id for i in ids)
    return VocabReport(len(tokenizer.vocab), characters, words, tokens, unknown)
