"""Publishers' pretrained checkpoints, one key away: ``model.weights=pretrained``.

The first use downloads the checkpoint into the cache (``$AUDIOCLF_CACHE/weights``, default
``~/.cache/audioclf/weights``) and checks it against the checksum its publisher states (Zenodo's MD5 for the
PANNs release; torchvision's SHA-256 prefix, which it puts in the file name; EfficientAT's release states
none, so there only the length is checked). Later uses read the cached
file, checked again. The download goes to a temporary name in the same folder and is renamed only once it is
complete and verified, so an interrupted or corrupted transfer never leaves a file that is later trusted.
Offline, the error is one line naming the address and where to put the file by hand.

Nothing is downloaded unless a config asks for ``pretrained``; tests serve generated checkpoints from a
loopback HTTP server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["Checkpoint", "CHECKPOINTS", "weights_cache", "pretrained_path", "download", "verify"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    """Where a model's published weights are and how to check them."""

    url: str
    filename: str
    publisher: str  # who states the checksum, for messages
    md5: str | None = None
    sha256_prefix: str | None = None  # torchvision: the first hex digits of the SHA-256, from the file name

    def check(self, path: Path) -> str | None:
        """None when ``path`` matches the stated checksum(s), else why not."""
        md5, sha256 = _digests(path)
        if self.md5 and md5 != self.md5:
            return f"MD5 {md5} differs from {self.publisher}'s {self.md5}"
        if self.sha256_prefix and not sha256.startswith(self.sha256_prefix):
            return f"SHA-256 {sha256[:16]}... does not start with {self.publisher}'s {self.sha256_prefix}"
        return None


CHECKPOINTS: Registry[Checkpoint] = Registry("pretrained checkpoint")
# PANNs (Kong et al. 2020), AudioSet-trained, Zenodo record 3987831 (MD5s as Zenodo lists them).
_ZENODO = "https://zenodo.org/record/3987831/files/{}?download=1"
CHECKPOINTS.add("cnn14", Checkpoint(_ZENODO.format("Cnn14_mAP%3D0.431.pth"), "Cnn14_mAP=0.431.pth", "Zenodo",
                                    md5="541141fa2ee191a88f24a3219fff024e"))
CHECKPOINTS.add("cnn10", Checkpoint(_ZENODO.format("Cnn10_mAP%3D0.380.pth"), "Cnn10_mAP=0.380.pth", "Zenodo",
                                    md5="bfb1f1f9968938fa8ef4012b8471f5f6"))
CHECKPOINTS.add("cnn6", Checkpoint(_ZENODO.format("Cnn6_mAP%3D0.343.pth"), "Cnn6_mAP=0.343.pth", "Zenodo",
                                   md5="e25e26b84585b14c7754c91e48efc9be"))
# torchvision's ImageNet weights (IMAGENET1K_V1), the ones the FSD2019 reference solution fine-tuned.
_TORCHVISION = "https://download.pytorch.org/models/{}"
CHECKPOINTS.add("resnet50", Checkpoint(_TORCHVISION.format("resnet50-0676ba61.pth"), "resnet50-0676ba61.pth",
                                       "torchvision", sha256_prefix="0676ba61"))
CHECKPOINTS.add("mobilenet_v2", Checkpoint(_TORCHVISION.format("mobilenet_v2-b0353104.pth"),
                                           "mobilenet_v2-b0353104.pth", "torchvision", sha256_prefix="b0353104"))

# EfficientAT MobileNets (Schmid et al. 2023), AudioSet-trained, from the authors' GitHub release v0.0.1. The
# release states no checksum, so these files are checked for completeness (Content-Length) only.
_EFFICIENTAT = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/{}"
for _name, _file in (("mn04", "mn04_as_mAP_432.pt"), ("mn05", "mn05_as_mAP_443.pt"), ("mn10", "mn10_as_mAP_471.pt"),
                     ("mn20", "mn20_as_mAP_478.pt"), ("mn30", "mn30_as_mAP_482.pt"), ("mn40", "mn40_as_mAP_484.pt")):
    CHECKPOINTS.add(_name, Checkpoint(_EFFICIENTAT.format(_file), _file, "EfficientAT's GitHub release"))


def weights_cache() -> Path:
    """``$AUDIOCLF_CACHE/weights``, else ``$XDG_CACHE_HOME/audioclf/weights``, else ``~/.cache/audioclf/weights``."""
    if os.environ.get("AUDIOCLF_CACHE"):
        return Path(os.environ["AUDIOCLF_CACHE"]) / "weights"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audioclf" / "weights"


def _digests(path: Path) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def verify(checkpoint: Checkpoint, path: Path) -> Path:
    """``path`` if it matches the checkpoint's checksum, else a one-line :class:`ConfigError`."""
    problem = checkpoint.check(path)
    if problem:
        raise ConfigError(f"{path}: not the published checkpoint ({problem}); delete it to download again")
    return path


def download(checkpoint: Checkpoint, dest: Path, timeout: float = 60.0) -> Path:
    """Fetch ``checkpoint`` to ``dest``: streamed to a temporary file beside it, checked (length and checksum),
    then renamed; on any failure nothing is left at ``dest`` and the error is one line."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.part-{secrets.token_hex(4)}")
    by_hand = f"put the file at {dest} by hand"
    try:
        with urllib.request.urlopen(checkpoint.url, timeout=timeout) as response, open(partial, "wb") as out:
            expected = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
        if expected is not None and received != int(expected):
            raise ConfigError(f"download of {checkpoint.url} stopped after {received:,} of {int(expected):,} bytes; "
                              f"try again, or {by_hand}")
        problem = checkpoint.check(partial)
        if problem:
            raise ConfigError(f"download of {checkpoint.url} is corrupt ({problem}); try again, or {by_hand}")
        os.replace(partial, dest)
    except ConfigError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(f"cannot download {checkpoint.url} ({reason}); offline? {by_hand}") from None
    finally:
        partial.unlink(missing_ok=True)
    return dest


def pretrained_path(model_name: str, cache: Path | None = None) -> Path:
    """The checked local file of ``model_name``'s published checkpoint, downloaded on first use."""
    if model_name not in CHECKPOINTS:
        raise ConfigError(f"model {model_name} has no published checkpoint to download; published: "
                          f"{', '.join(CHECKPOINTS.names())} (or give model.weights=PATH to a file)")
    checkpoint = CHECKPOINTS.get(model_name)
    path = (cache or weights_cache()) / checkpoint.filename
    if path.is_file():
        return verify(checkpoint, path)
    return download(checkpoint, path)
