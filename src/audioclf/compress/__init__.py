"""Model compression: knowledge distillation (:mod:`.distill`). Parameter and MAC counting lives with the
models (:mod:`audioclf.models.complexity`), INT8 quantization with deployment (:mod:`audioclf.deploy.quantize`).
"""

from __future__ import annotations

from .distill import TeacherCache, TeacherEnsemble, distill, distillation_step, kd_loss, load_teacher, soft_target_loss

__all__ = ["TeacherCache", "TeacherEnsemble", "distill", "distillation_step", "kd_loss", "load_teacher",
           "soft_target_loss"]
