"""Pre-training instances exactly as Google's create_pretraining_data.py makes them.

Text (one sentence per line, a blank line between documents) -> documents of tokenized sentences
-> instances "[CLS] A [SEP] B [SEP]" with a next-sentence label and masked positions (or, for
masked-LM-only pre-training, "[CLS] sentences [SEP]": single_segment_instances). Every random
choice comes from one `random.Random(random_seed)` and is made in the order of Google's functions
create_training_instances, create_instances_from_document, truncate_seq_pair and
create_masked_lm_predictions, so the same text, vocabulary, settings and seed give Google's
instances record for record.

Tokens are handled as ids (FullTokenizer.encode_text) rather than strings: the choices depend only
on lengths, on which tokens are [CLS]/[SEP] and on which start with "##", so the ids give the same
instances, and documents fit in compact int32 arrays instead of lists of Python strings.
"""

import random
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import ConfigError, DataError
from minibert.text.tokenization import FullTokenizer


@dataclass(frozen=True)
class InstanceSettings:
    """create_pretraining_data.py's flags (same names and defaults) that shape the instances."""
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10  # Google's default; the paper's code used 5
    do_whole_word_mask: bool = False
    # True: Google's sentence pairs with a next-sentence label; False: one segment of contiguous
    # sentences per instance, for masked-LM-only pre-training (single_segment_instances).
    next_sentence: bool = True

    def check(self) -> None:
        problems = []
        if self.max_seq_length < 5:  # [CLS] a [SEP] b [SEP]
            problems.append(f"max_seq_length={self.max_seq_length} (need >= 5)")
        if self.max_predictions_per_seq < 1:
            problems.append(f"max_predictions_per_seq={self.max_predictions_per_seq} (need >= 1)")
        if not 0 < self.masked_lm_prob < 1:
            problems.append(f"masked_lm_prob={self.masked_lm_prob} (need 0 < p < 1)")
        if not 0 <= self.short_seq_prob <= 1:
            problems.append(f"short_seq_prob={self.short_seq_prob} (need 0 <= p <= 1)")
        if self.dupe_factor < 1:
            problems.append(f"dupe_factor={self.dupe_factor} (need >= 1)")
        if problems:
            raise ConfigError("bad instance settings: " + ", ".join(problems))


@dataclass(frozen=True)
class Vocabulary:
    """What masking needs to know about the vocabulary, by id."""
    cls_id: int
    sep_id: int
    mask_id: int
    random_words: list[int]  # Google's vocab_words (the vocabulary in file order), as ids
    continuation: frozenset[int]  # ids of "##" pieces, for whole-word masking

    @classmethod
    def of(cls, tokenizer: FullTokenizer) -> "Vocabulary":
        vocab = tokenizer.vocab
        return cls(tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id,
                   # list(tokenizer.vocab.keys()): a random word can be [PAD], [unused..], [CLS], [MASK].
                   [vocab[word] for word in vocab],
                   frozenset(i for word, i in vocab.items() if word.startswith("##")))


# ---------------------------------------------------------------------------------------------
# Documents


class Documents:
    """Tokenized documents in three flat arrays: token ids, sentence ends, document ends.

    Sentence s is tokens[sentence_ends[s-1]:sentence_ends[s]]; document d is sentences
    doc_ends[d-1]..doc_ends[d]-1 (with index -1 meaning 0).
    """

    def __init__(self):
        self.tokens = array("i")
        self.sentence_ends = array("q")
        self.doc_ends = array("q")

    def __len__(self) -> int:
        return len(self.doc_ends)

    def add_sentence(self, ids: list[int]) -> None:
        self.tokens.extend(ids)
        self.sentence_ends.append(len(self.tokens))

    def end_document(self) -> None:
        """Close the current document; an empty one is dropped (Google filters them out)."""
        if len(self.sentence_ends) > (self.doc_ends[-1] if self.doc_ends else 0):
            self.doc_ends.append(len(self.sentence_ends))

    def sentences(self, d: int) -> list[list[int]]:
        first = self.doc_ends[d - 1] if d else 0
        ends, tokens = self.sentence_ends, self.tokens
        return [tokens[(ends[s - 1] if s else 0):ends[s]].tolist() for s in range(first, self.doc_ends[d])]


