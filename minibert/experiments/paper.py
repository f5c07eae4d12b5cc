"""The paper's experiments as data: every table and figure of Sun et al. (2019) that fine-tunes a
classifier, each row naming only what differs from the paper's base recipe, with the published
test error rates (%) beside it.

A row's `config` holds fine-tuning options (the flat names of minibert.finetune.FinetuneConfig, as
train.py's flags). The runner (minibert.experiments.runner) adds
the base recipe of the chosen scale, the data set's files, the seed and the output folder. Rows
that fine-tune a further pre-trained checkpoint (Figure 3, Table 5, the ITPT/IDPT/CDPT rows) name
its corpus in `pretrain` (and settings that differ from the scale's in `pretrain_settings`); the
runner further pre-trains once per corpus, model and settings (minibert.experiments.pretraining_jobs)
and fine-tunes from the result. Rows the paper only quotes (Table 6's earlier models, Table 8's
ULMFiT) carry their published numbers and are never run. Table 1's statistics are TABLE1
(`reproduce.py table1` sets the prepared data sets beside them).
"""

from dataclasses import dataclass, field

from minibert.data.pretraining_corpus import CROSS_DOMAIN

# The paper's fine-tuning recipe (§5.2, §5.3 and its code, xuyige/BERT4doc-Classification): BERT-base,
# 512 tokens with head+tail 128 + 382, batch 24, lr 2e-5, 4 epochs, warm-up 0.1, dropout 0.1, and
# the code's BERTAdam: Google's AdamWeightDecay (no bias correction, eps 1e-6), each gradient tensor
# clipped to norm 1 on its own, warm-up then Google's linear decay computed from step 0 (`1 - x`).
# fp32: the paper's code has no mixed precision (reproduce.py --precision overrides it; "auto" would
# pick bf16 on recent GPUs).
PAPER_RECIPE = {
    "precision": "fp32",
    "max_seq_length": 512,
    "truncation": "head_tail",
    "head_tokens": 0,  # 0 = the paper's ratio: 128 of 510
    "batch_size": 24,
    "learning_rate": 2e-5,
    "epochs": 4,
    "warmup_proportion": 0.1,
    "dropout": 0.1,
    "layer_decay": 1.0,
    "optimizer": "adam_weight_decay",
    "clip_mode": "per_tensor",
    "max_grad_norm": 1.0,
    "schedule": "google_warmup_linear",
    "weight_decay": 0.01,
    "pooler": "auto",
    "batching": "random",  # the code's RandomSampler: a random permutation cut into batches each epoch
    # The code's modeling.py (BertForSequenceClassification.init_weights, also modeling_multitask.py)
    # draws the new classifier from a plain normal, sd 0.02, "slightly different from the TF version".
    "head_init": "normal",
}

# The paper's further pre-training (§5.2, and its code's run_pretraining.py flags): batch 32, 128
# tokens, 20 predictions per sequence, lr 5e-5, 100,000 steps with 10,000 warm-up, a checkpoint every
# 10,000 steps (the models Figure 3 fine-tunes). pretrain.py train's defaults are the same values
# (Google's run_pretraining.py); presets/pretrain/*.json write them out per corpus. dupe_factor is
# create_data's (the paper's code's README passes 5; Google's default is 10); max_seq_length and
# max_predictions_per_seq go to both create_data and train; every other key is train's. fp32 as
# PAPER_RECIPE.
PAPER_PRETRAIN = {
    "dupe_factor": 5,
    "train_batch_size": 32,
    "max_seq_length": 128,
    "max_predictions_per_seq": 20,
    "learning_rate": 5e-5,
    "num_train_steps": 100_000,
    "num_warmup_steps": 10_000,
    "save_checkpoints_steps": 10_000,
    "precision": "fp32",
}

