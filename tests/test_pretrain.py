"""pretrain.py train against Google's run_pretraining.py, and its resume, accumulation, masking
modes, outputs and bad-input errors.

The acceptance run: 20 steps from tests/fixtures/tiny_google with dropout 0 and the tanh GELU
(Google's current modeling.py) on Google's sample_text_64 records; Google's own losses and final
weights are in tests/fixtures/pretraining_google/steps_sample_text_64 (see its README).
"""

import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ACCEPTANCE, FIXTURES, PRETRAINING, STEPS, make_google_dir
from safetensors.torch import load_file

import pretrain
from minibert.checkpoints import names
from minibert.checkpoints.formats import load_checkpoint
from minibert.checkpoints.tfrecord import read_examples, write_examples
from minibert.cli import build_parser, parse_config
from minibert.pretraining import DefaultConfig, PretrainConfig, PretrainHooks, train
from minibert.pretraining.embedded import default_train_config
from minibert.pretraining.model_setup import records_sha256

pytestmark = pytest.mark.usefixtures("keep_thread_count")  # pretrain.main sets torch's thread count (--threads)


@pytest.fixture
def google_dir(tmp_path):
    return make_google_dir(tmp_path / "init")


def run(args: list[str]):
    """pretrain.py train on one thread; fp32 unless the test names a precision (auto is bf16 on CPUs
    with native bf16, and these tests compare numbers with fp32 references)."""
    return pretrain.main(["train", *args, *fixed(args)])


def run_with_hook(args: list[str], after_step) -> dict:
    """run()'s training through the library, with after_step(step) called after every optimizer step
    (and that step's checkpoint)."""
    return train(parse_config(PretrainConfig, [*args, *fixed(args)]), PretrainHooks(after_step=after_step))


def fixed(args: list[str]) -> list[str]:
    precision = [] if any(a.startswith("--precision") for a in args) else ["--precision=fp32"]
    return [*precision, "--threads=1"]


class Crash(Exception):
    """Raised by a hook: the run ends there as a killed process would, with last/ as it was saved."""


def crash_at(step: int):
    def after_step(done: int) -> None:
        if done == step:
            raise Crash
    return after_step


def train_records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


