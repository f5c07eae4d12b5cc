"""SIGTERM as a request to stop, shared by the fine-tuning and pre-training loops.

A scheduler (SLURM, Kubernetes, a user's kill) sends SIGTERM before it kills. A run's context holds
a StopSignal (RunContext.stoppable installs it, RunContext.end_step reads it once per optimizer
step); when it was received the loop finishes the step, saves last/ and returns a result marked
stopped; the scripts then exit with status 143
(cli.STOPPED_EXIT_STATUS), so the caller knows the run is unfinished and `--resume` continues it
with bit-identical weights.
"""

import signal

import torch

from minibert.training.distributed import Distributed, all_reduce_sum


class StopSignal:
    """SIGTERM asks the run to stop: it finishes the step, saves last/ and returns."""

    def __init__(self):
        self.received, self.previous = None, None

    def install(self) -> None:
        self.previous = signal.signal(signal.SIGTERM, self.handle)

    def handle(self, number, frame) -> None:
        self.received = number

    def requested(self, setup: Distributed) -> bool:
        """Whether any process got SIGTERM: all stop after the same step (one small all-reduce per step
        under torchrun), so none waits forever for the others at the next collective."""
        flag = torch.tensor(float(self.received is not None))
        return bool(all_reduce_sum(flag, setup) > 0) if setup.enabled else bool(flag)

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self.previous)