# §5.7: BERT-large is further pre-trained "with a batch size of 24, the max sequence length of 128 and
# 120K training steps". The paper gives no other value for it, so the rest is §5.2's (lr 5e-5,
# 10,000 warm-up steps, 20 predictions per sequence, dupe_factor 5).
PAPER_PRETRAIN_LARGE = {**PAPER_PRETRAIN, "train_batch_size": 24, "num_train_steps": 120_000}

# Exp-I's best strategy (§5.3.4, Table 4): layer-wise decay 0.95 at lr 2e-5; Table 6's BERT-FiT.
BEST_EXP_I = {"layer_decay": 0.95}

# BERT-Feat (Table 6): frozen BERT features into a BiLSTM with self-attention (Lin et al. 2017).
# The paper gives neither its sizes nor its learning rate; a frozen encoder needs a larger lr than
# fine-tuning, 1e-3 is Adam's usual rate for a freshly initialised LSTM.
BERT_FEAT = {"head": "bilstm_attention", "freeze_encoder": True, "learning_rate": 1e-3}

# Short names of the data sets (data/<name>/) and the headings the paper's tables use.
DATASET_TITLES = {
    "imdb": "IMDb", "yelp_polarity": "Yelp P.", "yelp_full": "Yelp F.", "trec": "TREC",
    "yahoo_answers": "Yah. A.", "ag_news": "AG", "dbpedia": "DBP", "sogou_news": "Sogou",
    "bbc_news": "BBC News",
}
# Table 1: per data set, (classes, type, average length, max length, share longer than 512, train
# samples, test samples); lengths in WordPieces (§5.1: "the statistics of the length of the documents in
# the datasets are based on the word pieces").
TABLE1 = {
    "imdb": (2, "Sentiment", 292, 3_045, 12.69, 25_000, 25_000),
    "yelp_polarity": (2, "Sentiment", 177, 2_066, 4.60, 560_000, 38_000),
    "yelp_full": (5, "Sentiment", 179, 2_342, 4.60, 650_000, 50_000),
    "trec": (6, "Question", 11, 39, 0.00, 5_452, 500),
    "yahoo_answers": (10, "Question", 131, 4_018, 2.65, 1_400_000, 60_000),
    "ag_news": (4, "Topic", 44, 221, 0.00, 120_000, 7_600),
    "dbpedia": (14, "Topic", 67, 3_841, 0.00, 560_000, 70_000),
    "sogou_news": (6, "Topic", 737, 47_988, 46.23, 54_000, 6_000),
}
# Training set sizes, from which Figure 4's proportions count.
TABLE1_TRAIN = {name: row[5] for name, row in TABLE1.items()}
TABLE1_MAX_LENGTH = {name: row[3] for name, row in TABLE1.items()}
CHINESE = {"sogou_news"}  # fine-tuned from the Chinese BERT-base (runner --init_chinese)
ENGLISH7 = ("imdb", "yelp_polarity", "yelp_full", "trec", "yahoo_answers", "ag_news", "dbpedia")


@dataclass(frozen=True)
class Row:
    """One row of a table or one point of a figure.

    name: the row label as in the paper. config: fine-tuning options that differ from the recipe
    ("init": "large" asks for the runner's --init_large).
    paper: published test error (%) per data set. x / series: where a figure puts it.
    pretrain: the corpus of the further pre-training the row fine-tunes from ("" = none): WITHIN (the
    data set's own training text), IN_DOMAIN (its domain's), or a `pretrain.py corpus --sources`
    name: a data set, a domain (sentiment, question, topic) or "all" (cross-domain).
    pretrain_step: fine-tune the model after this many pre-training steps (Figure 3); 0 = the end.
    pretrain_settings: pre-training settings that differ from the scale's (Table 8's BERT-large).
    published_only: a row the paper quotes or reports without defining it well enough to run (Table
    6's baselines, Table 8's ULMFiT): shown in RESULTS.md as "published, not run", never planned.
    """

    name: str
    config: dict = field(default_factory=dict)
    paper: dict = field(default_factory=dict)
    x: float | None = None
    series: str = ""
    pretrain: str = ""
    pretrain_step: int = 0
    multi_task: bool = False  # Table 7: multi-task fine-tuning over all of the experiment's data sets
    pretrain_settings: dict = field(default_factory=dict)
    published_only: bool = False


