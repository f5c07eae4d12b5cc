"""SIGTERM and SIGINT (Ctrl-C) as a request to stop, shared by the fine-tuning and pre-training loops.

A scheduler (SLURM, Kubernetes, a user's kill) sends SIGTERM before it kills; a user at the
terminal presses Ctrl-C. A run's context holds a StopSignal (RunContext.stoppable installs it,
RunContext.end_step reads it once per optimizer step); when either was received the loop finishes
the step, saves last/ and returns a result marked stopped with the signal's number; the scripts then
exit with status 128 + that number (143 for SIGTERM, 130 for SIGINT, as a shell reports a process
the signal ended: cli.stopped_exit_status), so the caller knows the run is unfinished and `--resume`
continues it with bit-identical weights.
"""

import signal

import torch

from minibert.training.distributed import Distributed, all_reduce_sum

# The signals that ask a run to stop after its step, in the order of precedence when ranks differ.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal:
    """SIGTERM or SIGINT asks the run to stop: it finishes the step, saves last/ and returns."""

    def __init__(self):
        self.received, self.previous = None, {}

    def install(self) -> None:
        self.previous = {number: signal.signal(number, self.handle) for number in STOP_SIGNALS}

    def handle(self, number, frame) -> None:
        self.received = number

    def requested(self, setup: Distributed) -> int:
        """The number of the signal that stops the run after this step, 0 when none arrived. Every
        process reads the same answer (one small all-reduce per step under torchrun), so all stop
        after the same step and none waits forever for the others at the next collective; a Ctrl-C
        reaching any rank is reported as SIGINT."""
        flags = torch.tensor([float(self.received == number) for number in STOP_SIGNALS])
        flags = all_reduce_sum(flags, setup)
        return next((int(number) for number, flag in zip(STOP_SIGNALS, flags) if flag > 0), 0)

    def restore(self) -> None:
        for number, previous in self.previous.items():
            signal.signal(number, previous)
