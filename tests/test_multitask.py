"""Multi-task fine-tuning (train.py --tasks): task batching, head isolation, the second stage,
resume, prediction per task, and two tiny tasks (helpers.TASKS) that learn together.

The two tasks use disjoint vocabularies (topic words and sentiment words, plus shared filler), so a
batch's token ids tell which task it came from, and each task can only be learnt from its own data.
"""

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from helpers import SPECIAL_TOKENS, TASK_WORDS, TASKS, make_tiny_model, write_task
from safetensors.torch import load_file

import predict
from minibert.checkpoints.classifier import load_classifier
from minibert.data.multitask import epoch_schedule, read_tasks_file, redrawn_batches, task_counts, tasks_from_names
from minibert.errors import CheckpointError, ConfigError, MinibertError
from minibert.finetune import FinetuneConfig, FitHooks, finetune
from minibert.finetune.model_setup import new_head
from minibert.model.config import BertConfig
from minibert.model.heads import HeadConfig, TaskClassifier
from minibert.training.optimization import build_optimizer, parameter_groups

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and repeatable


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny model over both tasks' words, and the two tasks' data; the model's vocabulary."""
    root = tmp_path_factory.mktemp("multitask")
    vocab = SPECIAL_TOKENS + TASK_WORDS
    make_tiny_model(root / "model", TASK_WORDS, max_position_embeddings=32)
    write_task(root / "data" / "topics", "topics", seed=1)
    write_task(root / "data" / "sentiment", "sentiment", sizes=(40, 20, 30), seed=2)
    return root, vocab


def config(root, out, **overrides):
    values = dict(init=str(root / "model"), tasks="topics,sentiment", tasks_dir=str(root / "data"),
                  output_dir=str(out), max_seq_length=16,
                  epochs=4, batch_size=8, learning_rate=3e-3, layer_decay=0.9, eval_batch_size=16, log_every=2,
                  device="cpu", seed=3, threads=1, stage2_epochs=1, precision="fp32")  # as helpers.config's runs
    values.update(overrides)
    return FinetuneConfig.of(**values)


def in_data_dir(root, monkeypatch):
    """--tasks NAME resolves data/NAME/ from the working directory."""
    monkeypatch.chdir(root)


def test_task_counts_and_epoch_schedule():
    batches = {"a": [[i] for i in range(6)], "b": [[100], [101]]}
    assert task_counts({"a": 6, "b": 2}) == {"a": 6, "b": 2}
    # T = 2: shares sqrt(6) : sqrt(2) of 8 = 5.07 : 2.93 -> 5 and 3 by largest remainder.
    assert task_counts({"a": 6, "b": 2}, temperature=2) == {"a": 5, "b": 3}
    epoch0 = epoch_schedule(batches, seed=1, epoch=0)
    assert Counter(task for task, _ in epoch0) == {"a": 6, "b": 2}
    assert sorted(b[0] for _, b in epoch0) == [0, 1, 2, 3, 4, 5, 100, 101]  # every batch exactly once
    assert epoch_schedule(batches, seed=1, epoch=0) == epoch0  # a resumed run lists the same order
    epoch1 = epoch_schedule(batches, seed=1, epoch=1)
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0)  # reshuffled each epoch
    hot = epoch_schedule(batches, seed=1, epoch=0, temperature=2)
    assert Counter(task for task, _ in hot) == {"a": 5, "b": 3}
    assert Counter(b[0] for task, b in hot if task == "b") == {100: 2, 101: 1}  # the small task cycles
    with pytest.raises(ValueError):
        task_counts({"a": 1}, temperature=0)


