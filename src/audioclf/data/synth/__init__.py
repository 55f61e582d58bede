"""Generated data: the embedded demo dataset (and, later, mixtures)."""

from .demo import DEMO_CLASSES, make_demo_dataset, synthesize_clip, synthesize_event

__all__ = ["DEMO_CLASSES", "make_demo_dataset", "synthesize_clip", "synthesize_event"]
