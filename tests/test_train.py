"""End-to-end runs of train.py and predict.py on a tiny model and a tiny topic data set.

The model (helpers.make_tiny_model) is a freshly initialised 2-layer BERT (hidden 32) over a
vocabulary of the data set's words, saved as a minibert folder; the bad-input tests start from the
Google-format fixture to go through the TF reader too. The data set is written by the tests
(helpers.write_split): three topics whose texts mix topic words with shared filler words, so a model
must learn to pass the test (chance is 1/3).
"""

import json

import pytest
import torch
from helpers import TOPICS, config, make_tiny_model, run_interrupted, write_split
from safetensors.torch import load_file

import predict
from minibert.checkpoints.formats import load_checkpoint
from minibert.cli import parse_config
from minibert.data.batching import random_batches
from minibert.errors import ConfigError
from minibert.finetune import FinetuneConfig, FitHooks, finetune, summary_lines
from minibert.finetune.config import TextOptions
from minibert.finetune.model_setup import resolve_pooler, text_encoding
from minibert.text.long_text import paper_head_tokens

pytestmark = pytest.mark.usefixtures("keep_thread_count")  # train.main sets torch's thread count (--threads)


def test_tiny_run_learns_saves_and_predicts(tiny_model, data, tmp_path, capsys):
    results = finetune(config(tiny_model, data, tmp_path / "run"))
    assert results["test_accuracy"] > 0.8  # chance is 1/3
    assert results["test_error"] == pytest.approx(1 - results["test_accuracy"])
    assert sum(map(sum, results["test_confusion_matrix"])) == 45
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["test_error"] == results["test_error"] and "dev_error" in on_disk
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "dev"] == [19, 38, 57, 76, 95]  # 150 / 8 -> 19 steps per epoch
    assert all({"loss", "lr", "examples_per_s"} <= set(r) for r in records if r["split"] == "train")
    assert (tmp_path / "run" / "learning_curves.png").stat().st_size > 10_000
    assert "dev error" in capsys.readouterr().out
    assert any(line.startswith("test error") for line in summary_lines(results, tmp_path / "run"))

    classifier = json.loads((tmp_path / "run" / "best" / "classifier.json").read_text())
    assert classifier["labels"] == ["business", "sport", "tech"]
    assert classifier["encoding"]["truncation"] == "head_tail"
    predictions = predict.main(predict.PredictConfig(model=str(tmp_path / "run" / "best"),
                                                     input=str(data / "test.jsonl"), output=str(tmp_path / "p.jsonl")))
    gold = [json.loads(line)["label"] for line in (data / "test.jsonl").read_text().splitlines()]
    accuracy = sum(p["label"] == g for p, g in zip(predictions, gold)) / len(gold)
    assert accuracy == pytest.approx(results["test_accuracy"])
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in predictions)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 45


def test_results_score_dev_with_the_evaluation_that_kept_best(tiny_model, data, tmp_path):
    """results.json's dev scores are those of the evaluation that saved best/: the same numbers as
    that evaluation's record and as best/ predicting dev anew, while later evaluations score worse
    (after step 24 the loss hook turns each loss into its negative, so training climbs it)."""
    hooks = FitHooks(loss=lambda step, task, loss: loss if step <= 24 else -loss)
    results = finetune(config(tiny_model, data, tmp_path / "run", learning_rate=0.03, eval_every=3, epochs=2), hooks)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    dev = {r["step"]: r for r in records if r["split"] == "dev"}
    best, last = dev[results["best_step"]], dev[max(dev)]
    assert results["best_step"] <= 24 and last["error"] > best["error"]
    assert (results["dev_error"], results["dev_macro_f1"]) == (best["error"], best["macro_f1"])
    predictions = predict.main(predict.PredictConfig(model=str(tmp_path / "run" / "best"),
                                                     input=str(data / "dev.jsonl"), output=str(tmp_path / "p.jsonl")))
    gold = [json.loads(line)["label"] for line in (data / "dev.jsonl").read_text().splitlines()]
    assert sum(p["label"] != g for p, g in zip(predictions, gold)) / len(gold) == pytest.approx(results["dev_error"])


