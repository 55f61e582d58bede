"""User-facing errors: one line that names the file, row or key and what was expected."""


class AudioclfError(Exception):
    """Base class for errors the CLI prints as a single line (no traceback)."""


class AudioDecodeError(AudioclfError):
    """An audio file is missing, empty, corrupt or not audio at all."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DataError(AudioclfError):
    """A manifest/CSV row or dataset layout is invalid (unknown label, missing file ...)."""


class ConfigError(AudioclfError):
    """An unknown or invalid configuration key/value."""


class BudgetExceeded(AudioclfError):
    """A model over the limits it was asked to meet (parameters, MACs, INT8 accuracy drop): the CLI exits 4."""


class UnsafeFileError(AudioclfError):
    """A file to load holds Python objects whose loading could run code; it is refused before any of it runs."""


class TrainingDiverged(AudioclfError):
    """The loss or the weights stopped being finite numbers (usually a learning rate that is too high)."""

    def __init__(self, epoch: int, lr: float, kept: str | None = None):
        self.epoch, self.lr = epoch, lr
        super().__init__(f"loss became NaN at epoch {epoch}; lower train.lr (now {lr:g})" + (f"; {kept}" if kept else ""))


class NonFiniteOutputs(DataError):
    """A model gave NaN or infinite probabilities (diverged weights, or an overflow in its forward pass)."""
