"""Convert BERT checkpoints between Google TF, Hugging Face and minibert folders.

    python checkpoints_convert.py SRC DST [--format minibert|hf|tf] [--config FILE]

SRC is a Google checkpoint (release folder, prefix or .index file), a Hugging Face folder or a
minibert folder; its format is detected. The script prints what was mapped and skipped, then loads
DST back and runs one forward pass on a sentence as a sanity check.
"""

from dataclasses import dataclass

import torch

from minibert.checkpoints.formats import FORMATS, load_checkpoint, load_state, save_checkpoint
from minibert.cli import option, run_script
from minibert.model.bert import BertModel
from minibert.model.pretraining import BertForPreTraining
from minibert.text.encoding import build_inputs, pad_batch
from minibert.text.tokenization import FullTokenizer

SANITY_TEXT = ("the capital of france is", "[MASK]", ".")


@dataclass
class ConvertConfig:
    src: str = option("", "checkpoint to read: TF prefix/folder, Hugging Face folder or minibert folder")
    dst: str = option("", "folder to write")
    format: str = option("minibert", "format to write", choices=FORMATS)
    config: str = option("", "config JSON to use instead of the one beside SRC")
    do_lower_case: bool = option(True, "lower-case the sanity sentence (False for cased vocabularies)")


def sanity_forward(folder: str, vocab_file, do_lower_case: bool) -> None:
    """Load the written checkpoint back and run one sentence through it."""
    checkpoint = load_checkpoint(folder)
    has_mlm = "mlm.bias" in checkpoint.state and "nsp.weight" in checkpoint.state
    model = (BertForPreTraining if has_mlm else BertModel)(checkpoint.config).eval()
    load_state(model, checkpoint.state, folder)
    if vocab_file is None:
        print("sanity forward skipped: no vocab.txt beside the checkpoint")
        return
    tokenizer = FullTokenizer(vocab_file, do_lower_case=do_lower_case, check_case=False)
    before, mask, after = SANITY_TEXT
    # [MASK] is inserted by id: the basic tokenizer would split the text "[MASK]" at its brackets.
    ids = tokenizer.encode_text(before) + [tokenizer.vocab[mask]] + tokenizer.encode_text(after)
    batch = pad_batch([build_inputs(ids, cls_id=tokenizer.vocab["[CLS]"], sep_id=tokenizer.vocab["[SEP]"])])
    with torch.no_grad():
        if has_mlm:
            out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
            top = out.mlm_logits[0, len(tokenizer.encode_text(before)) + 1].topk(5).indices.tolist()
            pooled = out.encoder.pooled_output
            print(f"sanity forward: '{' '.join(SANITY_TEXT)}' -> [MASK] top 5: "
                  f"{tokenizer.convert_ids_to_tokens(top)}")
        else:
            pooled = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).pooled_output
    print(f"sanity forward: pooled output norm {pooled.norm().item():.4f}, first values "
          f"{[round(v, 4) for v in pooled[0, :4].tolist()]}")


def main(cfg: ConvertConfig) -> None:
    if not cfg.src or not cfg.dst:
        raise SystemExit("usage: checkpoints_convert.py SRC DST [--format minibert|hf|tf]")
    checkpoint = load_checkpoint(cfg.src, cfg.config or None)
    c = checkpoint.config
    print(f"read {checkpoint.format} checkpoint {checkpoint.source}: {c.num_hidden_layers} layers, hidden "
          f"{c.hidden_size}, {c.num_attention_heads} heads, vocab {c.vocab_size}, hidden_act {c.hidden_act}")
    heads = sorted({name.split(".")[0] for name in checkpoint.state} - {"bert"})
    print(f"mapped {len(checkpoint.state)} tensors (encoder{''.join(' + ' + h for h in heads)})")
    for line in checkpoint.skipped:
        print(f"skipped: {line}")
    if checkpoint.ignored_config_keys:
        print(f"ignored config keys: {', '.join(checkpoint.ignored_config_keys)}")
    if checkpoint.vocab_file is None:
        print("warning: no vocab.txt beside the source; the output has no vocabulary")
    out = save_checkpoint(cfg.dst, checkpoint, cfg.format)
    print(f"wrote {cfg.format} checkpoint to {out}")
    sanity_forward(cfg.dst, checkpoint.vocab_file, cfg.do_lower_case)


if __name__ == "__main__":
    run_script(main, ConvertConfig, None, __doc__, positional=("src", "dst"))