@dataclass(frozen=True)
class Experiment:
    """A table or figure: its rows, the data sets it was run on, and how the runner shows it.

    plot: "" (a table only), "curves" (Figure 2: dev and train error over steps, one panel per row),
    "steps" (Figure 3: error over x) or "few_shot" (Figure 4: error over x, one line per series).
    relative_to: a row name: RESULTS.md adds the column "Avg. Δ", each row's mean relative error
    reduction against that row over the data sets (Table 6 against BERT-Feat, avg_delta).
    """

    name: str
    title: str
    datasets: tuple[str, ...]
    rows: tuple[Row, ...]
    plot: str = ""
    x_label: str = ""
    relative_to: str = ""


def avg_delta(errors: dict[str, float], reference: dict[str, float]) -> float | None:
    """Table 6's Avg. Δ (§5.4.3: "using BERT-Feat as a reference, we calculate the average percentage
    increase of other BERT-FiT models on each dataset"): the mean over the data sets both have of
    100 * (reference - error) / reference; None when they share none. The paper's BERT-FiT: 9.22%."""
    shared = [d for d in errors if d in reference]
    if not shared:
        return None
    return sum(100 * (reference[d] - errors[d]) / reference[d] for d in shared) / len(shared)


# Row.pretrain values that depend on the data set fine-tuned (§5.4): ITPT and IDPT (CDPT's corpus,
# CROSS_DOMAIN, is the same for every data set).
WITHIN, IN_DOMAIN = "within", "in_domain"