def test_task_lists(tmp_path):
    assert [t.train for t in tasks_from_names("imdb, ag_news", "data")] == ["data/imdb/train.jsonl",
                                                                         "data/ag_news/train.jsonl"]
    for names, message in (("imdb", "at least two"), ("imdb,imdb", "given twice"), ("imdb,a.b", "task names")):
        with pytest.raises(ConfigError, match=message):
            tasks_from_names(names)
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([{"name": "a", "train": "a/t.jsonl", "dev": "a/d.jsonl"},
                                {"name": "b", "train": "b/t.jsonl", "dev": "b/d.jsonl", "test": "b/x.jsonl"}]))
    assert [(t.name, t.test) for t in read_tasks_file(path)] == [("a", ""), ("b", "b/x.jsonl")]
    path.write_text(json.dumps([{"name": "a", "train": "x", "dev": "y", "extra": 1}, {"name": "b"}]))
    with pytest.raises(ConfigError, match="task 0: unknown key 'extra'"):
        read_tasks_file(path)
    # Every task is read against its declared types: a number for a file, a missing split, an empty file name.
    for tasks, message in (([{"name": "a", "train": 3, "dev": "y"}], r"task 0: train is 3, expected a string$"),
                           ([{"name": "a", "train": "x"}], r"task 0: missing key 'dev'$"),
                           ([{"name": "a", "train": "", "dev": "y"}], r"task 0: train and dev must name files$"),
                           (["a"], r'task 0: expected an object, got "a"$')):
        path.write_text(json.dumps(tasks))
        with pytest.raises(ConfigError, match=message):
            read_tasks_file(path)


def test_a_tasks_batch_changes_only_the_encoder_and_its_own_head():
    config = BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=16)
    torch.manual_seed(0)
    model = TaskClassifier(config, {"a": HeadConfig(3, pooler=False), "b": HeadConfig(2, layers="1")})
    groups = parameter_groups(model, lr=1e-2, weight_decay=0.01, layer_decay=0.9, num_layers=2)
    optimizer = build_optimizer("adamw", groups)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(5, 20, (4, 7))
    loss = F.cross_entropy(model("a", ids), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert all(p.grad is None for p in model.heads["b"].parameters())
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert {n for n in changed if n.startswith("heads.")} == {n for n in before if n.startswith("heads.a.")}
    assert any(n.startswith("bert.layers.") for n in changed)
    assert not any(n.startswith("heads.b.") for n in changed)  # not even weight decay touches it
    assert model("b", ids).shape == (4, 2)


def token_sets(vocab):
    """Each task's token ids (its class words; the filler is shared)."""
    return {task: {vocab.index(w) for words in classes.values() for w in words} for task, classes in TASKS.items()}


@pytest.mark.slow
def test_two_tasks_learn_together_then_stage2_and_predict(setup, tmp_path, monkeypatch, capsys):
    root, vocab = setup
    in_data_dir(root, monkeypatch)
    micro_batches, steps = [], []  # the loop's (step, task) per micro-batch, and its optimizer steps
    hooks = FitHooks(loss=lambda step, task, loss: micro_batches.append((step, task)) or loss,
                     after_step=steps.append)
    results = finetune(config(root, tmp_path / "mt", tasks_dir="data"), hooks)  # relative to the working directory
    out = tmp_path / "mt"
    # Stage 1 lists every batch of each task once per epoch (60/8 and 40/8 batches, 4 epochs), each
    # micro-batch of one task; stage 2 is the same loop on each task alone (a table of its one head).
    stage1 = [task for _, task in micro_batches[:4 * 13]]
    assert Counter(stage1) == {"topics": 4 * 8, "sentiment": 4 * 5} and len(set(stage1[:13])) == 2
    assert steps == [*range(1, 4 * 13 + 1), *range(1, 8 + 1), *range(1, 5 + 1)]
    assert [task for _, task in micro_batches[len(stage1):]] == ["topics"] * 8 + ["sentiment"] * 5
    stage1 = json.loads((out / "multitask_results.json").read_text())["tasks"]
    assert stage1["topics"]["test_accuracy"] > 0.7 and stage1["sentiment"]["test_accuracy"] > 0.75  # chance 1/3, 1/2
    assert set(results["stage2"]["tasks"]) == {"topics", "sentiment"}
    for task in ("topics", "sentiment"):
        stage2 = json.loads((out / "stage2" / task / "config.json").read_text())
        assert stage2["learning_rate"] == pytest.approx(3e-3 * 0.5) and stage2["epochs"] == 1
        assert stage2["tasks"] == "" and stage2["train_file"] == f"data/{task}/train.jsonl"
        lrs = [r["lr"] for r in map(json.loads, (out / "stage2" / task / "metrics.jsonl").read_text().splitlines())
               if r["split"] == "train"]
        assert max(lrs) <= 3e-3 * 0.5
        assert results["stage2"]["tasks"][task]["test_error"] < 0.3
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["task"] for r in records if r["split"] == "dev_task"} == {"topics", "sentiment"}

    # The saved model holds both heads; predict.py --task picks one: on the sentiment test set it
    # scores what training's evaluation measured for that head (within one text of 30).
    test_file = root / "data" / "sentiment" / "test.jsonl"
    capsys.readouterr()
    rows = predict.main(predict.PredictConfig.of(model=str(out / "best"), input=str(test_file), task="sentiment",
                                              device="cpu", precision="fp32"))
    gold = [json.loads(line)["label"] for line in test_file.read_text().splitlines()]
    accuracy = sum(r["label"] == g for r, g in zip(rows, gold)) / len(gold)
    assert set(rows[0]["probabilities"]) == {"good", "bad"}
    assert accuracy == pytest.approx(stage1["sentiment"]["test_accuracy"], abs=1 / 30 + 1e-9)
    texts = tmp_path / "texts.txt"
    texts.write_text("great wonderful the a\nawful terrible of\n")
    topics = predict.main(predict.PredictConfig.of(model=str(out / "best"), input=str(texts), task="topics",
                                                   device="cpu"))
    assert set(topics[0]["probabilities"]) == {"business", "sport", "tech"}
    with pytest.raises(CheckpointError, match="choose one of topics, sentiment"):
        load_classifier(out / "best")
    with pytest.raises(CheckpointError, match="single-task"):
        load_classifier(out / "stage2" / "topics" / "best", "topics")