def test_resume_gives_the_same_result(tiny_model, data, tmp_path):
    options = dict(epochs=2, checkpoint_every=5, grad_accum_steps=2, batch_size=6)
    full = finetune(config(tiny_model, data, tmp_path / "full", **options))
    cfg = config(tiny_model, data, tmp_path / "resumed", **options)
    # 25 batches -> 13 steps per epoch; crash after step 16, mid-epoch 2; the last checkpoint is step 15.
    run_interrupted(cfg, 16)
    assert json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 16
    resumed = finetune(config(tiny_model, data, tmp_path / "resumed", resume=True, **options))
    a = load_file(tmp_path / "full" / "best" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "best" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_error"] == full["test_error"] and resumed["best_step"] == full["best_step"]
    # Dev as the uninterrupted run scored it from its evaluation, whichever side of the resume that was.
    assert (resumed["dev_error"], resumed["dev_macro_f1"]) == (full["dev_error"], full["dev_macro_f1"])
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"}
                          for line in path.read_text().splitlines()]
    assert strip(tmp_path / "full" / "metrics.jsonl") == strip(tmp_path / "resumed" / "metrics.jsonl")
    a_last = load_file(tmp_path / "full" / "last" / "model.safetensors")
    b_last = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    assert all(torch.equal(a_last[k], b_last[k]) for k in a_last)
    with pytest.raises(ConfigError, match="batch_size"):  # a resume must not change the run
        finetune(config(tiny_model, data, tmp_path / "resumed", resume=True, **{**options, "batch_size": 5}))