def test_matches_googles_run_pretraining(google_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(PRETRAINING)
    out = tmp_path / "out"
    run([f"--init={google_dir}", "--input_file=sample_text_64/examples.tfrecord", f"--output_dir={out}", *ACCEPTANCE])
    expected = json.loads((STEPS / "steps.json").read_text())["steps"]
    records = train_records(out)
    assert [r["step"] for r in records] == [s["step"] for s in expected] == list(range(1, 21))
    for mine, google in zip(records, expected):
        for key in ("loss", "mlm_loss", "nsp_loss"):
            assert mine[key] == pytest.approx(google[key], rel=1e-5), (mine["step"], key)
        assert mine["lr"] == 1e-3 and mine["sequences_per_s"] > 0 and mine["tokens_per_s"] > 0
    checkpoint = load_checkpoint(out / "final")
    assert checkpoint.architecture == "BertForPreTraining" and (out / "final" / "vocab.txt").is_file()
    final = np.load(STEPS / "final.npz")
    table = {tf: ours for ours, tf, _ in names.expand(checkpoint.config.num_hidden_layers)}
    assert sorted(table[tf] for tf in final.files) == sorted(checkpoint.state)
    for tf_name in final.files:
        mine = checkpoint.state[table[tf_name]].numpy()
        mine = mine.T if names.tf_is_transposed(tf_name) else mine
        np.testing.assert_allclose(mine, final[tf_name], rtol=0, atol=2e-5, err_msg=tf_name)
    assert (out / "pretraining_curves.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["num_train_steps"] == 20


def test_gradient_accumulation_gives_the_same_steps(google_dir, tmp_path):
    common = [f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              *ACCEPTANCE[:3], "--num_train_steps=4", *ACCEPTANCE[4:]]
    run([*common, f"--output_dir={tmp_path / 'one'}"])
    run([*common, f"--output_dir={tmp_path / 'two'}", "--grad_accum_steps=2"])
    for a, b in zip(train_records(tmp_path / "one"), train_records(tmp_path / "two")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    a, b = (load_file(tmp_path / run / "final" / "model.safetensors") for run in ("one", "two"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("masking", ["static", pytest.param("dynamic", marks=pytest.mark.slow)])
def test_resume_mid_epoch_is_bit_identical(google_dir, tmp_path, masking):
    """10 steps of 8 records over 95 records, shuffled, with dropout: stopped at step 6 and resumed."""
    config = json.loads((google_dir / "bert_config.json").read_text())
    config.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    (google_dir / "bert_config.json").write_text(json.dumps(config))
    common = [f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              "--train_batch_size=8", "--max_seq_length=64", "--max_predictions_per_seq=10", "--num_warmup_steps=2",
              "--learning_rate=1e-3", "--log_every=1", "--save_checkpoints_steps=3", f"--masking={masking}",
              "--num_train_steps=10", "--keep_checkpoints=3"]
    run([*common, f"--output_dir={tmp_path / 'full'}"])
    # Saved at steps 3, 6, 9, 10: last/ plus the two newest copies, each a folder train.py --init reads.
    assert sorted(p.name for p in (tmp_path / "full").glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-9"]
    assert load_checkpoint(tmp_path / "full" / "checkpoint-9").architecture == "BertForPreTraining"
    partial = tmp_path / "partial"
    with pytest.raises(Crash):  # right after last/ of step 6: 48 of 95 records, mid-epoch
        run_with_hook([*common, f"--output_dir={partial}"], crash_at(6))
    assert torch.load(partial / "last" / "trainer.pt", weights_only=True)["state"]["step"] == 6
    assert [r["step"] for r in train_records(partial)] == list(range(1, 7))
    run([*common, f"--output_dir={partial}", "--resume=true"])

    def losses(out):
        return [(r["step"], r["loss"], r["mlm_loss"], r["nsp_loss"], r["lr"]) for r in train_records(out)]

    assert losses(partial) == losses(tmp_path / "full")
    a = load_file(tmp_path / "full" / "final" / "model.safetensors")
    b = load_file(partial / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_metrics_are_run_pretrainings(google_dir, tmp_path):
    """With lr 0 the model stays the init one: the eval record must equal metric_fn computed here."""
    records = PRETRAINING / "sample_text_64" / "examples.tfrecord"
    out = tmp_path / "out"
    run([f"--init={google_dir}", f"--input_file={records}", f"--eval_input_file={records}", f"--output_dir={out}",
         "--learning_rate=0", "--num_train_steps=1", "--num_warmup_steps=0", "--train_batch_size=2",
         "--max_seq_length=64", "--max_predictions_per_seq=10", "--eval_batch_size=7"])
    start, evaluation = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                         if r["split"] == "eval"]
    assert start["step"] == 0 and evaluation["step"] == 1
    from minibert.checkpoints.formats import load_pretrained
    from minibert.checkpoints.tfrecord import read_examples
    from minibert.model.pretraining_heads import BertForPreTraining
    model = load_pretrained(google_dir, BertForPreTraining).eval()
    rows = [{k: torch.tensor(f.values) for k, f in ex.items()} for ex in read_examples(records)]
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    with torch.no_grad():
        out_ = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"], batch["masked_lm_positions"])
    log_probs = torch.log_softmax(out_.mlm_logits.double(), -1)
    nll = -log_probs.gather(-1, batch["masked_lm_ids"].unsqueeze(-1)).squeeze(-1)
    w = batch["masked_lm_weights"].double()
    assert evaluation["mlm_loss"] == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-5)
    correct = (out_.mlm_logits.argmax(-1) == batch["masked_lm_ids"]).double()
    assert evaluation["mlm_accuracy"] == pytest.approx(float((w * correct).sum() / w.sum()), rel=1e-9)
    labels = batch["next_sentence_labels"].reshape(-1)
    assert evaluation["nsp_accuracy"] == pytest.approx(float((out_.nsp_logits.argmax(-1) == labels).double().mean()))
    assert evaluation["sequences"] == 95 and evaluation["predictions"] == int(w.sum())


def test_heads_missing_from_the_checkpoint_are_initialised_and_reported(tmp_path, capsys):
    from minibert.checkpoints.formats import checkpoint_of, load_pretrained, save_minibert
    from minibert.model.bert import BertModel
    encoder_only = tmp_path / "encoder"
    save_minibert(encoder_only, checkpoint_of(load_pretrained(FIXTURES / "tiny_google", BertModel),
                                              FIXTURES / "tiny_google" / "vocab.txt"))
    out = tmp_path / "out"
    run([f"--init={encoder_only}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
         f"--output_dir={out}", "--num_train_steps=2", "--num_warmup_steps=1", "--train_batch_size=2",
         "--max_seq_length=64", "--max_predictions_per_seq=10"])
    printed = capsys.readouterr().out
    (line,) = [line for line in printed.splitlines() if line.startswith("initialised (not in the checkpoint): ")]
    assert set(line.split(": ")[1].split(", ")) == {"mlm.transform.weight", "mlm.transform.bias", "mlm.norm.weight",
                                                    "mlm.norm.bias", "mlm.bias", "nsp.weight", "nsp.bias"}
    # final/ is a minibert folder that checkpoints_convert and, for its encoder, train.py --init read.
    from minibert.checkpoints.conversion import ConvertConfig, convert
    convert(ConvertConfig(src=str(out / "final"), dst=str(tmp_path / "tf"), format="tf"))
    assert load_checkpoint(tmp_path / "tf").architecture == "BertForPreTraining"
    encoder = load_pretrained(out / "final", BertModel)
    saved = load_checkpoint(out / "final").state
    assert torch.equal(encoder.embeddings.word.weight, saved["bert.embeddings.word.weight"])


def test_mlm_only_from_scratch_loss_falls(tmp_path):
    config = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 37, "max_position_embeddings": 64, "hidden_act": "gelu"}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    out, vocab = tmp_path / "out", FIXTURES / "tiny_google" / "vocab.txt"
    # Masked-LM-only records (single segments), written as two shards and read back by a glob.
    lines = (PRETRAINING / "sample_text.txt").read_text().split("\n")
    (tmp_path / "part-0.txt").write_text("\n".join(lines[:17]) + "\n")
    (tmp_path / "part-1.txt").write_text("\n".join(lines[18:]))
    pretrain.main(["create_data", f"--input_file={tmp_path}/part-*.txt", f"--output_file={tmp_path / 'mlm'}",
                   f"--vocab_file={vocab}", "--max_seq_length=64", "--max_predictions_per_seq=10",
                   "--next_sentence=false", "--sharded=true", "--num_workers=2", "--dupe_factor=2"])
    run([f"--bert_config_file={tmp_path / 'bert_config.json'}", f"--vocab_file={vocab}",
         f"--input_file={tmp_path}/mlm-*-of-00002", f"--output_dir={out}", "--next_sentence=false",
         "--masking=dynamic", "--num_train_steps=40", "--num_warmup_steps=4",
         "--learning_rate=2e-3", "--train_batch_size=8", "--max_seq_length=64", "--max_predictions_per_seq=10",
         "--log_every=5"])
    records = train_records(out)
    assert all(r["loss"] == r["mlm_loss"] for r in records)  # no NSP term
    assert records[-1]["mlm_loss"] < records[0]["mlm_loss"] - 1.0


def test_records_shorter_than_the_run_expects_name_the_record(google_dir, tmp_path, script_error):
    with script_error(r"examples.tfrecord: record 1: input_ids has 64 values, expected 128"):
        run([f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
             f"--output_dir={tmp_path / 'out'}", "--max_seq_length=128"])
    assert not (tmp_path / "out").exists()


def test_vocabulary_of_another_size_is_refused(google_dir, tmp_path, script_error):
    with open(google_dir / "vocab.txt", "a") as f:
        f.write("[unused-extra]\n")
    with script_error(r"vocab.txt: 30523 tokens but the model's vocab_size is 30522"):
        run([f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
             f"--output_dir={tmp_path / 'out'}", "--max_seq_length=64", "--max_predictions_per_seq=10",
             "--num_train_steps=1", "--num_warmup_steps=0"])


def test_token_ids_outside_the_vocabulary_are_refused(tmp_path, script_error):
    config = {"vocab_size": 1000, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 8, "max_position_embeddings": 64}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    lines = (FIXTURES / "tiny_google" / "vocab.txt").read_text().splitlines()[:1000]
    (tmp_path / "vocab.txt").write_text("\n".join(lines) + "\n")
    with script_error(r"examples.tfrecord: token id \d+ is outside the model's vocabulary"):
        run([f"--bert_config_file={tmp_path / 'bert_config.json'}", f"--vocab_file={tmp_path / 'vocab.txt'}",
             f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}", f"--output_dir={tmp_path / 'out'}",
             "--max_seq_length=64", "--max_predictions_per_seq=10", "--num_train_steps=1", "--num_warmup_steps=0"])


@pytest.mark.parametrize("options, message", [
    (["--train_batch_size=6", "--grad_accum_steps=4"],
     r"--train_batch_size 6: must be a multiple of --grad_accum_steps \(4\)"),
    (["--num_train_steps=20", "--num_warmup_steps=30"],
     r"--num_warmup_steps 30: must be at most --num_train_steps \(20\)"),
    (["--save_checkpoints_steps=0"], "--save_checkpoints_steps 0: must be at least 1"),
    (["--learning_rate=nan"], "--learning_rate nan: must be a finite number, at least 0"),
    (["--threads=-1"], r"--threads -1: must be at least 0 \(0 = torch's default\)"),
    (["--precision=fp16", "--device=cpu"], "--precision fp16 needs a CUDA device"),
])
def test_bad_options_are_refused_in_one_line_before_anything_is_written(google_dir, tmp_path, script_error, options,
                                                                       message):
    with script_error(f"^error: {message}"):
        pretrain.main(["train", f"--init={google_dir}", "--input_file=x", f"--output_dir={tmp_path / 'out'}",
                       *options])
    assert not (tmp_path / "out").exists()


def test_resume_without_a_checkpoint_is_refused(google_dir, tmp_path, script_error):
    with script_error(r"--resume: no checkpoint"):
        run([f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
             f"--output_dir={tmp_path / 'out'}", "--max_seq_length=64", "--max_predictions_per_seq=10",
             "--resume=true"])


@pytest.mark.slow
def test_embedded_default_runs_end_to_end(tmp_path, minilm_dir, monkeypatch):
    """corpus -> instances -> MiniLM training on BBC News, shortened; the heads MiniLM lacks are reported."""
    monkeypatch.chdir(Path(__file__).parent.parent)  # data/bbc_news is prepared here on first use
    pretrain.main(["--output_dir", str(tmp_path / "itpt"), "--num_train_steps=2", "--train_batch_size=2",
                            "--max_seq_length=32", "--threads=1"])
    final = load_checkpoint(tmp_path / "itpt" / "run" / "final")
    assert final.architecture == "BertForPreTraining" and final.config.num_hidden_layers == 6
    manifest = json.loads((tmp_path / "itpt" / "bbc_dev.txt.manifest.json").read_text())
    assert manifest["splits"] == ["dev"]


def test_every_pretraining_preset_has_the_papers_settings():
    presets = sorted((Path(__file__).parent.parent / "presets" / "pretrain").glob("*.json"))
    assert len(presets) == 5
    for preset in presets:
        cfg = parse_config(PretrainConfig, ["--preset", str(preset)])
        # §5.2: batch 32, 128 tokens, lr 5e-5, 100,000 steps, 10,000 warm-up.
        assert (cfg.optim.train_batch_size, cfg.records.max_seq_length, cfg.optim.learning_rate,
                cfg.optim.num_train_steps, cfg.optim.num_warmup_steps) == (32, 128, 5e-5, 100_000, 10_000), preset


def test_sigterm_saves_last_and_resume_finishes_the_same_run(google_dir, tmp_path):
    common = [f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              "--train_batch_size=4", "--max_seq_length=64", "--max_predictions_per_seq=10", "--num_train_steps=6",
              "--num_warmup_steps=1", "--learning_rate=1e-3", "--log_every=1", "--save_checkpoints_steps=100"]
    run([*common, f"--output_dir={tmp_path / 'full'}"])

    def term_after_step_3(step):  # arrives between steps: step 4 runs, last/ is written, the run stops
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    result = run_with_hook([*common, f"--output_dir={tmp_path / 'stopped'}"], term_after_step_3)
    assert result == {"step": 4, "stopped": True, "signal": signal.SIGTERM}
    assert signal.getsignal(signal.SIGTERM) is previous
    assert not (tmp_path / "stopped" / "final").exists()
    assert torch.load(tmp_path / "stopped" / "last" / "trainer.pt", weights_only=True)["state"]["step"] == 4
    run([*common, f"--output_dir={tmp_path / 'stopped'}", "--resume=true"])
    a = load_file(tmp_path / "full" / "final" / "model.safetensors")
    b = load_file(tmp_path / "stopped" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = {run: [r["loss"] for r in train_records(tmp_path / run)] for run in ("stopped", "full")}
    assert losses["stopped"] == losses["full"]


def test_the_itpt_preset_keeps_every_10k_checkpoint_across_a_sigterm_save(google_dir, tmp_path):
    """presets/pretrain/pretrain_itpt_imdb.json scaled down: its keep_checkpoints and its ratio of
    steps to saves (100,000 / 10,000) with 2 steps per save; SIGTERM stops the run off-schedule (step
    5), --resume finishes it, and every scheduled checkpoint-STEP/ (Figure 3's models) is there."""
    preset = json.loads((Path(__file__).parent.parent / "presets/pretrain/pretrain_itpt_imdb.json").read_text())
    saves = preset["num_train_steps"] // preset["save_checkpoints_steps"]
    assert (saves, preset["keep_checkpoints"]) == (10, 11)
    common = [f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              "--train_batch_size=2", "--max_seq_length=64", "--max_predictions_per_seq=10", "--num_warmup_steps=1",
              f"--num_train_steps={2 * saves}", "--save_checkpoints_steps=2",
              f"--keep_checkpoints={preset['keep_checkpoints']}", f"--output_dir={tmp_path / 'out'}"]

    def term_after_step_4(step):  # step 5 runs, last/ is saved at 5, the run stops
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    assert run_with_hook(common, term_after_step_4) == {"step": 5, "stopped": True, "signal": signal.SIGTERM}
    assert torch.load(tmp_path / "out" / "last" / "trainer.pt", weights_only=True)["state"]["step"] == 5
    run([*common, "--resume=true"])
    kept = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "out").glob("checkpoint-*"))
    assert kept == list(range(2, 2 * saves + 1, 2))


def test_resume_on_other_records_is_refused_unless_allowed(google_dir, tmp_path, script_error, capsys):
    records = tmp_path / "records.tfrecord"
    shutil.copy(PRETRAINING / "sample_text_64" / "examples.tfrecord", records)
    common = [f"--init={google_dir}", f"--input_file={records}", f"--output_dir={tmp_path / 'out'}",
              "--train_batch_size=4", "--max_seq_length=64", "--max_predictions_per_seq=10", "--num_train_steps=4",
              "--num_warmup_steps=0", "--save_checkpoints_steps=2"]
    with pytest.raises(Crash):
        run_with_hook(common, crash_at(2))
    write_examples(records, list(read_examples(PRETRAINING / "sample_text_64" / "examples.tfrecord"))[:90])
    capsys.readouterr()
    line = f"--resume: --input_file {records} changed since the run in {tmp_path / 'out'} started (--allow_data_change "
    with script_error(f"^error: {re.escape(line)}resumes anyway\\)\n$"):  # one line
        run([*common, "--resume=true"])
    assert run([*common, "--resume=true", "--allow_data_change=true"])["step"] == 4
    saved = torch.load(tmp_path / "out" / "last" / "trainer.pt", weights_only=True)["state"]
    assert saved["data_sha256"] == records_sha256(str(records), "input_file")  # the records it went on with


def test_records_digest_covers_every_file_of_a_records_folder(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "a.npy").write_bytes(b"a")
    (folder / "manifest.json").write_text("{}")
    before = records_sha256(str(folder), "input_file")
    assert records_sha256(str(folder), "input_file") == before
    (folder / "manifest.json").write_text("{ }")
    assert records_sha256(str(folder), "input_file") != before


def test_adamw_bf16_dynamic_whole_word_masking_and_eval_every(google_dir, tmp_path):
    records = PRETRAINING / "sample_text_64" / "examples.tfrecord"
    out = tmp_path / "out"
    run([f"--init={google_dir}", f"--input_file={records}", f"--eval_input_file={records}", f"--output_dir={out}",
         "--optimizer=adamw", "--precision=bf16", "--masking=dynamic", "--do_whole_word_mask=true",
         "--masked_lm_prob=0.2", "--eval_every=2", "--num_train_steps=4", "--num_warmup_steps=1",
         "--train_batch_size=4", "--max_seq_length=64", "--max_predictions_per_seq=10", "--log_every=2"])
    records_ = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records_ if r["split"] == "eval"] == [0, 2, 4]
    assert all(np.isfinite(r["loss"]) for r in records_ if r["split"] == "train")
    trainer = torch.load(out / "last" / "trainer.pt", weights_only=True)
    assert "exp_avg" in next(iter(trainer["optimizer"]["state"].values()))  # torch's AdamW, not Google's m/v
    assert json.loads((out / "config.json").read_text())["masked_lm_prob"] == 0.2


def test_max_seq_length_beyond_the_position_table_is_refused(google_dir, tmp_path, capsys):
    records = PRETRAINING / "sample_text_128" / "examples.tfrecord"  # right for 128 tokens, the model has 64
    with pytest.raises(SystemExit):
        run([f"--init={google_dir}", f"--input_file={records}", f"--output_dir={tmp_path / 'out'}",
             "--max_seq_length=128", "--max_predictions_per_seq=20", "--num_train_steps=1", "--num_warmup_steps=0"])
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --max_seq_length 128 is more than the model's max_position_embeddings (64)"]
    assert not (tmp_path / "out").exists()


def test_gradient_checkpointing_gives_the_same_steps(tmp_path):
    """tiny_google as released (dropout 0.1): each layer recomputed in backward with the same
    dropout masks gives the same losses and weights; switching it on at a resume is allowed."""
    common = [f"--init={FIXTURES / 'tiny_google'}",
              f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              "--train_batch_size=8", "--max_seq_length=64", "--max_predictions_per_seq=10", "--num_warmup_steps=0",
              "--learning_rate=1e-3", "--log_every=1", "--num_train_steps=4", "--save_checkpoints_steps=2"]
    run([*common, f"--output_dir={tmp_path / 'plain'}"])
    run([*common, f"--output_dir={tmp_path / 'recomputed'}", "--gradient_checkpointing=true"])
    with pytest.raises(Crash):
        run_with_hook([*common, f"--output_dir={tmp_path / 'switched'}"], crash_at(2))
    run([*common, f"--output_dir={tmp_path / 'switched'}", "--gradient_checkpointing=true", "--resume=true"])
    plain = [r["loss"] for r in train_records(tmp_path / "plain")]
    for out in ("recomputed", "switched"):
        assert [r["loss"] for r in train_records(tmp_path / out)] == pytest.approx(plain, rel=1e-5), out
        a = load_file(tmp_path / "plain" / "final" / "model.safetensors")
        b = load_file(tmp_path / out / "final" / "model.safetensors")
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), out


