"""Compression and deployment helpers: complexity (params / MACs), knowledge distillation, INT8 quantization.

ONNX export lives in :mod:`audioclf.export`; ONNX Runtime and ``onnx`` are imported lazily (extra
``audioclf[deploy]``), so importing this package needs only torch.
"""

from __future__ import annotations

from .complexity import LayerStats, Report, check_limits, complexity_report, format_report, run_complexity
from .distill import TeacherCache, TeacherEnsemble, distill, distillation_step, kd_loss, load_teacher, soft_target_loss
from .quantize import quantize_run

__all__ = [
    "LayerStats",
    "Report",
    "check_limits",
    "complexity_report",
    "format_report",
    "run_complexity",
    "TeacherCache",
    "TeacherEnsemble",
    "distill",
    "distillation_step",
    "kd_loss",
    "load_teacher",
    "soft_target_loss",
    "quantize_run",
]