def test_random_batching_and_its_resume(tiny_model, data, tmp_path):
    """--batching random: each epoch every example once, in the seeded permutation random_batches
    cuts (another one each epoch); a resumed run draws the same batches and ends bit-identical."""
    listed = {}
    record = FitHooks(epoch_batches=lambda epoch, batches: listed.setdefault(epoch, []).append(batches))
    options = dict(epochs=2, checkpoint_every=5, batch_size=6, batching="random")
    full = finetune(config(tiny_model, data, tmp_path / "full", **options), record)
    epoch0, epoch1 = ([batch for _, batch in listed[epoch][0]] for epoch in (0, 1))
    assert epoch0 == random_batches(list(range(150)), 6, seed=7) and epoch1 == random_batches([0] * 150, 6, seed=8)
    assert all(sorted(i for b in epoch for i in b) == list(range(150)) for epoch in (epoch0, epoch1))
    assert epoch0 != epoch1
    run_interrupted(config(tiny_model, data, tmp_path / "resumed", **options), 16)  # 25 batches per epoch
    resumed = finetune(config(tiny_model, data, tmp_path / "resumed", resume=True, **options), record)
    a = load_file(tmp_path / "full" / "best" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "best" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_error"] == full["test_error"] and resumed["best_step"] == full["best_step"]
    assert listed[1][-1] == listed[1][0]  # the resumed epoch 2 lists what the uninterrupted one did


def encoder_unchanged(run_dir, init):
    initial = load_checkpoint(init).state
    trained = load_checkpoint(run_dir / "best").state
    return {name: torch.equal(initial[name], trained[name]) for name in trained if name.startswith("bert.")}


def test_frozen_encoder_and_bert_feat(tiny_model, data, tmp_path):
    results = finetune(config(tiny_model, data, tmp_path / "feat", head="bilstm_attention", freeze_encoder=True,
                                epochs=4, learning_rate=5e-3))
    assert all(encoder_unchanged(tmp_path / "feat", tiny_model).values())
    assert results["test_accuracy"] > 0.6


def test_gradual_unfreezing_trains_the_head_first(tiny_model, data, tmp_path):
    finetune(config(tiny_model, data, tmp_path / "gu", gradual_unfreezing=True, epochs=1, pooler="true"))
    unchanged = encoder_unchanged(tmp_path / "gu", tiny_model)
    assert not unchanged["bert.pooler.weight"]  # the pooler belongs to the top (head) group
    assert all(same for name, same in unchanged.items() if not name.startswith("bert.pooler"))


@pytest.mark.parametrize("overrides", [
    dict(hierarchical=True, chunk_pooling="mean", max_seq_length=12),
    dict(hierarchical=True, chunk_pooling="max", max_seq_length=12, max_chunks=2),
    dict(hierarchical=True, chunk_pooling="self_attention", max_seq_length=12),
    dict(truncation="head"), dict(truncation="tail"),
    dict(layers="all", layer_combine="concat", pooler="false"), dict(layers="1", pooler="true"),
    dict(layers="all", layer_combine="max", pooler="true"),
    dict(clip_mode="per_tensor", optimizer="adam_weight_decay", schedule="google_warmup_linear"),
    dict(optimizer="adam_weight_decay", schedule="google_warmup_linear"),
    dict(schedule="slanted_triangular", slanted_ratio=16.0), dict(schedule="constant"),
    dict(class_weighted_loss=True, max_grad_norm=0.0),
    dict(precision="bf16"), dict(tokenizer_variant="huggingface"),
])
@pytest.mark.slow
def test_options_train_a_working_classifier(tiny_model, data, tmp_path, overrides):
    results = finetune(config(tiny_model, data, tmp_path / "run", **overrides))
    assert results["test_accuracy"] > 0.6
    saved = json.loads((tmp_path / "run" / "best" / "classifier.json").read_text())
    for key in ("hierarchical", "max_chunks", "truncation"):
        if key in overrides:
            assert saved["encoding"][key] == overrides[key]
    if "chunk_pooling" in overrides:
        assert saved["head"]["chunk_pooling"] == overrides["chunk_pooling"]


def test_threads_option_sets_torch_threads(tiny_model, data, tmp_path):
    finetune(config(tiny_model, data, tmp_path / "t", threads=2, epochs=1))
    assert torch.get_num_threads() == 2
    finetune(config(tiny_model, data, tmp_path / "t", threads=1, epochs=1, overwrite_output_dir=True))
    assert torch.get_num_threads() == 1


def test_steps_evaluation_and_early_stopping(tiny_model, data, tmp_path):
    finetune(config(tiny_model, data, tmp_path / "es", grad_accum_steps=2, eval_every=4, early_stopping=2,
                      learning_rate=0.0, epochs=4))
    records = [json.loads(line) for line in (tmp_path / "es" / "metrics.jsonl").read_text().splitlines()]
    # 19 batches -> 10 optimizer steps per epoch; evaluations every 4 steps and at epoch ends;
    # with lr 0 nothing improves after the first, so the run stops after two more.
    assert [r["step"] for r in records if r["split"] == "dev"] == [4, 8, 10]


def test_training_error_at_each_evaluation(tiny_model, data, tmp_path):
    finetune(config(tiny_model, data, tmp_path / "te", eval_every=5, train_eval_count=12, epochs=2))
    records = [json.loads(line) for line in (tmp_path / "te" / "metrics.jsonl").read_text().splitlines()]
    train_eval = [r for r in records if r["split"] == "train_eval"]
    # 150 examples / 8 = 19 steps per epoch: evaluations at 5, 10, 15, 19 (epoch end), 20, 25, ...
    assert [r["step"] for r in train_eval] == [r["step"] for r in records if r["split"] == "dev"]
    assert [r["step"] for r in train_eval] == [5, 10, 15, 19, 20, 25, 30, 35, 38]
    assert all(12 * r["error"] == round(12 * r["error"]) for r in train_eval)  # errors out of 12 examples
    assert train_eval[-1]["error"] < 0.5


def test_few_shot_subsets(tiny_model, data, tmp_path, capsys):
    finetune(config(tiny_model, data, tmp_path / "fs", train_fraction=0.2, epochs=1))
    assert "30 train / 30 dev examples" in capsys.readouterr().out
    finetune(config(tiny_model, data, tmp_path / "fc", train_count=9, epochs=1))
    assert "9 train / 30 dev examples" in capsys.readouterr().out


def test_bad_rows_stop_or_are_skipped(tiny_google, tmp_path, capsys):
    write_split(tmp_path / "train.jsonl", 30, 1, bad_row=True)
    write_split(tmp_path / "dev.jsonl", 9, 2)
    cfg = dict(init=str(tiny_google), train_file=str(tmp_path / "train.jsonl"), dev_file=str(tmp_path / "dev.jsonl"),
               test_file="", output_dir=str(tmp_path / "run"), max_seq_length=16, head_tokens=4, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="train.jsonl:31"):
        finetune(FinetuneConfig.of(**cfg))
    finetune(FinetuneConfig.of(**cfg, on_bad_row="skip"))
    cfg["overwrite_output_dir"] = True
    assert "skipped 1 bad rows" in capsys.readouterr().out
    write_split(tmp_path / "train.jsonl", 30, 1)
    with open(tmp_path / "dev.jsonl", "a") as f:
        f.write(json.dumps({"text": "a new topic", "label": "weather"}) + "\n")
    with pytest.raises(ValueError, match="dev.jsonl:10.*weather"):
        finetune(FinetuneConfig.of(**cfg))


def test_csv_fields_and_resume_without_checkpoint(tiny_google, tmp_path):
    rows = ["body,topic"] + [f'"{TOPICS[t]}, more words",{t}' for t in TOPICS for _ in range(4)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    cfg = dict(init=str(tiny_google), train_file=str(tmp_path / "train.csv"), dev_file=str(tmp_path / "train.csv"),
               test_file="", output_dir=str(tmp_path / "run"), text_field="body", label_field="topic",
               max_seq_length=16, head_tokens=4, epochs=1, device="cpu")
    results = finetune(FinetuneConfig.of(**cfg))
    assert results["labels"] == ["business", "sport", "tech"] and results["dev_count"] == 12
    with pytest.raises(ConfigError, match="no checkpoint"):
        finetune(FinetuneConfig.of(**{**cfg, "output_dir": str(tmp_path / "other")}, resume=True))


def test_command_line_and_presets(tmp_path):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"_paper": "Table 2", "truncation": "tail", "epochs": 2}))
    cfg = parse_config(FinetuneConfig, ["--preset", str(preset), "--epochs", "3", "--hierarchical", "true"])
    assert (cfg.text.truncation, cfg.optim.epochs, cfg.text.hierarchical) == ("tail", 3, True)
    preset.write_text(json.dumps({"trunc": "tail"}))
    with pytest.raises(ConfigError, match="trunc"):
        parse_config(FinetuneConfig, ["--preset", str(preset)])
    preset.write_text(json.dumps({"truncation": "middle"}))
    with pytest.raises(ConfigError, match="truncation='middle'"):
        parse_config(FinetuneConfig, ["--preset", str(preset)])
    preset.write_text('{"epochs": 2, "epochs": 3}')
    with pytest.raises(ConfigError, match="epochs given twice"):
        parse_config(FinetuneConfig, ["--preset", str(preset)])


