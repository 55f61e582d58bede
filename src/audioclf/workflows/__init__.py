"""Workflows: what a user runs as one command, built on the trainer and the run directories.

:mod:`.run` (one entry: a single run, stages or cross-validation — ``audioclf.run``), :mod:`.stages`
(multi-stage recipes), :mod:`.cv` (k-fold cross-validation), :mod:`.evaluation` (evaluate a run, average
an ensemble), :mod:`.describe` (the data before training), :mod:`.demo` (synthetic data, train, predict).
"""
