"""The page ``audioclf serve`` ships, in a real headless browser: the system's Chromium driven by Playwright (no
browser is downloaded). Loads the page, uploads a long recording, and checks the top class and the timeline; the
screenshot is kept in the test's folder. Skips where there is no Chromium (``apt-get install chromium``)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from audioclf.data.audio import load_audio, write_audio
from audioclf.deploy.predictor import Predictor
from browser import ARGS, CHROMIUM

from test_serve import server, trained  # noqa: F401 (fixtures: a trained run, served on a loopback port)

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs the system's Chromium (apt-get install chromium)")


@contextmanager
def uploaded(server: str, path: Path):
    """The page in headless Chromium, ``path`` chosen in its file input and its timeline drawn."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(f"{server}/")
            page.wait_for_function("document.querySelector('#model').textContent.includes('classes')")
            page.set_input_files("#file", str(path))
            page.wait_for_function("document.querySelector('#timeline').height > 0", timeout=30_000)
            yield page
        finally:
            browser.close()


def test_the_page_classifies_an_uploaded_recording_and_draws_its_timeline(server, trained, tmp_path):  # noqa: F811
    run, data = trained
    files = sorted(data.rglob("*.wav"))
    first_class = files[0].parent.name
    long_path = tmp_path / "long.wav"  # 3 s of the first class: long enough for a timeline
    write_audio(long_path, np.concatenate([load_audio(f)[0] for f in files if f.parent.name == first_class]), 16000)
    predictor = Predictor.from_run(run, device="cpu")
    expected = predictor.predict_files([long_path])[0].label
    windows = len(predictor.file_window_probabilities(long_path))
    with uploaded(server, long_path) as page:
        heading = page.inner_text("#results h2")
        bars = page.locator("#results .bar").all_inner_texts()
        status = page.inner_text("#status")
        page.keyboard.press("Tab")  # keyboard: the drop zone takes the focus first
        focused = page.evaluate("document.activeElement.id")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert heading == f"Predicted: {expected}" and bars[0].startswith(expected)
    assert status.startswith(f"long.wav: {windows} window(s)") and focused == "drop"
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_heat_map_lies_under_the_waveform_with_time_ticks_and_a_colour_scale(server, trained, tmp_path):  # noqa: F811
    _, data = trained
    path = tmp_path / "five.wav"  # 5 s: five demo clips, a class change every second
    write_audio(path, np.concatenate([load_audio(f)[0] for f in sorted(data.rglob("*.wav"))[::3][:5]]), 16000)
    with uploaded(server, path) as page:
        box = lambda selector: page.eval_on_selector(selector, "e => { const r = e.getBoundingClientRect(); "  # noqa: E731
                                                                "return [r.left, r.width, r.height]; }")
        wave, heat, axis, scale = box("#wave"), box("#timeline"), box("#time-axis"), box("#colour-scale")
        ticks = page.eval_on_selector_all("#time-axis .tick", "ts => ts.map((t) => [+t.dataset.seconds, "
                                          "(t.getBoundingClientRect().left + t.getBoundingClientRect().right) / 2])")
        page.screenshot(path=str(tmp_path / "five.png"), full_page=True)
    # The heat map, its time axis and the waveform span the same pixels: one time -> x mapping.
    assert heat[:2] == wave[:2] and axis[:2] == wave[:2] and wave[1] > 500 and heat[2] > 0
    seconds = [t for t, _ in ticks]
    assert len(ticks) >= 4 and seconds[0] == 0 and seconds[-1] == pytest.approx(5.0)
    for t, centre in ticks:  # each tick sits where its time is on the waveform
        assert centre == pytest.approx(wave[0] + t / 5.0 * wave[1], abs=1.5)
    assert scale[1] > 0 and scale[2] > 0  # the colour scale (probability 0 -> 1) is shown
