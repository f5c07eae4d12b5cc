"""Classification strategies of the paper (Sun et al. 2019, section 4.1 and 5.3): which layers feed the
classifier, how they are combined, how chunks of a long text are combined, and BERT-Feat.

Shapes: B documents, C chunks (all documents' chunks stacked; C = B without hierarchical encoding),
T tokens, H hidden, L layers, F feature size, K classes.

Every head says where it reads the encoder's last layer (`last_layer_positions`): [CLS] only for
ClsHead (chunk pooling combines chunks, not tokens), every token for the BiLSTM head. The
classifiers pass that to BertModel, which then computes the last layer at those rows only
(BertModel.last_layer; the same numbers). Every head also says which hidden states it reads
(`hidden_states_read`); the encoder keeps only those (and the last layer), so inference does not
hold every layer's output until the call returns.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from minibert.model.bert import GOOGLE_INIT, BertModel, BertOutput, init_weights
from minibert.model.config import BertConfig

LAYER_SETS = ("last", "first4", "last4", "all")  # or a layer number, 0 = embedding output


@dataclass
class HeadConfig:
    """Everything needed to rebuild a classifier head; saved with the model as classifier.json."""

    num_labels: int
    head: str = "cls"  # "cls": [CLS] features + linear; "bilstm_attention": BERT-Feat
    layers: str = "last"  # one of LAYER_SETS, or "0".."L" for a single layer
    layer_combine: str = "concat"  # how several layers' [CLS] vectors are combined
    pooler: bool = True  # pass the feature through BERT's tanh pooler (Google's run_classifier)
    chunk_pooling: str = "mean"  # hierarchical texts: how the chunks' features are combined
    dropout: float = 0.1  # run_classifier.py: dropout 0.1 before the output layer
    lstm_size: int = 256  # BERT-Feat BiLSTM hidden size per direction
    attention_hops: int = 4  # BERT-Feat self-attention rows (Lin et al. 2017: r)
    attention_size: int = 128  # BERT-Feat self-attention hidden size (d_a)
    # The task's kind (minibert.training.problems): one logit per label, read through a sigmoid, and
    # the probability each label needs to be predicted (one value, or one per label chosen on dev).
    multi_label: bool = False
    threshold: float = 0.5
    thresholds: list[float] | None = None

    def __post_init__(self):
        # The tables are defined further down; they exist by the time a config is built.
        choices = {"head": tuple(HEADS), "layer_combine": tuple(COMBINE), "chunk_pooling": tuple(CHUNK_POOLINGS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.layers not in LAYER_SETS and not self.layers.isdigit():
            raise ValueError(f"layers must be one of {LAYER_SETS} or a layer number, got {self.layers!r}")
        if self.pooler and self.layer_combine == "concat" and self.layers in ("first4", "last4", "all"):
            raise ValueError("the pooler takes H features: use layer_combine mean or max, or pooler=False")
        # Thresholds chosen on dev may reach 0 (every text) for a label whose probabilities all underflow.
        if not 0 < self.threshold < 1 or not all(0 <= t <= 1 for t in self.thresholds or []):
            raise ValueError(f"threshold must be in (0, 1) and thresholds in [0, 1], got {self.threshold} and "
                             f"{self.thresholds}")
        if self.thresholds is not None and len(self.thresholds) != self.num_labels:
            raise ValueError(f"{len(self.thresholds)} thresholds for {self.num_labels} labels")

    @property
    def decision_thresholds(self) -> float | list[float]:
        """A multi-label head's per-label thresholds when chosen on dev, else its one threshold."""
        return self.threshold if self.thresholds is None else self.thresholds


def layer_indices(layers: str, num_layers: int) -> list[int]:
    """Indices into BertOutput.hidden_states (0 = embedding output, i = output of layer i)."""
    table = {
        "last": [num_layers],
        "first4": list(range(1, 5)),
        "last4": list(range(num_layers - 3, num_layers + 1)),
        "all": list(range(1, num_layers + 1)),
    }
    indices = table[layers] if layers in table else [int(layers)]
    if not all(0 <= i <= num_layers for i in indices):
        raise ValueError(f"layers={layers!r} needs layers the model ({num_layers} layers) does not have")
    return indices


