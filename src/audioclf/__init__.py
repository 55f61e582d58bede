"""audioclf: from a folder of audio files to a trained, evaluated, deployable classifier.

``audioclf.train("clips/", out="runs/x", train={"epochs": 20})`` trains as ``audioclf train`` does (the same
header and progress on stderr; ``quiet=True`` for none) and returns a :class:`~audioclf.workflows.api.Run`
(``.metrics``, ``.classes``, ``.predict(files)``, ``.evaluate()``, ``.export()``, ``.quantize()``);
``audioclf.load(path)`` opens a run folder or an exported ``.onnx`` file, both answering ``.predict(files)``
alike. ``audioclf.run(cfg)`` takes a whole config (a single run, every stage of a recipe, or every
cross-validation fold); see :func:`audioclf.workflows.run.run`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "load", "run", "train", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import audioclf` stays cheap (no torch) for tools that only read the version.
    if name in ("Run", "load", "run", "train"):
        from .workflows import api

        return getattr(api, name)
    raise AttributeError(f"module 'audioclf' has no attribute {name!r}")
