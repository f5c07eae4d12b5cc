"""The runner's output: a Markdown table with the paper's numbers beside ours, and the figures.

Ours are test error rates (%) from each run's results.json, mean ± sample standard deviation over
the seeds that finished (a single seed shows its value alone); cells say why a run is missing.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from minibert.experiments.paper import DATASET_TITLES, Experiment, Row, avg_delta  # noqa: E402
from minibert.experiments.runner import Run, Scale  # noqa: E402
from minibert.files import atomic_write  # noqa: E402


def test_error(results: dict, dataset: str) -> float:
    """A run's test error (%) on `dataset`: train.py's results.json, or for a multi-task run the
    task's error after the second stage (after the first when there was none)."""
    if "tasks" in results:
        stage = results.get("stage2", results["multitask"])
        return 100 * stage["tasks"][dataset]["test_error"]
    return 100 * results["test_error"]


def finished_errors(runs: list[Run]) -> list[float]:
    """Test error (%) of each finished run, in run order."""
    errors = []
    for run in runs:
        path = run.folder / "results.json"
        if path.is_file():
            errors.append(test_error(json.loads(path.read_text(encoding="utf-8")), run.dataset))
    return errors


def format_errors(errors: list[float]) -> str:
    """"5.42" for one seed, "5.42 ± 0.10" (sample std) for several, "" for none."""
    if not errors:
        return ""
    if len(errors) == 1:
        return f"{errors[0]:.2f}"
    return f"{statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f}"


def _missing(runs: list[Run], notes: dict[str, int]) -> str:
    """A cell without results: a footnote number for why (refused or failed), else "not run"."""
    reasons = [run.refused or run.error for run in runs if run.refused or run.error]
    if not reasons:
        return "not run"
    mark = notes.setdefault(reasons[0], len(notes) + 1)
    return f"– [{mark}]"


def provenance(runs: list[Run]) -> str:
    """Which precision, device and torch produced the finished runs' numbers (their results.json; for
    a multi-task run, whose results.json has none, the precision and device of its config.json), e.g.
    "fp32 on cuda:0 (NVIDIA H200), torch 2.13.0 (12 runs)"; or the planned precision when none has
    finished."""
    seen: dict[str, int] = {}
    for folder in dict.fromkeys(run.folder for run in runs):
        results, config = folder / "results.json", folder / "config.json"
        if not results.is_file():
            continue
        info = json.loads(results.read_text(encoding="utf-8"))
        if "precision" not in info and config.is_file():
            saved = json.loads(config.read_text(encoding="utf-8"))
            info.update(precision=saved.get("precision"), device=saved.get("device") or "a device not recorded")
        what = (f"{info.get('precision') or 'precision not recorded'} on {info.get('device', 'a device not recorded')}"
                f", torch {info.get('torch', 'not recorded')}")
        seen[what] = seen.get(what, 0) + 1
    if seen:
        return "; ".join(f"{what} ({n} run{'s' * (n > 1)})" for what, n in seen.items())
    planned = sorted({run.config.machine.precision for run in runs if run.config is not None})
    return f"no finished run yet (planned precision: {', '.join(planned) or 'none'})"


def _means(runs: list[Run], row: Row, datasets: list[str]) -> dict[str, float]:
    """Our mean test error (%) per data set where some seed of the row finished."""
    means = {}
    for dataset in datasets:
        errors = finished_errors([run for run in runs if run.row == row and run.dataset == dataset])
        if errors:
            means[dataset] = statistics.mean(errors)
    return means


def _delta_cells(experiment: Experiment, row: Row, runs: list[Run], datasets: list[str]) -> list[str]:
    """Avg. Δ ours and the paper's (avg_delta against experiment.relative_to; "-" for that row)."""
    reference = next(r for r in experiment.rows if r.name == experiment.relative_to)
    if row == reference or row.published_only:
        return ["-", "-"]
    ours = avg_delta(_means(runs, row, datasets), _means(runs, reference, datasets))
    paper = avg_delta({d: e for d, e in row.paper.items() if d in datasets},
                      {d: e for d, e in reference.paper.items() if d in datasets})
    return ["" if ours is None else f"{ours:.2f}%", "" if paper is None else f"{paper:.2f}%"]