@pytest.mark.slow
def test_compile_gives_the_eager_losses(data, tmp_path):
    """--compile (torch.compile of the training model) logs the eager run's losses within float
    rounding: 1.1e-7 relative over 19 steps when measured (about 5 minutes on 2 shared cores, almost
    all of it compiling). Dropout off: compiled code draws its own random numbers, not eager's."""
    init = make_tiny_model(tmp_path / "init", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    options = dict(epochs=1, log_every=1, dropout=0.0)
    finetune(config(init, data, tmp_path / "eager", **options))
    finetune(config(init, data, tmp_path / "compiled", compile=True, **options))
    eager, compiled = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    assert [s for s, _ in eager] == [s for s, _ in compiled] == list(range(1, 20))
    assert [l for _, l in compiled] == pytest.approx([l for _, l in eager], rel=1e-5)



def test_paper_settings_by_default(tiny_model, data, tmp_path):
    """head_tokens 0 = the paper's 128/510 ratio; --pooler auto is on only for the last layer;
    --clip_mode picks the clipping function; Lin et al.'s penalty reaches the BERT-Feat loss."""
    assert [paper_head_tokens(n) for n in (512, 128, 24)] == [128, 32, 6]
    assert text_encoding(TextOptions(max_seq_length=512)).head_tokens == 128
    assert text_encoding(TextOptions(max_seq_length=128, head_tokens=20)).head_tokens == 20
    assert [resolve_pooler("auto", layers, 12) for layers in ("last", "12", "11", "last4", "0")] == \
        [True, True, False, False, False]
    assert resolve_pooler("true", "3", 12) and not resolve_pooler("false", "last", 12)

    # --clip_mode reaches the step: with a norm small enough to clip every step, clipping each
    # tensor on its own and clipping all of them together train different weights.
    clipped = {mode: finetune(config(tiny_model, data, tmp_path / mode, head_tokens=0, pooler="auto", layers="1",
                                     epochs=1, clip_mode=mode, max_grad_norm=0.01))
               for mode in ("per_tensor", "global")}
    saved = json.loads((tmp_path / "per_tensor" / "best" / "classifier.json").read_text())
    assert saved["encoding"]["head_tokens"] == 6 and saved["head"]["pooler"] is False
    a, b = (load_file(tmp_path / mode / "last" / "model.safetensors") for mode in clipped)
    assert not all(torch.equal(a[k], b[k]) for k in a)

    def first_loss(out, penalty):
        finetune(config(tiny_model, data, tmp_path / out, head="bilstm_attention", freeze_encoder=True, epochs=1,
                          attention_penalty=penalty, attention_hops=3, lstm_size=8, attention_size=5))
        head = json.loads((tmp_path / out / "best" / "classifier.json").read_text())["head"]
        assert (head["attention_hops"], head["lstm_size"], head["attention_size"]) == (3, 8, 5)
        return json.loads((tmp_path / out / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    # Same seed, same batches: the only difference is the penalty term, which is positive.
    assert first_loss("p1", 1.0) > first_loss("p0", 0.0)


def train_losses(out):
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "train"]


def test_gradient_checkpointing_gives_the_same_run(tiny_model, data, tmp_path):
    """Each layer recomputed in backward with the same dropout masks (the tiny model trains with
    dropout 0.1): the same losses at every logged step, and the same scores."""
    options = dict(epochs=2, log_every=1)
    plain = finetune(config(tiny_model, data, tmp_path / "plain", **options))
    recomputed = finetune(config(tiny_model, data, tmp_path / "recomputed", gradient_checkpointing=True, **options))
    assert json.loads((tmp_path / "recomputed" / "config.json").read_text())["gradient_checkpointing"] is True
    losses, losses_recomputed = train_losses(tmp_path / "plain"), train_losses(tmp_path / "recomputed")
    assert [s for s, _ in losses] == [s for s, _ in losses_recomputed] and len(losses) == 38
    assert [l for _, l in losses_recomputed] == pytest.approx([l for _, l in losses], rel=1e-5)
    assert recomputed["dev_error"] == plain["dev_error"] and recomputed["test_error"] == plain["test_error"]


def test_resume_with_gradient_checkpointing_is_bit_identical(tiny_model, data, tmp_path):
    """Interrupted with checkpointing and resumed with it: the same weights and metrics as the
    uninterrupted checkpointed run; turning it on at a resume is allowed (RESUMABLE_CHANGES)."""
    options = dict(epochs=2, checkpoint_every=5, gradient_checkpointing=True)
    full = finetune(config(tiny_model, data, tmp_path / "full", **options))
    run_interrupted(config(tiny_model, data, tmp_path / "resumed", **options), 12)
    resumed = finetune(config(tiny_model, data, tmp_path / "resumed", resume=True, **options))
    for name in ("best", "last"):
        a = load_file(tmp_path / "full" / name / "model.safetensors")
        b = load_file(tmp_path / "resumed" / name / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert train_losses(tmp_path / "full") == train_losses(tmp_path / "resumed")
    assert resumed["test_error"] == full["test_error"]
    run_interrupted(config(tiny_model, data, tmp_path / "switched", epochs=2, checkpoint_every=5), 12)
    finetune(config(tiny_model, data, tmp_path / "switched", resume=True, **options))  # no ConfigError