@pytest.mark.slow
def test_multitask_resume_is_bit_identical(setup, tmp_path):
    root, _ = setup
    options = dict(epochs=2, checkpoint_every=3, grad_accum_steps=2, stage2_epochs=1)
    full = finetune(config(root, tmp_path / "full", **options))

    def crash(step):
        if step == 9:  # 13 batches -> 7 steps per epoch; the last checkpoint is at step 7
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(config(root, tmp_path / "resumed", **options), FitHooks(after_step=crash))
    resumed = finetune(config(root, tmp_path / "resumed", resume=True, **options))
    for folder in ("best", "last", "stage2/topics/best", "stage2/sentiment/best"):
        a = load_file(tmp_path / "full" / folder / "model.safetensors")
        b = load_file(tmp_path / "resumed" / folder / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
    assert resumed == full
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"}
                          for line in path.read_text().splitlines()]
    assert strip(tmp_path / "full" / "metrics.jsonl") == strip(tmp_path / "resumed" / "metrics.jsonl")
    # Resuming a finished run redoes nothing and gives the same results.
    assert finetune(config(root, tmp_path / "resumed", resume=True, **options)) == full
    with pytest.raises(ConfigError, match="learning_rate"):
        finetune(config(root, tmp_path / "resumed", resume=True, **{**options, "learning_rate": 1e-3}))


