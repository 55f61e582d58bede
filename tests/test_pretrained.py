"""``model.weights=pretrained``: download once into the cache, check the publisher's checksum, never trust a
partial or corrupt file, one-line errors offline. Served from a loopback HTTP server the test starts."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from pathlib import Path

import pytest
import torch

from audioclf.errors import ConfigError
from audioclf.models import create_model
from audioclf.models.efficientat import WIDTHS, EfficientATMobileNet
from audioclf.models.panns import ConvBlock5x5, PannsCNN
from audioclf.models.pretrained import CHECKPOINTS, Checkpoint, pretrained_path

WIDTH = 4  # a narrow CNN6: the real one is 4.8M parameters


def _checkpoint_bytes() -> tuple[bytes, dict[str, torch.Tensor]]:
    """A PANNs-style CNN6 checkpoint ({"model": state_dict} with the release's key names) of random weights."""
    torch.manual_seed(0)
    model = PannsCNN(4, ConvBlock5x5, classes_num=527, mel_bins=64, width=WIDTH)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    return buffer.getvalue(), state


class _Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1; ``/cut/...`` announces the full length but sends half."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.hits = files, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                path = self.path.split("?")[0]
                server.hits.append(path)
                name = path.removeprefix("/cut")
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if path.startswith("/cut") else body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    body, state = _checkpoint_bytes()
    server = _Server({"/Cnn6.pth": body})
    monkeypatch.setenv("AUDIOCLF_CACHE", str(tmp_path / "cache"))
    published = CHECKPOINTS.get("cnn6")

    def publish(path: str = "/Cnn6.pth", md5: str | None = hashlib.md5(body).hexdigest()) -> Checkpoint:
        checkpoint = Checkpoint(server.url + path, "Cnn6_test.pth", "the test server", md5=md5)
        CHECKPOINTS.remove("cnn6")
        CHECKPOINTS.add("cnn6", checkpoint)
        return checkpoint

    yield server, publish, state, tmp_path / "cache" / "weights" / "Cnn6_test.pth", len(body)
    CHECKPOINTS.remove("cnn6")
    CHECKPOINTS.add("cnn6", published)
    server.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_once_checks_and_loads_the_weights(served):
    server, publish, state, cached, _ = served
    publish()
    model = create_model("cnn6", n_classes=3, input_shape=(1, 64, 101), weights="pretrained", width=WIDTH)
    assert cached.is_file() and server.hits == ["/Cnn6.pth"]
    loaded = model.backbone.state_dict()
    torch.testing.assert_close(loaded["conv_block2.conv1.weight"], state["conv_block2.conv1.weight"])
    torch.testing.assert_close(loaded["fc1.weight"], state["fc1.weight"])
    create_model("cnn6", n_classes=3, input_shape=(1, 64, 101), weights="pretrained", width=WIDTH)
    assert server.hits == ["/Cnn6.pth"]  # the second time comes from the cache


def test_a_wrong_checksum_leaves_nothing_behind(served):
    _, publish, _, cached, _ = served
    publish(md5="0" * 32)
    with pytest.raises(ConfigError, match=r"is corrupt \(MD5 .* differs from the test server's 0+\); try again"):
        pretrained_path("cnn6")
    assert _leftovers(cached.parent) == []


def test_an_interrupted_transfer_leaves_nothing_behind(served):
    _, publish, _, cached, size = served
    publish(path="/cut/Cnn6.pth")
    with pytest.raises(ConfigError, match=rf"stopped after {size // 2:,} of {size:,} bytes; try again"):
        pretrained_path("cnn6")
    assert _leftovers(cached.parent) == []


def test_offline_is_one_line_naming_the_address_and_where_to_put_the_file(served):
    server, publish, _, cached, _ = served
    checkpoint = publish()
    server.close()  # nothing listens on that port any more
    with pytest.raises(ConfigError) as error:
        pretrained_path("cnn6")
    message = str(error.value)
    assert "\n" not in message and checkpoint.url in message and f"put the file at {cached} by hand" in message
    assert _leftovers(cached.parent) == []


def test_a_tampered_cached_file_is_refused(served):
    _, publish, _, cached, _ = served
    publish()
    pretrained_path("cnn6")
    cached.write_bytes(cached.read_bytes()[:-1] + b"x")
    with pytest.raises(ConfigError, match="not the published checkpoint"):
        pretrained_path("cnn6")


def test_models_without_a_published_checkpoint_say_so():
    with pytest.raises(ConfigError, match="small_cnn has no published checkpoint"):
        pretrained_path("small_cnn")


def test_the_published_table_points_at_the_publishers():
    for name in ("cnn6", "cnn10", "cnn14"):
        checkpoint = CHECKPOINTS.get(name)
        assert checkpoint.url.startswith("https://zenodo.org/record/3987831/") and len(checkpoint.md5) == 32
    for name in ("resnet50", "mobilenet_v2"):
        checkpoint = CHECKPOINTS.get(name)
        assert checkpoint.url.startswith("https://download.pytorch.org/models/")
        assert checkpoint.sha256_prefix in checkpoint.filename  # torchvision's convention


def test_panns_sizes_match_the_paper():
    """PANNs (Kong et al. 2020) Table: CNN6 4.8M, CNN10 5.2M, CNN14 80.8M parameters with 527 classes."""
    sizes = {name: sum(p.numel() for p in create_model(name, 527, (1, 64, 1001)).parameters())
             for name in ("cnn6", "cnn10", "cnn14")}
    assert sizes == {"cnn6": 4_837_455, "cnn10": 5_219_279, "cnn14": 80_753_615}
    assert [round(n / 1e6, 1) for n in sizes.values()] == [4.8, 5.2, 80.8]


def test_efficientat_sizes_match_the_release_table():
    """EfficientAT's release table (MobileNetV3 with its AudioSet MLP head, 527 classes): 0.983 M (mn04),
    1.43 M, 4.88 M, 17.91 M, 39.09 M and 68.43 M (mn40) parameters."""
    sizes = [sum(p.numel() for p in EfficientATMobileNet(width, classes_num=527).parameters())
             for width in WIDTHS.values()]
    assert [round(n / 1e6, 2) for n in sizes] == [0.98, 1.43, 4.88, 17.91, 39.09, 68.43]


def test_an_efficientat_release_file_downloads_and_loads_strictly(tmp_path, monkeypatch):
    """The release is a plain state_dict with the AudioSet classifier; no checksum is published, so a file is
    trusted once complete (an interrupted transfer still leaves nothing)."""
    torch.manual_seed(1)
    release = EfficientATMobileNet(WIDTHS["mn04"], classes_num=527)
    buffer = io.BytesIO()
    torch.save(release.state_dict(), buffer)
    server = _Server({"/mn04_as.pt": buffer.getvalue()})
    monkeypatch.setenv("AUDIOCLF_CACHE", str(tmp_path / "cache"))
    published = CHECKPOINTS.get("mn04")
    try:
        CHECKPOINTS.remove("mn04")
        CHECKPOINTS.add("mn04", Checkpoint(server.url + "/cut/mn04_as.pt", "mn04_test.pt", "the test server"))
        with pytest.raises(ConfigError, match="stopped after"):
            create_model("mn04", n_classes=3, input_shape=(1, 128, 100), weights="pretrained")
        assert _leftovers(tmp_path / "cache" / "weights") == []
        CHECKPOINTS.remove("mn04")
        CHECKPOINTS.add("mn04", Checkpoint(server.url + "/mn04_as.pt", "mn04_test.pt", "the test server"))
        model = create_model("mn04", n_classes=3, input_shape=(1, 128, 100), weights="pretrained", freeze="all")
    finally:
        CHECKPOINTS.remove("mn04")
        CHECKPOINTS.add("mn04", published)
        server.close()
    expected = {k: v for k, v in release.state_dict().items() if not k.startswith("classifier.")}
    loaded = model.backbone.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value)
    model.eval()
    x = torch.randn(2, 1, 128, 100)
    # The new head reads the release's embedding: the final map averaged over frequency and time.
    torch.testing.assert_close(model.embed(x), release.eval().features(x).mean(dim=(2, 3)))


def test_efficientat_checkpoints_point_at_the_release():
    for name in WIDTHS:
        checkpoint = CHECKPOINTS.get(name)
        assert checkpoint.url.startswith("https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/")
        assert checkpoint.filename.startswith(f"{name}_as_mAP_")