def read_documents(paths: Iterable[str | Path], tokenizer: FullTokenizer) -> Documents:
    """create_training_instances' reading loop: every line is stripped and tokenized on its own,
    a blank line starts a new document, and lines without tokens are dropped.

    As in Google's code a document is not closed at the end of a file: the next file continues it
    unless it starts with a blank line. Bytes that are not UTF-8 raise DataError naming file and line.
    """
    documents = Documents()
    for path in paths:
        try:
            f = open(path, "rb")
        except OSError as e:
            raise DataError(f"{path}: cannot read: {e.strerror}") from None
        with f:
            # Binary lines split on "\n" only, as TensorFlow's GFile.readline does.
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start})") from None
                if not line:
                    documents.end_document()
                    continue
                ids = tokenizer.encode_text(line)
                if ids:
                    documents.add_sentence(ids)
    documents.end_document()
    return documents


# ---------------------------------------------------------------------------------------------
# Instances


@dataclass
class Instance:
    """One training instance (Google's TrainingInstance), as ids.

    tokens: [CLS] A [SEP] B [SEP] after masking; segment ids are 0 for the first a_length tokens
    (A and its [CLS] and [SEP]) and 1 after; masked_positions ascending, masked_labels the
    original ids there; is_random_next True when B came from another place (label 1). A
    single-segment (masked-LM-only) instance has a_length = len(tokens) and is_random_next False.
    """
    tokens: array
    a_length: int
    is_random_next: bool
    masked_positions: array
    masked_labels: array


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng: random.Random) -> None:
    """Google's truncate_seq_pair: while too long, cut one token from the longer side (B on a tie),
    from its front or back with equal probability, so no side is always cut at the same end.

    The same draws as Google's loop, but only the cuts are counted and each list is sliced once:
    deleting from the front one token at a time is quadratic in the length of a long line.
    """
    lengths, cuts = [len(tokens_a), len(tokens_b)], [[0, 0], [0, 0]]  # per side: [front, back]
    while lengths[0] + lengths[1] > max_num_tokens:
        side = 0 if lengths[0] > lengths[1] else 1
        cuts[side][0 if rng.random() < 0.5 else 1] += 1
        lengths[side] -= 1
    for tokens, (front, back) in zip((tokens_a, tokens_b), cuts):
        if front or back:
            tokens[:] = tokens[front:len(tokens) - back]