@pytest.mark.slow
def test_stage2_batch_size_and_layer_decay(setup, tmp_path):
    """--stage2_batch_size / --stage2_layer_decay (Table 7: BERT-FiT's batch 24 and xi 0.95 after stage
    1's 32 and 1.0) set stage 2's batches and layer-wise rates; stage 1 keeps batch_size and layer_decay."""
    root, _ = setup
    steps = []
    finetune(config(root, tmp_path / "out", epochs=1, stage2_batch_size=20, stage2_layer_decay=0.5),
             FitHooks(after_step=steps.append))
    # Stage 1: 60/8 + 40/8 -> 8 + 5 batches; stage 2: topics 60/20 = 3 steps, sentiment 40/20 = 2.
    assert steps == [*range(1, 14), 1, 2, 3, 1, 2]
    for task in ("topics", "sentiment"):
        saved = json.loads((tmp_path / "out" / "stage2" / task / "config.json").read_text())
        assert (saved["batch_size"], saved["layer_decay"]) == (20, 0.5)
        groups = torch.load(tmp_path / "out" / "stage2" / task / "last" / "trainer.pt",
                            weights_only=True)["optimizer"]["param_groups"]
        top = 3e-3 * 0.5  # learning_rate x stage2_lr_factor
        rates = {g["name"].split(" (")[0]: g["initial_lr"] for g in groups}
        assert rates == pytest.approx({"embeddings": top * 0.25, "layer 0": top * 0.5, "layer 1": top,
                                       "pooler": top, "head": top})
    stage1 = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (stage1["batch_size"], stage1["layer_decay"], stage1["stage2_batch_size"]) == (8, 0.9, 20)


def test_multitask_option_errors(setup, tmp_path):
    root, _ = setup
    for overrides, message in ((dict(stage2_lr_factor=2.0), "stage2_lr_factor"), (dict(compile=True), "compile"),
                               (dict(stage2_batch_size=-1), "^--stage2_batch_size -1: must be at least 0"),
                               (dict(stage2_layer_decay=1.5), r"^--stage2_layer_decay 1.5: must be in \[0, 1\]"),
                               (dict(tasks="", tasks_dir="data", stage2_batch_size=24),
                                "^--stage2_batch_size applies to multi-task"),
                               (dict(task_temperature=0.0), "task_temperature"),
                               (dict(tasks_file="x.json"), "not both"),
                               (dict(tasks="topics,nope"), "nope/train.jsonl")):
        with pytest.raises(MinibertError, match=message):
            finetune(config(root, tmp_path / "bad", **overrides))


@pytest.mark.parametrize("overrides", [
    dict(hierarchical=True, chunk_pooling="max", max_seq_length=8),
    dict(precision="bf16", truncation="tail", layers="1", class_weighted_loss=True, grad_accum_steps=3),
    dict(head="bilstm_attention", freeze_encoder=True, lstm_size=8, attention_size=4, task_temperature=2.0),
])
def test_single_task_options_apply_to_every_task(setup, tmp_path, overrides):
    results = finetune(config(setup[0], tmp_path / "o", epochs=1, stage2_epochs=0, **overrides))
    assert set(results["multitask"]["tasks"]) == {"topics", "sentiment"} and "stage2" not in results
    saved = json.loads((tmp_path / "o" / "best" / "classifier.json").read_text())
    for task in ("topics", "sentiment"):
        for key in ("chunk_pooling", "layers", "head", "lstm_size"):
            if key in overrides:
                assert saved["tasks"][task]["head"][key] == overrides[key]
    for key in ("hierarchical", "truncation"):
        if key in overrides:
            assert saved["encoding"][key] == overrides[key]


def test_random_task_sampling_redraws_each_batch():
    """--task_sampling random (the paper's code): each epoch lists len // batch batches per task, each
    batch_size distinct examples drawn afresh; seeded by (seed, epoch), so a resume draws the same."""
    batches = redrawn_batches(20, 8, seed=5)
    assert len(batches) == 2 and all(len(b) == len(set(b)) == 8 and set(b) <= set(range(20)) for b in batches)
    assert redrawn_batches(20, 8, seed=5) == batches and redrawn_batches(20, 8, seed=6) != batches
    assert sorted(redrawn_batches(3, 8, seed=5)[0]) == [0, 1, 2]  # a task smaller than a batch: one batch of all


