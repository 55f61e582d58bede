"""Generated data: the embedded demo dataset, speaker-count mixtures (LibriSpeech), multi-label mixtures."""

from .demo import DEMO_CLASSES, make_demo_dataset, synthesize_clip, synthesize_event
from .mixtures import make_multilabel_mixtures
from .speaker_count import REPORT_SIZES, generate_speaker_count, source_manifest

__all__ = ["DEMO_CLASSES", "REPORT_SIZES", "generate_speaker_count", "make_demo_dataset", "make_multilabel_mixtures",
           "source_manifest", "synthesize_clip", "synthesize_event"]