def table1_chunks(dataset: str, max_seq_length: int) -> int:
    """The chunks of max_seq_length - 2 tokens that the data set's longest text fills, from Table 1's
    max length in WordPieces: IMDb 3,045 -> 6 at 512 tokens, Sogou News 47,988 -> 95; 0 for a data
    set Table 1 does not list."""
    if dataset not in TABLE1_MAX_LENGTH:
        return 0
    return -(-TABLE1_MAX_LENGTH[dataset] // (max_seq_length - 2))  # ceil: k = L / 510 rounded up


# Table 2: truncation and hierarchical methods on IMDb and Sogou (§5.3.1). "The representation of each
# fraction is the hidden state of the [CLS] tokens of the last layer": the raw [CLS] vector, not
# BERT's tanh pooler output (pooler false), then mean, max or self-attention over the chunks. Every
# chunk is encoded: at the paper scale the runner caps the chunks at table1_chunks (the longest text
# Table 1 measured), so no text of the paper's data sets loses a chunk.
HIERARCHICAL = {"hierarchical": True, "pooler": "false"}
TABLE2 = Experiment("table2", "Table 2: long-text methods (test error %)", ("imdb", "sogou_news"), (
    Row("head-only", {"truncation": "head"}, {"imdb": 5.63, "sogou_news": 2.58}),
    Row("tail-only", {"truncation": "tail"}, {"imdb": 5.44, "sogou_news": 3.17}),
    Row("head+tail", {}, {"imdb": 5.42, "sogou_news": 2.43}),
    Row("hier. mean", {**HIERARCHICAL, "chunk_pooling": "mean"}, {"imdb": 5.89, "sogou_news": 2.83}),
    Row("hier. max", {**HIERARCHICAL, "chunk_pooling": "max"}, {"imdb": 5.71, "sogou_news": 2.47}),
    Row("hier. self-attention", {**HIERARCHICAL, "chunk_pooling": "self_attention"},
        {"imdb": 5.49, "sogou_news": 2.65}),
))

# Table 3: features from different layers (§5.3.2). The paper counts BERT's layers from 0 (Layer-0 is
# the first Transformer block); minibert's --layers counts the embedding output as 0, so Layer-k is
# --layers k+1. --pooler auto takes the raw [CLS] of any layer but the last, as the paper's code.
_TABLE3_LAYERS = [11.07, 9.81, 9.29, 8.66, 7.83, 6.83, 6.83, 6.41, 6.04, 5.70, 5.46, 5.42]
TABLE3 = Experiment("table3", "Table 3: features from different layers (test error %)", ("imdb",), (
    *(Row(f"Layer-{k}", {"layers": str(k + 1)}, {"imdb": e}) for k, e in enumerate(_TABLE3_LAYERS)),
    Row("First 4 Layers + concat", {"layers": "first4", "layer_combine": "concat"}, {"imdb": 8.69}),
    Row("First 4 Layers + mean", {"layers": "first4", "layer_combine": "mean"}, {"imdb": 9.09}),
    Row("First 4 Layers + max", {"layers": "first4", "layer_combine": "max"}, {"imdb": 8.76}),
    Row("Last 4 Layers + concat", {"layers": "last4", "layer_combine": "concat"}, {"imdb": 5.43}),
    Row("Last 4 Layers + mean", {"layers": "last4", "layer_combine": "mean"}, {"imdb": 5.44}),
    Row("Last 4 Layers + max", {"layers": "last4", "layer_combine": "max"}, {"imdb": 5.42}),
    Row("All 12 Layers + concat", {"layers": "all", "layer_combine": "concat"}, {"imdb": 5.44}),
))

# Figure 2: catastrophic forgetting (§5.3.3): learning curves of the error at four learning rates. The
# paper publishes only the curves; the runner adds train and dev error at regular steps.
FIGURE2 = Experiment("figure2", "Figure 2: catastrophic forgetting (error % over optimizer steps)", ("imdb",), tuple(
    Row(f"lr={lr:g}", {"learning_rate": lr}, x=lr) for lr in (2e-5, 5e-5, 1e-4, 4e-4)
), plot="curves", x_label="optimizer step")

# Table 4: layer-wise decreasing learning rate (§5.3.4, Eq. 2).
_TABLE4 = [(2.5e-5, 1.0, 5.52), (2.5e-5, 0.95, 5.46), (2.5e-5, 0.90, 5.44), (2.5e-5, 0.85, 5.58),
           (2e-5, 1.0, 5.42), (2e-5, 0.95, 5.40), (2e-5, 0.90, 5.52), (2e-5, 0.85, 5.65)]
TABLE4 = Experiment("table4", "Table 4: layer-wise decreasing learning rate (test error %)", ("imdb",), tuple(
    Row(f"lr {lr:g}, xi {xi:.2f}", {"learning_rate": lr, "layer_decay": xi}, {"imdb": e}) for lr, xi, e in _TABLE4
))

# Figure 3: within-task further pre-training steps (§5.4.1): BERT-FiT fine-tuned from the IMDb
# pre-training after 0, 10k, ..., 100k steps. The paper gives numbers only at 0 (Table 6 BERT-FiT)
# and 100k (Table 6 BERT-ITPT-FiT).
# Deviation from reference: the paper's axis runs to 500k, but its settings (§5.2) and its code
# pre-train 100k steps with a checkpoint every 10k, and it does not say how the longer runs were
# scheduled (the linear decay depends on the total); the runner fine-tunes those 10k checkpoints.
FIGURE3 = Experiment("figure3", "Figure 3: within-task pre-training steps (test error %)", ("imdb",), (
    Row("0", BEST_EXP_I, {"imdb": 5.40}, x=0, series="BERT-ITPT-FiT"),
    *(Row(f"{k}k", BEST_EXP_I, {"imdb": 4.37} if k == 100 else {}, x=k, series="BERT-ITPT-FiT", pretrain=WITHIN,
          pretrain_step=1000 * k) for k in range(10, 101, 10)),
), plot="steps", x_label="within-task pre-training steps (thousand)")

# Table 5: in-domain and cross-domain further pre-training (§5.4.2), one row per pre-training corpus.
_TABLE5 = {
    "IMDb": [4.37, 2.18, 29.60, 2.60, 22.39, 5.24, 0.68],
    "Yelp P.": [5.24, 1.92, 29.37, 2.00, 22.38, 5.14, 0.65],
    "Yelp F.": [5.18, 1.94, 29.42, 2.40, 22.33, 5.43, 0.65],
    "all sentiment": [4.88, 1.87, 29.25, 3.00, 22.35, 5.34, 0.67],
    "TREC": [5.65, 2.09, 29.35, 3.20, 22.17, 5.12, 0.66],
    "Yah. A.": [5.52, 2.08, 29.31, 1.80, 22.38, 5.16, 0.67],
    "all question": [5.68, 2.14, 29.52, 2.20, 21.86, 5.21, 0.68],
    "AG's News": [5.97, 2.15, 29.38, 2.00, 22.32, 4.80, 0.68],
    "DBPedia": [5.80, 2.13, 29.47, 2.60, 22.30, 5.13, 0.68],
    "all topic": [5.85, 2.20, 29.68, 2.60, 22.28, 4.88, 0.65],
    "all": [5.18, 1.97, 29.20, 2.80, 21.94, 5.08, 0.67],
    "w/o pretrain": [5.40, 2.28, 30.06, 2.80, 22.42, 5.25, 0.71],
}
# Each row's corpus as a `pretrain.py corpus --sources` name (a data set's row on that data set is
# its within-task pre-training).
_TABLE5_CORPUS = {"IMDb": "imdb", "Yelp P.": "yelp_polarity", "Yelp F.": "yelp_full", "all sentiment": "sentiment",
                  "TREC": "trec", "Yah. A.": "yahoo_answers", "all question": "question", "AG's News": "ag_news",
                  "DBPedia": "dbpedia", "all topic": "topic", "all": CROSS_DOMAIN, "w/o pretrain": ""}
TABLE5 = Experiment("table5", "Table 5: further pre-training corpora (test error %)", ENGLISH7, tuple(
    Row(name, BEST_EXP_I, dict(zip(ENGLISH7, errors)), pretrain=_TABLE5_CORPUS[name])
    for name, errors in _TABLE5.items()
))

# Table 6: the main results on eight data sets. The earlier models' errors are quoted from their
# papers (Sogou marked * is the paper's own run of them on its Sogou data); "/" = not reported.
_ALL8 = (*ENGLISH7, "sogou_news")
_BASELINES = {
    "Char-level CNN (Zhang et al., 2015)": [None, 4.88, 37.95, None, 28.80, 9.51, 1.55, 3.80],
    "VDCNN (Conneau et al., 2016)": [None, 4.28, 35.28, None, 26.57, 8.67, 1.29, 3.28],
    "DPCNN (Johnson and Zhang, 2017)": [None, 2.64, 30.58, None, 23.90, 6.87, 0.88, 3.48],
    "D-LSTM (Yogatama et al., 2017)": [None, 7.40, 40.40, None, 26.30, 7.90, 1.30, 5.10],
    "Standard LSTM (Seo et al., 2017)": [8.90, None, None, None, None, 6.50, None, None],
    "Skim-LSTM (Seo et al., 2017)": [8.80, None, None, None, None, 6.40, None, None],
    "HAN (Yang et al., 2016)": [None, None, None, None, 24.20, None, None, None],
    "Region Emb. (Qiao et al., 2018)": [None, 3.60, 35.10, None, 26.30, 7.20, 1.10, 2.40],
    "CoVe (McCann et al., 2017)": [8.20, None, None, 4.20, None, None, None, None],
    "ULMFiT (Howard and Ruder, 2018)": [4.60, 2.16, 29.98, 3.60, None, 5.01, 0.80, None],
}


def _published(name: str, errors: list, datasets: tuple[str, ...]) -> Row:
    return Row(name, paper={d: e for d, e in zip(datasets, errors) if e is not None}, published_only=True)


TABLE6 = Experiment("table6", "Table 6: test error rates (%)", _ALL8, (
    *(_published(name, errors, _ALL8) for name, errors in _BASELINES.items()),
    Row("BERT-Feat", BERT_FEAT, dict(zip(_ALL8, [6.79, 2.39, 30.47, 4.20, 22.72, 5.92, 0.70, 2.50]))),
    Row("BERT-FiT", BEST_EXP_I, dict(zip(_ALL8, [5.40, 2.28, 30.06, 2.80, 22.42, 5.25, 0.71, 2.43]))),
    Row("BERT-ITPT-FiT", BEST_EXP_I, dict(zip(_ALL8, [4.37, 1.92, 29.42, 3.20, 22.38, 4.80, 0.68, 1.93])),
        pretrain=WITHIN),
    Row("BERT-IDPT-FiT", BEST_EXP_I, dict(zip(ENGLISH7, [4.88, 1.87, 29.25, 2.20, 21.86, 4.88, 0.65])),
        pretrain=IN_DOMAIN),
    Row("BERT-CDPT-FiT", BEST_EXP_I, dict(zip(ENGLISH7, [5.18, 1.97, 29.20, 2.80, 21.94, 5.08, 0.67])),
        pretrain=CROSS_DOMAIN),
), relative_to="BERT-Feat")

# Table 7: multi-task fine-tuning (§5.5) on IMDb, Yelp P., AG and DBpedia, then each task again.
# Stage 1 is the paper's code, codes/fine-tuning/run_classifier_multitask.py (its README gives no
# command line for it, so its defaults): lr 5e-5, 3 epochs, batch 32, warm-up 0.1, BERTAdam, no
# layer-wise decay (its --discr, off by default, is a 3-group scheme, not xi); every batch drawn
# afresh from its task (--task_sampling random); only the encoder is saved, so stage 2 starts a new
# head. Stage 2 is §5.5's "fine-tune ... again with a lower learning rate", which gives no value:
# 0.4 x 5e-5 = 2e-5, the paper's fine-tuning rate, for --stage2_epochs (1), with random batches as
# run_classifier.py draws them. The paper gives stage 2 no batch size or ξ either; it is single-task
# fine-tuning compared with the BERT-FiT row beside it, so it takes that row's batch 24 (§5.2) and
# ξ 0.95 (BEST_EXP_I), not stage 1's 32 and 1.0.
# Deviation from reference: the code's stage 1 reads 128 tokens (head only); minibert encodes each
# task once for both stages, so stage 1 keeps the recipe's length (512, head+tail at paper scale):
# stage 2 must read what BERT-FiT reads for the table's comparison to mean anything.
MFIT = {"learning_rate": 5e-5, "epochs": 3, "batch_size": 32, "warmup_proportion": 0.1, "layer_decay": 1.0,
        "task_sampling": "random", "batching": "random", "stage2_head": "fresh", "stage2_lr_factor": 0.4,
        "stage2_batch_size": PAPER_RECIPE["batch_size"], "stage2_layer_decay": BEST_EXP_I["layer_decay"]}
_MT = ("imdb", "yelp_polarity", "ag_news", "dbpedia")
TABLE7 = Experiment("table7", "Table 7: multi-task fine-tuning (test error %)", _MT, (
    Row("BERT-FiT", BEST_EXP_I, dict(zip(_MT, [5.40, 2.28, 5.25, 0.71]))),
    Row("BERT-MFiT-FiT", MFIT, dict(zip(_MT, [5.36, 2.19, 5.20, 0.68])), multi_task=True),
    Row("BERT-CDPT-FiT", BEST_EXP_I, dict(zip(_MT, [5.18, 1.97, 5.08, 0.67])), pretrain=CROSS_DOMAIN),
    Row("BERT-CDPT-MFiT-FiT", MFIT, dict(zip(_MT, [4.96, 2.06, 5.13, 0.67])), pretrain=CROSS_DOMAIN,
        multi_task=True),
))

# Figure 4: few-shot learning on IMDb (§5.6). Proportions of Table 1's 25,000 training reviews; the
# paper states only the 0.4% points (17.26 / 9.23); the 100% points are Table 6's. The paper's BERT-FiT
# line is Table 6's BERT-FiT, fine-tuned with the best Exp-I strategy as §5.4 says of the experiments
# that follow (ξ 0.95, Table 4): its 100% point is Table 6's 5.40, so both its published points sit on
# the "BERT-FiT (xi 0.95)" series. The figure does not print its ξ, so the series without layer-wise
# decay ("BERT-FiT", Table 4's 5.42 at 100%) is run beside it, with no published point.
PROPORTIONS = (0.004, 0.01, 0.02, 0.04, 0.1, 0.2, 1.0)
_FIG4_PAPER = {("BERT-FiT (xi 0.95)", 0.004): 17.26, ("BERT-ITPT-FiT", 0.004): 9.23,
               ("BERT-FiT (xi 0.95)", 1.0): 5.40, ("BERT-ITPT-FiT", 1.0): 4.37}
FIGURE4 = Experiment("figure4", "Figure 4: few-shot learning on IMDb (test error %)", ("imdb",), tuple(
    Row(f"{series} {100 * p:g}%", config, {"imdb": _FIG4_PAPER[series, p]} if (series, p) in _FIG4_PAPER else {},
        x=p, series=series, pretrain=pretrain)
    for series, config, pretrain in (("BERT-FiT", {}, ""), ("BERT-FiT (xi 0.95)", BEST_EXP_I, ""),
                                     ("BERT-ITPT-FiT", BEST_EXP_I, WITHIN))
    for p in PROPORTIONS
), plot="few_shot", x_label="proportion of training examples (%)")

# Table 8: BERT-large (§5.7), fine-tuned with batch 24 at 512 tokens (runner --init_large); its
# further pre-training has its own settings (batch 24, 120K steps: PAPER_PRETRAIN_LARGE).
# Assumption: §5.7 gives BERT-large's fine-tuning no learning rate or ξ; lr 2e-5 with ξ 0.95 is the
# best BERT-base setting (Table 4), the one every other row uses, and the only one the paper tuned.
_T8 = ("imdb", "yelp_polarity", "yelp_full", "ag_news", "dbpedia")
_LARGE = {**BEST_EXP_I, "init": "large"}
_LARGE_PRETRAIN = {k: v for k, v in PAPER_PRETRAIN_LARGE.items() if PAPER_PRETRAIN.get(k) != v}
TABLE8 = Experiment("table8", "Table 8: BERT-base and BERT-large (test error %)", _T8, (
    _published("ULMFiT (Howard and Ruder, 2018)", _BASELINES["ULMFiT (Howard and Ruder, 2018)"], _ALL8),
    Row("BERT-base", BEST_EXP_I, dict(zip(_T8, [5.40, 2.28, 30.06, 5.25, 0.71]))),
    Row("BERT-base + ITPT", BEST_EXP_I, dict(zip(_T8, [4.37, 1.92, 29.42, 4.80, 0.68])), pretrain=WITHIN),
    Row("BERT-large", _LARGE, dict(zip(_T8, [4.86, 2.04, 29.25, 4.86, 0.62]))),
    Row("BERT-large + ITPT", _LARGE, dict(zip(_T8, [4.21, 1.81, 28.62, 4.66, 0.61])), pretrain=WITHIN,
        pretrain_settings=_LARGE_PRETRAIN),
))

EXPERIMENTS = {e.name: e for e in (TABLE2, TABLE3, FIGURE2, TABLE4, FIGURE3, TABLE5, TABLE6, TABLE7, FIGURE4, TABLE8)}
