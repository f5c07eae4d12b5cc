"""Optimisation and runs: optimizers, schedules, precision, evaluation, metrics and plots."""
