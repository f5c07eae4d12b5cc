"""Explicit name tables: minibert <-> Google TF <-> Hugging Face.

minibert's canonical names are the state_dict names of its full models: the encoder under `bert.`,
the pre-training heads under `mlm.` / `nsp.`, a classifier's final linear layer at `head.out.`.
`{i}` stands for the layer number. TF kernels are stored (in, out) and are transposed exactly where
the TF name ends in `kernel` (modeling.py's dense layers); every other tensor is copied as is.
"""

# (minibert, Google TF, Hugging Face). Hugging Face's own BertModel files drop the `bert.` prefix.
ENCODER_TABLE = [
    ("bert.embeddings.word.weight", "bert/embeddings/word_embeddings",
     "bert.embeddings.word_embeddings.weight"),
    ("bert.embeddings.position.weight", "bert/embeddings/position_embeddings",
     "bert.embeddings.position_embeddings.weight"),
    ("bert.embeddings.token_type.weight", "bert/embeddings/token_type_embeddings",
     "bert.embeddings.token_type_embeddings.weight"),
    ("bert.embeddings.norm.weight", "bert/embeddings/LayerNorm/gamma", "bert.embeddings.LayerNorm.weight"),
    ("bert.embeddings.norm.bias", "bert/embeddings/LayerNorm/beta", "bert.embeddings.LayerNorm.bias"),
    ("bert.pooler.weight", "bert/pooler/dense/kernel", "bert.pooler.dense.weight"),
    ("bert.pooler.bias", "bert/pooler/dense/bias", "bert.pooler.dense.bias"),
]

LAYER_TABLE = [
    ("bert.layers.{i}.query.weight", "bert/encoder/layer_{i}/attention/self/query/kernel",
     "bert.encoder.layer.{i}.attention.self.query.weight"),
    ("bert.layers.{i}.query.bias", "bert/encoder/layer_{i}/attention/self/query/bias",
     "bert.encoder.layer.{i}.attention.self.query.bias"),
    ("bert.layers.{i}.key.weight", "bert/encoder/layer_{i}/attention/self/key/kernel",
     "bert.encoder.layer.{i}.attention.self.key.weight"),
    ("bert.layers.{i}.key.bias", "bert/encoder/layer_{i}/attention/self/key/bias",
     "bert.encoder.layer.{i}.attention.self.key.bias"),
    ("bert.layers.{i}.value.weight", "bert/encoder/layer_{i}/attention/self/value/kernel",
     "bert.encoder.layer.{i}.attention.self.value.weight"),
    ("bert.layers.{i}.value.bias", "bert/encoder/layer_{i}/attention/self/value/bias",
     "bert.encoder.layer.{i}.attention.self.value.bias"),
    ("bert.layers.{i}.attn_out.weight", "bert/encoder/layer_{i}/attention/output/dense/kernel",
     "bert.encoder.layer.{i}.attention.output.dense.weight"),
    ("bert.layers.{i}.attn_out.bias", "bert/encoder/layer_{i}/attention/output/dense/bias",
     "bert.encoder.layer.{i}.attention.output.dense.bias"),
    ("bert.layers.{i}.attn_norm.weight", "bert/encoder/layer_{i}/attention/output/LayerNorm/gamma",
     "bert.encoder.layer.{i}.attention.output.LayerNorm.weight"),
    ("bert.layers.{i}.attn_norm.bias", "bert/encoder/layer_{i}/attention/output/LayerNorm/beta",
     "bert.encoder.layer.{i}.attention.output.LayerNorm.bias"),
    ("bert.layers.{i}.ffn_in.weight", "bert/encoder/layer_{i}/intermediate/dense/kernel",
     "bert.encoder.layer.{i}.intermediate.dense.weight"),
    ("bert.layers.{i}.ffn_in.bias", "bert/encoder/layer_{i}/intermediate/dense/bias",
     "bert.encoder.layer.{i}.intermediate.dense.bias"),
    ("bert.layers.{i}.ffn_out.weight", "bert/encoder/layer_{i}/output/dense/kernel",
     "bert.encoder.layer.{i}.output.dense.weight"),
    ("bert.layers.{i}.ffn_out.bias", "bert/encoder/layer_{i}/output/dense/bias",
     "bert.encoder.layer.{i}.output.dense.bias"),
    ("bert.layers.{i}.ffn_norm.weight", "bert/encoder/layer_{i}/output/LayerNorm/gamma",
     "bert.encoder.layer.{i}.output.LayerNorm.weight"),
    ("bert.layers.{i}.ffn_norm.bias", "bert/encoder/layer_{i}/output/LayerNorm/beta",
     "bert.encoder.layer.{i}.output.LayerNorm.bias"),
]

HEAD_TABLE = [
    ("mlm.transform.weight", "cls/predictions/transform/dense/kernel", "cls.predictions.transform.dense.weight"),
    ("mlm.transform.bias", "cls/predictions/transform/dense/bias", "cls.predictions.transform.dense.bias"),
    ("mlm.norm.weight", "cls/predictions/transform/LayerNorm/gamma",
     "cls.predictions.transform.LayerNorm.weight"),
    ("mlm.norm.bias", "cls/predictions/transform/LayerNorm/beta", "cls.predictions.transform.LayerNorm.bias"),
    # The MLM decoder weight is the word embedding table; only its bias is a variable of its own.
    ("mlm.bias", "cls/predictions/output_bias", "cls.predictions.bias"),
    # NSP weights are stored (2, H) by Google, like a torch Linear: not transposed.
    ("nsp.weight", "cls/seq_relationship/output_weights", "cls.seq_relationship.weight"),
    ("nsp.bias", "cls/seq_relationship/output_bias", "cls.seq_relationship.bias"),
    # run_classifier.py's create_model: top-level output_weights (C, H), not transposed.
    ("head.out.weight", "output_weights", "classifier.weight"),
    ("head.out.bias", "output_bias", "classifier.bias"),
]

# Google variables that are training state, not model: skipped and reported (optimization.py's adam_m/adam_v slots).
TF_OPTIMIZER_SUFFIXES = ("/adam_m", "/adam_v")
TF_OPTIMIZER_NAMES = ("global_step",)
TF_OPTIMIZER_PREFIXES = ("AdamWeightDecayOptimizer",)

# Hugging Face tensors that duplicate others or are buffers: skipped and reported.
# The decoder weight is tied to the word embeddings and decoder.bias to cls.predictions.bias;
# checkpoints.py checks that they really are equal before skipping them.
HF_TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
HF_BUFFERS = ("bert.embeddings.position_ids",)

# Legacy Hugging Face (pytorch-pretrained-bert) LayerNorm parameter names.
HF_LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


def expand(num_layers: int) -> list[tuple[str, str, str]]:
    """The full (minibert, tf, hf) table for a model with num_layers layers."""
    rows = list(ENCODER_TABLE)
    for i in range(num_layers):
        rows += [tuple(name.format(i=i) for name in row) for row in LAYER_TABLE]
    return rows + HEAD_TABLE


def is_tf_optimizer_state(name: str) -> bool:
    return (name in TF_OPTIMIZER_NAMES or name.endswith(TF_OPTIMIZER_SUFFIXES)
            or name.startswith(TF_OPTIMIZER_PREFIXES))


def tf_is_transposed(tf_name: str) -> bool:
    """Dense kernels are (in, out) in TF and (out, in) in torch; nothing else is transposed."""
    return tf_name.endswith("kernel")