def masking_groups(tokens: list[int], vocab: Vocabulary, whole_word: bool) -> list[list[int]]:
    """create_masked_lm_predictions' cand_indexes: every position but [CLS]/[SEP], each its own
    group, or with whole-word masking a "##" piece joins the group before it. The pass skips the
    special tokens without closing the group, so a "##" right after [SEP] joins the previous word."""
    groups: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token == vocab.cls_id or token == vocab.sep_id:
            continue
        if whole_word and groups and token in vocab.continuation:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def mask_tokens(tokens: list[int], masked_lm_prob: float, max_predictions: int, vocab: Vocabulary,
                whole_word: bool, rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """Google's create_masked_lm_predictions: (masked tokens, positions ascending, original ids).

    num_to_predict = min(max_predictions, max(1, round(len(tokens) * masked_lm_prob))), counting
    [CLS]/[SEP]. Groups are visited in shuffled order; a group that would overshoot the count is
    skipped. Each chosen position becomes [MASK] with probability 0.8, stays as it is with 0.1 and
    becomes a uniformly random vocabulary word with 0.1.
    """
    groups = masking_groups(tokens, vocab, whole_word)
    rng.shuffle(groups)
    output = list(tokens)
    num_to_predict = min(max_predictions, max(1, int(round(len(tokens) * masked_lm_prob))))
    chosen: list[int] = []
    for group in groups:
        if len(chosen) >= num_to_predict:
            break
        if len(chosen) + len(group) > num_to_predict:
            continue
        # Google also skips groups that overlap a covered index; groups are disjoint, so none do.
        for index in group:
            if rng.random() < 0.8:
                output[index] = vocab.mask_id
            elif rng.random() < 0.5:
                output[index] = tokens[index]
            else:
                output[index] = vocab.random_words[rng.randint(0, len(vocab.random_words) - 1)]
            chosen.append(index)
    chosen.sort()
    return output, chosen, [tokens[i] for i in chosen]


def _random_next(documents: Documents, document_index: int, target_b_length: int, rng: random.Random) -> list[int]:
    """B from a random place in (normally) another document, long enough for target_b_length."""
    # Up to 10 draws to find another document; after 10 misses it stays the same one (Google).
    for _ in range(10):
        random_index = rng.randint(0, len(documents) - 1)
        if random_index != document_index:
            break
    sentences = documents.sentences(random_index)
    tokens_b: list[int] = []
    for sentence in sentences[rng.randint(0, len(sentences) - 1):]:
        tokens_b.extend(sentence)
        if len(tokens_b) >= target_b_length:
            break
    return tokens_b


def instances_from_document(documents: Documents, document_index: int, settings: InstanceSettings,
                            vocab: Vocabulary, rng: random.Random) -> list[Instance]:
    """Google's create_instances_from_document for one document."""
    document = documents.sentences(document_index)
    max_num_tokens = settings.max_seq_length - 3  # [CLS], [SEP], [SEP]
    # Mostly fill the sequence; sometimes (short_seq_prob) aim shorter, so that fine-tuning on short
    # inputs does not meet a length the model never saw. Drawn once per document.
    target_seq_length = max_num_tokens
    if rng.random() < settings.short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    chunk: list[list[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            # A = the chunk's first a_end sentences, a_end drawn when there is a choice.
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random_next = True
                tokens_b = _random_next(documents, document_index, target_seq_length - len(tokens_a), rng)
                # The chunk's sentences after A were not used: walk them again (Google "puts them back").
                i -= len(chunk) - a_end
            else:
                is_random_next = False
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            tokens = [vocab.cls_id, *tokens_a, vocab.sep_id, *tokens_b, vocab.sep_id]
            masked, positions, labels = mask_tokens(tokens, settings.masked_lm_prob,
                                                    settings.max_predictions_per_seq, vocab,
                                                    settings.do_whole_word_mask, rng)
            instances.append(Instance(array("i", masked), len(tokens_a) + 2, is_random_next,
                                      array("i", positions), array("i", labels)))
            chunk, chunk_length = [], 0
        i += 1
    return instances


def single_segment_instances(documents: Documents, document_index: int, settings: InstanceSettings,
                             vocab: Vocabulary, rng: random.Random) -> list[Instance]:
    """Masked-LM-only instances "[CLS] tokens [SEP]" of one document: its sentences packed in order.

    Deviation from reference: Google's script only makes sentence pairs for NSP. This is RoBERTa's
    DOC-SENTENCES input (Liu et al. 2019, §4.2): contiguous full sentences of one document, never
    crossing into another, with no next-sentence task. A sentence joins the current instance while
    the instance stays within the target length; otherwise it starts the next one. A sentence longer
    than max_seq_length - 2 is cut into pieces of that length, so no text is dropped. The target is
    drawn once per document as in Google's create_instances_from_document (short_seq_prob), and the
    masks follow Google's create_masked_lm_predictions; segment ids are all 0, the label 0.
    """
    max_num_tokens = settings.max_seq_length - 2  # [CLS], [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < settings.short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances: list[Instance] = []

    def emit(chunk: list[int]) -> None:
        tokens = [vocab.cls_id, *chunk, vocab.sep_id]
        masked, positions, labels = mask_tokens(tokens, settings.masked_lm_prob, settings.max_predictions_per_seq,
                                                vocab, settings.do_whole_word_mask, rng)
        instances.append(Instance(array("i", masked), len(tokens), False, array("i", positions), array("i", labels)))

    chunk: list[int] = []
    for sentence in documents.sentences(document_index):
        for start in range(0, len(sentence), max_num_tokens):
            piece = sentence[start:start + max_num_tokens]
            if chunk and len(chunk) + len(piece) > target_seq_length:
                emit(chunk)
                chunk = []
            chunk += piece
    if chunk:
        emit(chunk)
    return instances


# Instances of one document, by InstanceSettings.next_sentence.
INSTANCE_BUILDERS = {True: instances_from_document, False: single_segment_instances}


class Instances:
    """Instances packed into flat arrays (about 4 bytes a token), read back as `Instance` objects.

    Google's script keeps every instance as Python lists until its final shuffle; here they are
    appended to int32 arrays in creation order, and `shuffle` draws Google's permutation of them
    (random.shuffle makes the same draws whatever the list holds), so instances[k] is the k-th
    instance of Google's output and the records can be written in chunks.
    """

    def __init__(self):
        self.tokens, self.token_ends = array("i"), array("q")
        self.predictions, self.labels, self.prediction_ends = array("i"), array("i"), array("q")
        self.a_lengths, self.is_random_next = array("i"), array("b")
        self.order: array | None = None  # output position -> creation index, after shuffle()

    def __len__(self) -> int:
        return len(self.token_ends)

    def append(self, instance: Instance) -> None:
        self.tokens.extend(instance.tokens)
        self.token_ends.append(len(self.tokens))
        self.predictions.extend(instance.masked_positions)
        self.labels.extend(instance.masked_labels)
        self.prediction_ends.append(len(self.predictions))
        self.a_lengths.append(instance.a_length)
        self.is_random_next.append(instance.is_random_next)

    def shuffle(self, rng: random.Random) -> None:
        # An int64 array, not a list of ints: 8 bytes an instance (random.shuffle works on any sequence).
        self.order = array("q", range(len(self)))
        rng.shuffle(self.order)

    def __getitem__(self, k: int) -> Instance:
        if not 0 <= k < len(self):
            raise IndexError(k)
        i = self.order[k] if self.order is not None else k
        t0, p0 = (self.token_ends[i - 1], self.prediction_ends[i - 1]) if i else (0, 0)
        t1, p1 = self.token_ends[i], self.prediction_ends[i]
        return Instance(self.tokens[t0:t1], self.a_lengths[i], bool(self.is_random_next[i]),
                        self.predictions[p0:p1], self.labels[p0:p1])


def create_instances(documents: Documents, settings: InstanceSettings, vocab: Vocabulary,
                     rng: random.Random, progress=None) -> Instances:
    """Google's create_training_instances after reading: shuffle the documents, make instances
    from every document dupe_factor times (each round draws new masks), shuffle all instances.

    `progress`, if given, is called with the number of documents done after each one.
    """
    if len(documents) == 0:
        raise DataError("no documents: the input has no non-empty lines")
    order = list(range(len(documents)))
    rng.shuffle(order)  # rng.shuffle(all_documents): the same permutation as shuffling the documents
    shuffled = _Reordered(documents, order)
    build = INSTANCE_BUILDERS[settings.next_sentence]
    instances = Instances()
    for _ in range(settings.dupe_factor):
        for document_index in range(len(documents)):
            for instance in build(shuffled, document_index, settings, vocab, rng):
                instances.append(instance)
            if progress is not None:
                progress(1)
    instances.shuffle(rng)
    return instances


class _Reordered:
    """Documents seen through a permutation (the shuffled all_documents list of Google's code)."""

    def __init__(self, documents: Documents, order: list[int]):
        self.documents, self.order = documents, order

    def __len__(self) -> int:
        return len(self.order)

    def sentences(self, d: int) -> list[list[int]]:
        return self.documents.sentences(self.order[d])