def crash_at(step: int):
    def after_step(done: int) -> None:
        if done == step:
            raise KeyboardInterrupt
    return after_step


def micro_batches_of(setup, tmp_path, **overrides):
    """Every stage-1 epoch's micro-batches the loop trained on, as (task, example indices)."""
    listed = []
    record = FitHooks(epoch_batches=lambda epoch, batches: listed.append(batches) if len(
        {task for task, _ in batches}) > 1 else None)
    results = finetune(config(setup[0], tmp_path, **overrides), record)
    return listed, results


@pytest.mark.slow
def test_random_task_sampling_in_a_run_and_its_resume(setup, tmp_path):
    root, _ = setup
    options = dict(epochs=2, checkpoint_every=3, task_sampling="random", stage2_epochs=0)
    listed, full = micro_batches_of(setup, tmp_path / "full", **options)
    epoch0, epoch1 = listed
    # 60 // 8 and 40 // 8 batches per epoch, each 8 distinct examples of one task, redrawn each epoch.
    assert Counter(task for task, _ in epoch0) == {"topics": 7, "sentiment": 5}
    assert all(len(set(batch)) == 8 for _, batch in epoch0 + epoch1)
    assert epoch0 != epoch1
    seen = [i for task, batch in epoch0 if task == "topics" for i in batch]
    assert len(set(seen)) < len(seen)  # drawn with replacement across batches, as the paper's code

    with pytest.raises(KeyboardInterrupt):
        finetune(config(root, tmp_path / "resumed", **options), FitHooks(after_step=crash_at(16)))
    resumed = finetune(config(root, tmp_path / "resumed", resume=True, **options))
    a, b = (load_file(tmp_path / run / "best" / "model.safetensors") for run in ("full", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed == full


@pytest.mark.slow
def test_stage2_fresh_head(setup, tmp_path):
    """--stage2_head fresh: stage 2 starts from stage 1's encoder (pooler too) and a new head drawn
    from the seed as --head_init says, as the paper's code loads only model.bert; kept starts from
    stage 1's head."""
    root, _ = setup
    starts = {}

    def recording(head):
        def stage2_start(task, model):
            view = model.classifier(task)  # names as a single-task classifier's: bert.*, head.*
            starts[head, task] = {k: v.clone() for k, v in view.state_dict().items()}
        return FitHooks(stage2_start=stage2_start)

    options = dict(epochs=1, stage2_epochs=1, head_init="normal")
    for head in ("fresh", "kept"):
        results = finetune(config(root, tmp_path / head, stage2_head=head, **options), recording(head))
        assert set(results["stage2"]["tasks"]) == {"topics", "sentiment"}
    a, b = (load_file(tmp_path / run / "best" / "model.safetensors") for run in ("fresh", "kept"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the option changes nothing in stage 1
    stage1_model = load_classifier(tmp_path / "fresh" / "best", "topics").model
    stage1 = stage1_model.state_dict()
    fresh, kept = starts["fresh", "topics"], starts["kept", "topics"]
    encoder = [k for k in stage1 if k.startswith("bert.")]
    head = [k for k in stage1 if k.startswith("head.")]
    assert encoder and head and all(torch.equal(fresh[k], stage1[k]) for k in encoder)
    assert all(torch.equal(kept[k], stage1[k]) for k in stage1)
    assert not any(torch.equal(fresh[k], stage1[k]) for k in head if "weight" in k)
    torch.manual_seed(3)  # the run's seed
    expected = new_head(stage1_model.config, stage1_model.head_config, "normal").state_dict()  # --head_init
    assert all(torch.equal(fresh["head." + k], v) for k, v in expected.items())
    saved = json.loads((tmp_path / "fresh" / "config.json").read_text())
    assert saved["stage2_head"] == "fresh"