COMBINE = {
    "concat": lambda vectors: torch.cat(vectors, dim=-1),  # (C, len * H)
    "mean": lambda vectors: torch.stack(vectors).mean(0),  # (C, H)
    "max": lambda vectors: torch.stack(vectors).amax(0),  # (C, H)
}


class MeanPooling(nn.Module):
    def __init__(self, size: int):
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, K, F), mask (B, K) bool with True = present -> (B, F)."""
        return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


class MaxPooling(nn.Module):
    def __init__(self, size: int):
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x.masked_fill(~mask[..., None], float("-inf")).amax(1)


class SelfAttentionPooling(nn.Module):
    """Additive attention over a set of vectors: softmax_j(w^T tanh(W x_j)) weighted sum."""

    def __init__(self, size: int):
        super().__init__()
        self.proj = nn.Linear(size, size)
        self.score = nn.Linear(size, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, K, F), mask (B, K) bool with True = present -> (B, F)."""
        scores = self.score(torch.tanh(self.proj(x))).squeeze(-1)  # (B, K)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.einsum("bk,bkf->bf", weights, x)


CHUNK_POOLINGS = {"mean": MeanPooling, "max": MaxPooling, "self_attention": SelfAttentionPooling}


def group_chunks(features: torch.Tensor, doc_index: torch.Tensor, num_docs: int):
    """Stacked chunk features (C, F) and their document ids (C,) -> padded (B, K, F) and mask (B, K).

    Chunks of one document must be contiguous and in order, as the data pipeline builds them.
    """
    counts = torch.bincount(doc_index, minlength=num_docs)  # (B,)
    K = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(doc_index), device=features.device) - starts[doc_index]  # position within its doc
    padded = features.new_zeros(num_docs, K, features.shape[-1])
    padded[doc_index, slot] = features
    mask = torch.arange(K, device=features.device)[None, :] < counts[:, None]
    return padded, mask


