"""Hyper-parameter search with Optuna over any trainer option (`python -m toolkit.tune`): trials are real,
time-budgeted training runs, pruned from their in-loop reports, kept in a resumable study."""
