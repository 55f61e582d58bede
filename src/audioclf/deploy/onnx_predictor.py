"""Prediction from an exported ONNX file with ONNX Runtime: the same interface as :class:`~audioclf.deploy.predictor.Predictor`.

The file's metadata (written by :mod:`audioclf.export`) gives the classes, task, sample rate and clip
length. A model exported with its front-end takes waveforms directly; one exported without it takes the
log-mel image, which is computed here with :class:`audioclf.features.FrontEnd` from the metadata's
feature settings (the same computation as in training). Long recordings are windowed and aggregated
exactly as :class:`~audioclf.deploy.predictor.Predictor` does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..calibration import Decisions
from ..errors import AudioclfError
from ..features import FeatureConfig, FrontEnd
from ..runs import RunDir
from .export import decode_metadata, import_onnxruntime
from .int8_kernels import unchecked_machine
from .predictor import Predictor, WindowedPredictor

__all__ = ["OnnxPredictor", "load_predictor", "onnx_session", "softmax", "sigmoid"]

log = logging.getLogger(__name__)
_NOTIFIED: set[Path] = set()  # INT8 files already noticed in this process: one notice each, not one per load


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)  # no overflow for large logits
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # stable for any sign, unlike 1 / (1 + exp(-x))


def onnx_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None):
    """An ONNX Runtime session; ``threads`` limits intra- and inter-op threads (None: runtime default)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = int(threads)
    available = ort.get_available_providers()
    chosen = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in available]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen or ["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioclfError(f"{path}: cannot load ONNX model ({first})") from None


class OnnxPredictor(WindowedPredictor):
    """``predict_wave`` / ``predict_files`` / ``top_k`` / ``classes`` for an exported ``.onnx`` file."""

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 measuring: bool = False):
        """``measuring``: the file is being checked (by quantize), so no notice that it was not."""
        self.path = Path(path)
        if not self.path.is_file():
            raise AudioclfError(f"{self.path}: ONNX model file not found")
        self.session = onnx_session(self.path, threads, providers)
        self.metadata: dict[str, Any] = decode_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        # Next to a run (its folder, or any folder holding a run): only an export of its current checkpoint.
        # A file elsewhere has nothing to compare with and is used as it is.
        stale = RunDir(self.path.parent).stale_reason(self.metadata)
        if stale is not None:
            again = "quantize" if ".int8." in self.path.name else "export"
            raise AudioclfError(f"{self.path}: exported {stale}; run audioclf {again} {self.path.parent} again")
        if not measuring:
            self._notice_unchecked_int8()
        self.classes: list[str] = list(self.metadata["classes"])
        self.task: str = self.metadata["task"]
        self.sample_rate: int = self.metadata["sample_rate"]
        self.clip_samples: int = self.metadata["clip_samples"]
        self.pad_mode: str = self.metadata.get("pad_mode", "tile")
        self.trim_silence: bool | str = self.metadata["trim_silence"]
        self.decisions = Decisions.from_dict(self.metadata["decisions"], self.classes, f"{self.path}: metadata")
        self.input_name: str = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()[0].shape[-1]  # an int, or a name for a dynamic axis
        if isinstance(outputs, int) and outputs != len(self.classes):
            raise AudioclfError(f"{self.path}: the model gives {outputs} scores but its metadata 'classes' names "
                                f"{len(self.classes)}")
        self.frontend = None
        if self.metadata["input"] == "features":
            self.frontend = FrontEnd(FeatureConfig.from_dict(self.metadata["features"])).eval()

    def _notice_unchecked_int8(self) -> None:
        """An INT8 file whose drop was measured on a CPU with other int8 kernels may behave differently here."""
        key = self.path.resolve()
        reason = None if key in _NOTIFIED else unchecked_machine(self.metadata)
        if reason is not None:
            _NOTIFIED.add(key)
            log.warning("%s: INT8 model not checked on this machine: %s", self.path, reason)

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> "OnnxPredictor":
        return cls(path, threads)

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Logits for a batch of clip-length waveforms (B, clip_samples)."""
        inputs = windows.astype(np.float32)
        if self.frontend is not None:
            with torch.no_grad():
                inputs = self.frontend(torch.from_numpy(inputs)).numpy()
        return self.session.run(None, {self.input_name: inputs})[0]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits) if self.task == "single_label" else sigmoid(logits)

    def window_probabilities(self, windows: np.ndarray) -> np.ndarray:
        return self.probabilities(self.logits(windows))


def load_predictor(path: str | Path, device: str = "auto", tta: int = 1) -> Predictor | OnnxPredictor:
    """``.onnx`` file -> :class:`OnnxPredictor`; anything else is a run directory -> :class:`Predictor`.
    ``tta``: test-time augmentation copies per window (1 = off; see ``predictor.averaged_over_shifts``)."""
    if Path(path).suffix.lower() == ".onnx":
        predictor = OnnxPredictor(path)
        predictor.tta = tta
        return predictor
    return Predictor.from_run(path, device=device, tta=tta)