def test_padding_unpadded_gives_the_same_steps_and_padded_is_the_default(google_dir, tmp_path):
    """Google's model runs padded records (the default); --padding unpadded runs only the real tokens
    through the encoder's layers: the same math, so the same losses and weights to rounding."""
    common = [f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              *ACCEPTANCE[:3], "--num_train_steps=3", *ACCEPTANCE[4:]]
    run([*common, f"--output_dir={tmp_path / 'padded'}"])
    run([*common, f"--output_dir={tmp_path / 'unpadded'}", "--padding=unpadded"])
    for out, padding in (("padded", "padded"), ("unpadded", "unpadded")):
        assert json.loads((tmp_path / out / "config.json").read_text())["padding"] == padding
    padded, unpadded = train_records(tmp_path / "padded"), train_records(tmp_path / "unpadded")
    assert [r["loss"] for r in unpadded] == pytest.approx([r["loss"] for r in padded], rel=1e-5)
    a = load_file(tmp_path / "padded" / "final" / "model.safetensors")
    b = load_file(tmp_path / "unpadded" / "final" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_embedded_default_trains_on_its_machine_options(tmp_path):
    """pretrain.py default passes its machine options (padded by default, as train's) to its train stage."""
    cfg = parse_config(DefaultConfig, ["--device=cpu", "--threads=1", "--gradient_checkpointing=true",
                                       "--num_train_steps=40"])
    run_cfg = default_train_config(cfg, tmp_path, 20)
    assert run_cfg.machine == cfg.machine and cfg.machine.padding == "padded"
    assert (run_cfg.optim.num_train_steps, run_cfg.optim.num_warmup_steps,
            run_cfg.run.save_checkpoints_steps) == (40, 4, 10)
    assert parse_config(DefaultConfig, ["--padding=unpadded"]).machine.padding == "unpadded"
    assert "(default: 'padded')" in " ".join(build_parser(PretrainConfig, "").format_help().split())


def test_overwrite_replaces_all_of_a_pretraining_folder_and_only_the_outputs_of_an_older_one(google_dir, tmp_path):
    out = tmp_path / "out"
    common = [f"--init={google_dir}", f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}",
              f"--output_dir={out}", *ACCEPTANCE[:3], "--num_train_steps=1", *ACCEPTANCE[4:],
              "--keep_checkpoints=2", "--save_checkpoints_steps=1"]
    outputs = ["checkpoint-1", "config.json", "final", "last", "metrics.jsonl", "pretraining_curves.png"]
    run(common)
    # A folder from before kinds were recorded (no .minibert_run.json): only the run's outputs and
    # the old sides of their swaps are cleared; with its kind recorded, all of it is replaced.
    for legacy, kept in ((True, ["notes.txt"]), (False, [])):
        if legacy:
            (out / ".minibert_run.json").unlink()
        for leftover in (".final.0123abcd.old", "last.old", ".checkpoint-1.89abcdef.old", "checkpoint-7"):
            (out / leftover).mkdir()
        (out / "notes.txt").write_text("mine")
        run([*common, "--overwrite_output_dir=true"])
        assert sorted(p.name for p in out.iterdir()) == sorted([".minibert_run.json", *outputs, *kept])
