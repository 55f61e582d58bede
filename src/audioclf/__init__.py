"""audioclf: from a folder of audio files to a trained, evaluated, deployable classifier."""

__version__ = "0.1.0"
