"""audioclf: from a folder of audio files to a trained, evaluated, deployable classifier.

``audioclf.run(cfg)`` trains what a config describes (a single run, every stage of a recipe, or every
cross-validation fold), exactly as ``audioclf train`` does; see :func:`audioclf.workflows.run.run`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import audioclf` stays cheap (no torch) for tools that only read the version.
    if name == "run":
        from .workflows.run import run

        return run
    raise AttributeError(f"module 'audioclf' has no attribute {name!r}")
