"""What a run leaves for a person to read and plot: metrics.jsonl (and, optionally, the same scalars
as TensorBoard events), and the running loss behind it."""

import json
import math
from numbers import Real
from pathlib import Path

import torch

from minibert.errors import ConfigError, MinibertError
from minibert.files import atomic_write_text

TENSORBOARD_HINT = "pip install tensorboard (or pip install minibert[tensorboard])"
TENSORBOARD_FOLDER = "tensorboard"  # inside output_dir
# --tensorboard's help, for train.py and pretrain.py train alike.
TENSORBOARD_HELP = (f"also write metrics.jsonl's scalars as TensorBoard events in output_dir/{TENSORBOARD_FOLDER} "
                    f"({TENSORBOARD_HINT})")


class NonFiniteLoss(MinibertError):
    """The training loss became NaN or infinite: continuing would only spread it into the weights."""


class MetricsLog:
    """metrics.jsonl: one JSON record per line, flushed as it goes, so a person can tail and plot it.

    A resumed run passes the step of its checkpoint: the records written after it (by the run that
    was interrupted) are dropped, so the file reads as one uninterrupted run. With path None the
    records are only kept in memory (the processes other than rank 0 of a distributed run).

    With tensorboard_dir, every record's numbers also go to a TensorBoard event file there (torch's
    SummaryWriter), tagged "<split>/<name>" ("<split>/<task>/<name>" for a task's record) at the
    record's step; a resumed run purges the events after its checkpoint's step, as in the file.
    """

    def __init__(self, path: Path | None, keep_until_step: int | None, tensorboard_dir: Path | None = None):
        self.path = path
        self.records = []
        self.file = None
        self.writer = None
        if path is None:
            return
        if tensorboard_dir is not None:  # first: without the package nothing is touched
            writer_class = require_tensorboard()
            purge_step = None if keep_until_step is None else keep_until_step + 1
            self.writer = writer_class(str(tensorboard_dir), purge_step=purge_step)
        if keep_until_step is not None and path.exists():
            self.records = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= keep_until_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        self.file = open(path, "a", encoding="utf-8")

    def write(self, **record) -> None:
        self.records.append(record)
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.writer is not None:
            for tag, value in scalars(record).items():
                self.writer.add_scalar(tag, value, global_step=record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def require_tensorboard():
    """torch's SummaryWriter; a one-line ConfigError saying how to install tensorboard without it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"TensorBoard logging needs the tensorboard package: {TENSORBOARD_HINT}") from None
    return SummaryWriter


def scalars(record: dict) -> dict[str, float]:
    """A metrics record's numbers as TensorBoard tags: {"<split>/[<task>/]<name>": value}, the step
    (the x axis) and anything that is not a number (text, lists, booleans) left out."""
    prefix = "/".join(str(record[key]) for key in ("split", "task") if key in record)
    return {f"{prefix}/{name}" if prefix else name: float(value) for name, value in record.items()
            if name != "step" and isinstance(value, Real) and not isinstance(value, bool)}


class LossWindow:
    """The mean training loss since the last log line, summed on the loss's device.

    `add` keeps the sum as a float64 tensor, so the device is not waited for at every batch; `mean`
    reads it (one host sync) when a line is logged. On the CPU, where reading costs nothing, every
    loss is checked for NaN/inf as it comes, so the error names the exact step; on a GPU the check
    happens at each log line and names the steps since the previous one.
    """

    def __init__(self, total: float = 0.0, batches: int = 0):
        self.total, self.batches = torch.tensor(total, dtype=torch.float64), batches
        self.first_step = None

    def add(self, loss: torch.Tensor, step: int) -> None:
        """loss: a scalar tensor (the micro-batch's mean loss); step: the optimizer step it belongs to."""
        if self.first_step is None:
            self.first_step = step
        self.total = self.total.to(loss.device) + loss.detach().double()
        self.batches += 1
        if loss.device.type == "cpu" and not math.isfinite(value := float(loss.detach())):
            raise NonFiniteLoss(f"the training loss became {value} at optimizer step {step}: lower the "
                                "learning rate, check the data, or use fp32")

    def mean(self, step: int, reduce=None) -> float:
        """The window's mean loss; `reduce` sums (total, batches) over processes when given."""
        count = torch.tensor(float(self.batches), dtype=torch.float64, device=self.total.device)
        sums = torch.stack([self.total, count])
        if reduce is not None:
            sums = reduce(sums)
        total, batches = sums.tolist()
        value = total / max(1.0, batches)
        if not math.isfinite(value):
            raise NonFiniteLoss(f"the training loss became {value} between optimizer steps {self.first_step} and "
                                f"{step}: lower the learning rate, check the data, or use fp32")
        return value

    def reset(self) -> None:
        self.total, self.batches, self.first_step = torch.zeros((), dtype=torch.float64), 0, None

    def state(self) -> tuple[float, int]:
        """(sum, count) as plain numbers, for the resume checkpoint."""
        return float(self.total), self.batches
