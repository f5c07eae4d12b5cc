"""Learning curves from metrics.jsonl records, as a PNG a person can open."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from minibert.files import atomic_write  # noqa: E402


def plot_learning_curves(records: list[dict], path: str | Path) -> None:
    """Three panels over optimizer steps: training loss, learning rate, dev error and macro-F1 (a
    multi-label run's dev panel: its F1 scores, subset accuracy and Hamming loss)."""
    train = [r for r in records if r["split"] == "train"]
    dev = [r for r in records if r["split"] == "dev"]
    fig, (loss_ax, lr_ax, dev_ax) = plt.subplots(1, 3, figsize=(15, 4))
    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train])
    loss_ax.set(title="training loss", xlabel="optimizer step", ylabel="cross-entropy")
    lr_ax.plot([r["step"] for r in train], [r["lr"] for r in train])
    lr_ax.set(title="learning rate (top layer)", xlabel="optimizer step")
    if dev and "error" not in dev[0]:
        plot_multi_label_dev(dev_ax, dev)
    else:
        dev_ax.plot([r["step"] for r in dev], [100 * r["error"] for r in dev], marker="o", label="error %")
        dev_ax.set(title="dev", xlabel="optimizer step", ylabel="error %")
        f1_ax = dev_ax.twinx()
        f1_ax.plot([r["step"] for r in dev], [r["macro_f1"] for r in dev], marker="s", color="tab:orange",
                   label="macro-F1")
        f1_ax.set_ylabel("macro-F1")
    fig.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda temp: fig.savefig(temp, dpi=100, format="png"))
    plt.close(fig)


# A multi-label dev record's scores drawn on the dev panel (all in [0, 1]).
MULTI_LABEL_CURVES = ("macro_f1", "micro_f1", "example_f1", "macro_precision", "macro_recall", "subset_accuracy",
                      "hamming_loss")


def plot_multi_label_dev(ax, dev: list[dict]) -> None:
    """Every multi-label score a dev record holds (a mixed multi-task run's: the means it has)."""
    for key in (k for k in MULTI_LABEL_CURVES if k in dev[0]):
        ax.plot([r["step"] for r in dev], [r[key] for r in dev], marker="o", label=key)
    ax.set(title="dev", xlabel="optimizer step", ylabel="score")


def plot_pretraining_curves(records: list[dict], path: str | Path) -> None:
    """Three panels over optimizer steps: MLM/NSP/total training loss, learning rate, and the eval
    records' MLM and NSP accuracy (empty without --eval_input_file)."""
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    fig, (loss_ax, lr_ax, eval_ax) = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train]
    for key in ("loss", "mlm_loss", "nsp_loss"):
        loss_ax.plot(steps, [r[key] for r in train], label=key)
    loss_ax.set(title="training loss", xlabel="optimizer step", ylabel="cross-entropy")
    loss_ax.legend()
    lr_ax.plot(steps, [r["lr"] for r in train])
    lr_ax.set(title="learning rate", xlabel="optimizer step")
    for key in ("mlm_accuracy", "nsp_accuracy"):
        eval_ax.plot([r["step"] for r in evals], [100 * r[key] for r in evals], marker="o", label=key)
    eval_ax.set(title="evaluation", xlabel="optimizer step", ylabel="accuracy %")
    eval_ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda temp: fig.savefig(temp, dpi=100, format="png"))
    plt.close(fig)