class ClsHead(nn.Module):
    """[CLS] features of the chosen layers -> (pooler) -> chunk pooling -> dropout -> linear."""

    def __init__(self, config: BertConfig, head: HeadConfig):
        super().__init__()
        self.indices = layer_indices(head.layers, config.num_hidden_layers)
        self.combine = head.layer_combine
        self.use_pooler = head.pooler
        size = config.hidden_size * (len(self.indices) if head.layer_combine == "concat" else 1)
        self.chunk_pooling = CHUNK_POOLINGS[head.chunk_pooling](size)
        self.dropout = nn.Dropout(head.dropout)
        self.out = nn.Linear(size, head.num_labels)

    def last_layer_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(C, 1): the head reads the last layer (and the pooled output) at [CLS] only."""
        return input_ids.new_zeros(input_ids.shape[0], 1, dtype=torch.long)

    def hidden_states_read(self) -> list[int]:
        """The hidden states `features` reads (BertModel.forward's keep_hidden_states)."""
        return self.indices

    def features(self, encoded: BertOutput, pooler: nn.Linear) -> torch.Tensor:
        """(C, F) feature of every chunk."""
        if self.use_pooler and self.indices == [len(encoded.hidden_states) - 1]:
            return encoded.pooled_output  # the encoder already pooled the last layer
        vectors = [encoded.cls_vectors(i) for i in self.indices]  # each (C, H)
        combined = COMBINE[self.combine](vectors)
        # The pooler (trained on the last layer's [CLS] in pre-training) applied to the chosen feature.
        return torch.tanh(pooler(combined)) if self.use_pooler else combined

    def forward(self, encoded: BertOutput, attention_mask, pooler, doc_index, num_docs) -> torch.Tensor:
        return self.classify(self.features(encoded, pooler), doc_index, num_docs)

    def classify(self, x: torch.Tensor, doc_index: torch.Tensor | None, num_docs: int | None) -> torch.Tensor:
        """Chunk features x (C, F) -> logits (B, K classes); chunks are pooled per document first."""
        if doc_index is not None:
            padded, mask = group_chunks(x, doc_index, num_docs)  # (B, K, F), (B, K)
            x = self.chunk_pooling(padded, mask)  # (B, F)
        return self.out(self.dropout(x))


def attention_penalty(weights: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2017) §2.2: P = ||A A^T - I||_F^2 for A (r, T) = the hops' attention rows.

    weights (B, T, r), each column a distribution over tokens -> the batch mean of P, float32 scalar.
    """
    a = weights.float().transpose(1, 2)  # (B, r, T)
    gram = a @ a.transpose(1, 2)  # (B, r, r)
    eye = torch.eye(gram.shape[-1], device=gram.device)
    return ((gram - eye) ** 2).sum((1, 2)).mean()


class BiLSTMAttentionHead(nn.Module):
    """BERT-Feat (paper Table 6 baseline): frozen BERT token features -> BiLSTM -> structured
    self-attention of Lin et al. (2017): A = softmax(W2 tanh(W1 h^T)), M = A h -> MLP -> linear.

    After each forward, `penalty` holds Lin et al.'s redundancy penalty ||A A^T - I||_F^2 averaged
    over the batch (float32 scalar): it pushes the r attention hops to look at different tokens. The
    training script adds it to the loss with a coefficient (train.py --attention_penalty).
    """

    def __init__(self, config: BertConfig, head: HeadConfig):
        super().__init__()
        self.lstm = nn.LSTM(config.hidden_size, head.lstm_size, batch_first=True, bidirectional=True)
        size = 2 * head.lstm_size
        self.w1 = nn.Linear(size, head.attention_size, bias=False)
        self.w2 = nn.Linear(head.attention_size, head.attention_hops, bias=False)
        self.dropout = nn.Dropout(head.dropout)
        self.hidden = nn.Linear(head.attention_hops * size, size)
        self.out = nn.Linear(size, head.num_labels)
        self.penalty = None

    def last_layer_positions(self, input_ids: torch.Tensor) -> None:
        """None: the BiLSTM reads the last layer at every token."""
        return None

    def hidden_states_read(self) -> list[int]:
        """Only the last layer (BertModel.forward's keep_hidden_states; the encoder always keeps it)."""
        return []

    def forward(self, encoded: BertOutput, attention_mask, pooler, doc_index, num_docs) -> torch.Tensor:
        if doc_index is not None:
            raise ValueError("the BiLSTM head reads one sequence per document: use a truncation strategy")
        lengths = attention_mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(encoded.sequence_output, lengths, batch_first=True,
                                                   enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=attention_mask.shape[1])
        scores = self.w2(torch.tanh(self.w1(h)))  # (B, T, r)
        scores = scores.masked_fill(~attention_mask.bool()[..., None], float("-inf"))
        weights = torch.softmax(scores, dim=1)  # attention over tokens, one distribution per hop
        self.penalty = attention_penalty(weights)
        m = torch.einsum("btr,btf->brf", weights, h).flatten(1)  # (B, r * 2 * lstm_size)
        return self.out(self.dropout(torch.relu(self.hidden(self.dropout(m)))))


HEADS = {"cls": ClsHead, "bilstm_attention": BiLSTMAttentionHead}


def classify(bert: BertModel, head: nn.Module, input_ids, token_type_ids, attention_mask, doc_index,
             num_docs) -> torch.Tensor:
    """The encoder computes what `head` reads (BertModel.last_layer), then the head gives logits (B, K)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    encoded = bert(input_ids, token_type_ids, attention_mask, head.last_layer_positions(input_ids),
                   head.hidden_states_read())
    return head(encoded, attention_mask, bert.pooler, doc_index, num_docs)


class BertClassifier(nn.Module):
    """BERT encoder + a classification head. Heads return logits; losses live in the training script."""

    def __init__(self, config: BertConfig, head: HeadConfig):
        super().__init__()
        self.config, self.head_config = config, head
        self.bert = BertModel(config)
        self.head = HEADS[head.head](config, head)
        self.head.apply(lambda module: init_weights(module, config.initializer_range))

    @classmethod
    def from_parts(cls, config: BertConfig, head_config: HeadConfig, bert: BertModel, head: nn.Module):
        """A classifier over existing modules (shared, not copied; nothing is initialised)."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.config, model.head_config, model.bert, model.head = config, head_config, bert, head
        return model

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                doc_index: torch.Tensor | None = None, num_docs: int | None = None) -> torch.Tensor:
        """Inputs (C, T). With hierarchical encoding, doc_index (C,) says which of num_docs documents
        each chunk belongs to. Returns logits (B, K)."""
        return classify(self.bert, self.head, input_ids, token_type_ids, attention_mask, doc_index, num_docs)

    # Hierarchical texts in pieces: forward() == classify_chunks(chunk_features(...)) with the chunks'
    # features computed in as many encoder calls as memory needs (minibert.training.evaluation).

    def chunk_features(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """Inputs (C, T) -> the head's feature of every chunk (C, F), before chunk pooling."""
        if not isinstance(self.head, ClsHead):
            raise ValueError(f"the {self.head_config.head} head has no per-chunk features")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        encoded = self.bert(input_ids, token_type_ids, attention_mask, self.head.last_layer_positions(input_ids),
                           self.head.hidden_states_read())
        return self.head.features(encoded, self.bert.pooler)

    def classify_chunks(self, features: torch.Tensor, doc_index: torch.Tensor, num_docs: int) -> torch.Tensor:
        """Chunk features (C, F) of num_docs documents (doc_index (C,)) -> logits (B, K)."""
        return self.head.classify(features, doc_index, num_docs)


class TaskClassifier(nn.Module):
    """The model a fine-tuning run trains: one BERT encoder and a head per task, called as
    `model(task, inputs...)`. A single-task run is a table of one head; a multi-task run (paper §4.3,
    Exp-III) has one head per task, each built from its own HeadConfig and seeing only its own task's
    batches, while the encoder and its embeddings are shared by all.

    Parameter names are bert.* and heads.<task>.*, so layer-wise learning rates and freezing treat
    every head as "head". `classifier(task)` is that task's BertClassifier: the same modules, not
    copies, which is what evaluation, prediction and saving read.
    """

    def __init__(self, config: BertConfig, heads: dict[str, HeadConfig], head_init: str = GOOGLE_INIT):
        """New heads' weights are drawn as WEIGHT_INITS[head_init] says (--head_init)."""
        super().__init__()
        check_task_names(heads)
        self.config, self.head_configs = config, dict(heads)
        self.bert = BertModel(config)
        self.heads = nn.ModuleDict({name: HEADS[head.head](config, head) for name, head in heads.items()})
        self.heads.apply(lambda module: init_weights(module, config.initializer_range, head_init))

    @classmethod
    def from_parts(cls, config: BertConfig, head_configs: dict[str, HeadConfig], bert: BertModel,
                   heads: dict[str, nn.Module]) -> "TaskClassifier":
        """A model over existing modules (shared, not copied; nothing is initialised)."""
        check_task_names(head_configs)
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.config, model.head_configs, model.bert = config, dict(head_configs), bert
        model.heads = nn.ModuleDict(heads)
        return model

    def forward(self, task: str, input_ids, token_type_ids=None, attention_mask=None,
                doc_index: torch.Tensor | None = None, num_docs: int | None = None) -> torch.Tensor:
        """Logits (B, K_task) of `task`'s head; inputs as BertClassifier.forward."""
        return classify(self.bert, self.heads[task], input_ids, token_type_ids, attention_mask, doc_index, num_docs)

    def classifier(self, task: str) -> BertClassifier:
        """`task`'s classifier: this model's encoder and that task's head (the same modules)."""
        return BertClassifier.from_parts(self.config, self.head_configs[task], self.bert, self.heads[task])


def check_task_names(heads: dict) -> None:
    for name in heads:
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(f"task names use letters, digits, _ and -, got {name!r}")
