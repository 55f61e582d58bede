"""The page's live microphone mode in headless Chromium: a fake microphone (Chromium's
``--use-file-for-fake-audio-capture``) plays an 880 Hz tone; the page streams it to ``/live`` over a WebSocket
(uvicorn with wsproto, as ``audioclf serve``), and its scrolling timeline and current label must show the tone's
class. A stand-in predictor finds the tone's pitch, so a wrong sample rate anywhere on the way (page, server,
resampler) would move it out of its class. The screenshot is kept in the test's folder."""

from __future__ import annotations

import numpy as np
import pytest

from audioclf.data.audio import write_audio
from audioclf.deploy.predictor import WindowedPredictor
from servers import serving
from test_serve_page import ARGS, CHROMIUM

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("wsproto")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs the system's Chromium (apt-get install chromium)"),
              pytest.mark.slow]  # a browser, a server and 30 s of fake microphone (~8 s): make test-slow
FAKE_MICROPHONE = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                   "--autoplay-policy=no-user-gesture-required"]


class Pitch(WindowedPredictor):
    """Each window's share of energy within 25 Hz of 440 Hz, of 880 Hz, and elsewhere."""

    classes, task, sample_rate, clip_samples = ["440 Hz", "880 Hz", "other"], "single_label", 16000, 8000

    def window_probabilities(self, windows):
        power = np.abs(np.fft.rfft(windows.astype(np.float64), axis=1)) ** 2
        hz = np.fft.rfftfreq(self.clip_samples, 1 / self.sample_rate)
        bands = [np.abs(hz - f) <= 25 for f in (440, 880)]
        total = power.sum(1) + 1e-12
        shares = [power[:, band].sum(1) / total for band in bands]
        return np.stack([*shares, np.clip(1 - shares[0] - shares[1], 0, 1)], axis=1)


def wait_for_windows(page, n: int) -> None:
    """Until the timeline has ``n`` windows; on a timeout, the page's status line says why (e.g. no microphone)."""
    try:
        page.wait_for_function(f"+document.querySelector('#live-timeline').dataset.windows >= {n}", timeout=60_000)
    except sync_api.TimeoutError:
        count = page.eval_on_selector("#live-timeline", "c => c.dataset.windows")
        pytest.fail(f"{count} of {n} windows within 60 s; the page's status: {page.inner_text('#status')!r}")


def test_the_live_mode_streams_the_microphone_and_scrolls_its_labels(tmp_path):
    from audioclf.deploy.serve import ServeLimits, create_app, model_info

    tones = tmp_path / "tones.wav"  # 2 s at 440 Hz, 2 s at 880 Hz, 1 s of noise; Chromium loops the file
    t = np.arange(2 * 48000) / 48000
    noise = 0.1 * np.random.default_rng(0).standard_normal(48000)
    write_audio(tones, np.concatenate([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 880 * t),
                                       noise]).astype(np.float32), 48000)
    with serving(create_app(Pitch(), model_info("stand-in", Pitch()), ServeLimits())) as port, \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            *ARGS, *FAKE_MICROPHONE, f"--use-file-for-fake-audio-capture={tones}"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.querySelector('#model').textContent.includes('classes')")
            page.click("#live")
            wait_for_windows(page, 24)
            now, labels = page.evaluate(  # in one go: a window may arrive between two calls
                "[document.querySelector('#live-now').textContent, live.windows.map((w) => w.labels[0])]")
            rows = page.locator("#live-labels div").all_inner_texts()
            # each label's top against the heat map's top: its rows are 20 px (CSS px) apart
            offsets = page.evaluate("[...document.querySelectorAll('#live-labels div')].map((d) => "
                                    "d.getBoundingClientRect().top - "
                                    "document.querySelector('#live-timeline').getBoundingClientRect().top)")
            status = page.inner_text("#status")
            canvas = page.eval_on_selector("#live-timeline", "c => [c.width, c.height]")
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            page.click("#live")  # Stop: the server sends its last window and closes the socket
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('live stream ended')",
                                   timeout=20_000)
            button = page.inner_text("#live")
        finally:
            browser.close()
    # 6 s of a 5-s cycle: both tones, each over several windows in a row (0.5-s windows every 0.25 s)
    runs = [label for k, label in enumerate(labels) if labels[k : k + 4] == [label] * 4]
    assert {"440 Hz", "880 Hz"} <= set(runs) and now.startswith(f"Now: {labels[-1]} (")
    assert rows == ["440 Hz", "880 Hz", "other"] and canvas[0] > 500 and canvas[1] > 0
    assert offsets == pytest.approx([0, 20, 40], abs=1)  # each label beside its row of the heat map
    assert status.startswith("live: 0.5 s windows every 0.25 s") and button == "Live"
    assert (tmp_path / "live.png").stat().st_size > 10_000
