"""Run directories: what a training run leaves on disk, and everything that reads it back.

:class:`RunDir` is the layout (config, manifest snapshot, metrics log, checkpoints, summary);
:func:`load_model` rebuilds a run's model; :mod:`.plots` draws its curves and confusion matrices;
:mod:`.report` writes its ``report.md``. This layer sits below training, which writes runs, and above
the models they hold.
"""

from __future__ import annotations

from .directory import RunDir, default_run_dir, load_model
from .report import write_report

__all__ = ["RunDir", "default_run_dir", "load_model", "write_report"]