def markdown(experiment: Experiment, scale: Scale, runs: list[Run], datasets: list[str]) -> str:
    """One table: a row per experiment row, for each data set our error and the paper's (and Table
    6's Avg. Δ); rows the paper only quotes are marked "published, not run"."""
    datasets = datasets or list(experiment.datasets)
    header = ["method"] + [f"{DATASET_TITLES.get(d, d)} {side}" for d in datasets for side in ("ours", "paper")]
    if experiment.relative_to:
        header += ["Avg. Δ ours", "Avg. Δ paper"]
    lines = [f"### {experiment.title}", "",
             f"Scale **{scale.name}**: {scale.note}.", "",
             f"Our numbers: {provenance(runs)}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: dict[str, int] = {}
    for row in experiment.rows:
        cells = [f"{row.name} (published, not run)" if row.published_only else row.name]
        for dataset in datasets:
            mine = [run for run in runs if run.row == row and run.dataset == dataset]
            errors = finished_errors(mine)
            seeds = f" (n={len(errors)})" if len(errors) < len(mine) else ""  # not every seed finished
            if row.published_only:
                cells.append("")
            else:
                cells.append(format_errors(errors) + seeds if errors else _missing(mine, notes))
            paper = row.paper.get(dataset)
            cells.append("" if paper is None else f"{paper:.2f}")
        if experiment.relative_to:
            cells += _delta_cells(experiment, row, runs, datasets)
        lines.append("| " + " | ".join(cells) + " |")
    if experiment.relative_to:
        lines += ["", f"Avg. Δ: the mean over the data sets of 100 × (e_ref − e) / e_ref with e_ref the "
                      f"{experiment.relative_to} row's error (the paper's §5.4.3); ours against our "
                      f"{experiment.relative_to}, over the data sets both have; the paper's from its numbers "
                      "over the data sets shown. Over all of them this gives the published column to the "
                      "paper's truncation of the last digit: BERT-FiT 9.220 (9.22%), BERT-ITPT-FiT 16.079, "
                      "printed 16.07% (rounding would give 16.08)."]
    if notes:
        lines.append("")
        lines += [f"[{number}] {reason}" for reason, number in notes.items()]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda temp: fig.savefig(temp, dpi=100, format="png"))
    plt.close(fig)


def _curve(run: Run, split: str) -> dict[int, float]:
    path = run.folder / "metrics.jsonl"
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["step"]: 100 * r["error"] for r in records if r["split"] == split}


def _mean_curve(runs: list[Run], split: str) -> tuple[list[int], list[float]]:
    """Steps every seed evaluated at, and the mean error there."""
    curves = [c for c in (_curve(run, split) for run in runs) if c]
    if not curves:
        return [], []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return steps, [statistics.mean(c[s] for c in curves) for s in steps]


def plot_curves(experiment: Experiment, runs: list[Run], dataset: str, path: Path) -> None:
    """Figure 2's form: one panel per learning rate, train and dev error (%) over optimizer steps."""
    fig, axes = plt.subplots(1, len(experiment.rows), figsize=(4 * len(experiment.rows), 3.5), squeeze=False)
    for ax, row in zip(axes[0], experiment.rows):
        mine = [run for run in runs if run.row == row and run.dataset == dataset]
        for split, label in (("train_eval", "train"), ("dev", "dev")):
            steps, errors = _mean_curve(mine, split)
            ax.plot(steps, errors, marker=".", label=label)
        ax.set(title=row.name, xlabel=experiment.x_label, ylabel="error rate (%)")
        ax.legend()
    _save(fig, path)


def _points(runs: list[Run]) -> tuple[float | None, float | None]:
    errors = finished_errors(runs)
    if not errors:
        return None, None
    return statistics.mean(errors), statistics.stdev(errors) if len(errors) > 1 else 0.0


def plot_points(experiment: Experiment, runs: list[Run], dataset: str, path: Path) -> None:
    """Figures 3 and 4: test error over x, one line per series (ours with the seeds' std as error bars,
    the paper's published points as crosses)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    scale_x = 100 if experiment.plot == "few_shot" else 1  # proportions are shown in %
    series = list(dict.fromkeys(row.series for row in experiment.rows))
    for i, name in enumerate(series):
        rows = [row for row in experiment.rows if row.series == name]
        xs, means, stds = [], [], []
        for row in rows:
            mean, std = _points([run for run in runs if run.row == row and run.dataset == dataset])
            if mean is not None:
                xs.append(row.x * scale_x), means.append(mean), stds.append(std)
        color = f"C{i}"
        label = name or "ours"
        if xs:
            ax.errorbar(xs, means, yerr=stds, marker="o", color=color, label=f"{label} (ours)", capsize=3)
        paper = [(row.x * scale_x, row.paper[dataset]) for row in rows if dataset in row.paper]
        if paper:
            ax.scatter(*zip(*paper), marker="x", s=60, color=color, label=f"{label} (paper)")
    if experiment.plot == "few_shot":
        ax.set_xscale("log")
        ticks = [row.x * scale_x for row in experiment.rows if row.series == series[0]]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set(title=f"{experiment.title} - {DATASET_TITLES.get(dataset, dataset)}", xlabel=experiment.x_label,
           ylabel="test error rate (%)")
    ax.legend(fontsize="small")
    _save(fig, path)


PLOTS = {"curves": plot_curves, "steps": plot_points, "few_shot": plot_points}
