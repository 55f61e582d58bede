"""``doctor.html``: the doctor's page on generated data with planted faults (an exact copy across splits, a near
copy under another label, a speaker in two splits, a silent file with a hostile name, flipped labels). In headless
Chromium (the system's, driven by Playwright; those tests skip without it) every finding is listed, each player's
audio decodes and each thumbnail loads, from a copy of the page moved away from its data; without a browser: names
and labels are escaped and the players are bounded."""

from __future__ import annotations

import csv
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from audioclf.cli import main
from audioclf.config import load_config
from audioclf.data.audio import load_audio, write_audio
from audioclf.workflows.doctor import doctor_data
from browser import ARGS, CHROMIUM
from layouts import write_table
from separable import separable_clips
from test_doctor import HEADER, clean_rows, clip

HOSTILE = "<img src=x onerror=alert(1)>"
PLANTED = {"leak", "conflict", "group_leak", "silent", "label_issue"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The doctor's folder for the separable classes (12 clips each; 8 train, 2 val, 2 test) with the module
    docstring's faults planted."""
    root = tmp_path_factory.mktemp("planted")
    paths = separable_clips(root / "clips", 12)
    rows = [[str(p), name, "train" if i < 8 else "val" if i < 10 else "test", f"{name}{i}"]
            for name, files in paths.items() for i, p in enumerate(files)]
    rows[0][1], rows[13][1] = "rumble", "white"  # two training labels flipped
    rows[3][3] = rows[5][3] = rows[20][3] = "shared"  # a speaker in train (twice) and val
    shutil.copyfile(paths["low_tone"][1], root / "copy.wav")  # low_tone_01 (train), again in test
    wave, rate = load_audio(paths["high_tone"][2])
    write_audio(root / "quiet.flac", 0.5 * wave, rate)  # high_tone_02 at half the gain, labelled white
    write_audio(root / f"{HOSTILE}.wav", 1e-5 * np.random.default_rng(0).standard_normal(rate), rate)
    rows += [[str(root / "copy.wav"), "low_tone", "test", "c"], [str(root / "quiet.flac"), "white", "train", "q"],
             [str(root / f"{HOSTILE}.wav"), "white", "train", "h"]]
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["fname", "labels", "split", "speaker"], *rows])
    result = doctor_data(load_config(None, [f"data.path={root / 'labels.csv'}"]), root / "report", progress=False)
    return result, root


class Tags(HTMLParser):
    """Every start tag's name and attribute names in a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, [name for name, _ in attrs]))


def test_the_page_is_written_beside_doctor_md_and_holds_every_resource(planted):
    result, root = planted
    page = result.html.read_text()
    assert result.html == root / "report" / "doctor.html" and result.markdown.parent == result.html.parent
    assert {f.kind for f in result.findings} >= PLANTED
    assert page.count('class="finding"') == len(result.findings)
    group_leak = page.split('data-kind="group_leak"')[1].split('class="finding"')[0]
    assert "white_03.wav (train, white)" in group_leak and "rumble_08.wav (val, rumble)" in group_leak  # one a split
    assert "white_05.wav (train" not in group_leak
    assert all(f'<a href="#{kind}">' in page and f'id="{kind}"' in page for kind in PLANTED)  # counts link to boxes
    sources = re.findall(r'\ssrc="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "data:audio/wav;base64,")) for s in sources)
    assert "audioclf doctor --data" in page and "--fix cleaned.csv" in page  # the leak's fix, as a command
    flipped = next(f for f in result.findings if f.kind == "label_issue" and "white_00.wav" in f.message)
    assert "set the labels of the row of white_00.wav to &#x27;white&#x27;" in page and "white_00.wav" in flipped.fix


def test_names_and_labels_from_the_data_are_shown_as_text_never_as_markup(tmp_path):
    rows = clean_rows(tmp_path)
    label = "<script>alert(2)</script>"
    shutil.copyfile(tmp_path / "c0.wav", tmp_path / f"{HOSTILE}.wav")  # c0 (train): a leak into test
    rows = [(*row[:1], label, *row[2:]) if row[1] == "rain" else row for row in rows]
    rows.append((f"{HOSTILE}.wav", label, "test", "s90"))
    csv_path = write_table(tmp_path / "meta.csv", HEADER, rows)
    result = doctor_data(load_config(None, [f"data.path={csv_path}"]), tmp_path / "report", progress=False,
                         labels=False)
    page = result.html.read_text()
    assert HOSTILE not in page and label not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.wav" in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    tags = Tags(page).tags
    assert {tag for tag, _ in tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "code", "a",
                                         "table", "thead", "tbody", "tr", "th", "td", "img", "div", "span",
                                         "figure", "figcaption", "audio", "br"}
    assert not [name for _, names in tags for name in names if name.startswith("on")]
    assert "script" not in {tag for tag, _ in tags}


@pytest.mark.parametrize("players", [0, 2, 30])
def test_the_players_are_bounded_by_the_option(tmp_path, players):
    rows = clean_rows(tmp_path)
    for i in range(6):  # six silent files: six findings of one file each
        write_audio(tmp_path / f"quiet{i}.wav", 1e-4 * clip(200 + i), 8000)
        rows.append((f"quiet{i}.wav", "dog", "train", f"q{i}"))
    csv_path = write_table(tmp_path / "meta.csv", HEADER, rows)
    result = doctor_data(load_config(None, [f"data.path={csv_path}"]), tmp_path / "report", progress=False,
                         labels=False, players=players)
    page = result.html.read_text()
    assert [f.kind for f in result.findings] == ["silent"] * 6 and page.count('class="finding"') == 6
    assert page.count("<audio") == page.count('class="thumb"') == min(players, 6)
    assert page.count("data:audio/wav;base64,") == min(players, 6)


def test_a_negative_player_count_is_one_line_before_any_work(tmp_path, capsys):
    csv_path = write_table(tmp_path / "meta.csv", HEADER, clean_rows(tmp_path, 8))
    out = tmp_path / "r"
    assert main(["doctor", "--no-labels", "--data", str(csv_path), "--out", str(out), "--players", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--players -1" in err and len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.skipif(CHROMIUM is None, reason="needs the system's Chromium (apt-get install chromium)")
def test_in_chromium_every_finding_plays_and_shows_its_spectrogram(planted, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    result, _ = planted
    moved = tmp_path / "elsewhere" / "doctor.html"  # alone, far from its data: everything must be inside it
    moved.parent.mkdir()
    shutil.copyfile(result.html, moved)
    requests, dialogs = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(moved.as_uri())
            page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)",
                                   timeout=30_000)
            kinds = page.eval_on_selector_all(".finding", "fs => fs.map(f => f.dataset.kind)")
            players = page.eval_on_selector_all(".finding", "fs => fs.map(f => [...f.querySelectorAll('audio')]"
                                                            ".map(a => [a.duration, a.error === null]))")
            widths = page.eval_on_selector_all("img", "is => is.map(i => [i.className, i.naturalWidth])")
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            page.screenshot(path=str(tmp_path / "doctor.png"), full_page=True)
        finally:
            browser.close()
    assert kinds == [f.kind for f in result.findings] and set(kinds) >= PLANTED
    by_kind = dict(zip(kinds, players))
    assert len(by_kind["leak"]) == len(by_kind["conflict"]) == len(by_kind["group_leak"]) == 2  # side by side
    assert all(pair == [1.0, True] for row in players for pair in row)  # 1-s clips: each decoded, whole
    assert sum(len(row) for row in players) == len([w for w in widths if w[0] == "thumb"]) > 5
    assert all(width > 0 for _, width in widths) and {w for c, w in widths if c == "thumb"} == {300}
    assert requests == [moved.as_uri()] and dialogs == [] and overflow == 0
    assert (tmp_path / "doctor.png").stat().st_size > 50_000


def test_a_file_gone_since_the_check_is_a_caption_not_a_crash(tmp_path, monkeypatch):
    from audioclf.errors import AudioDecodeError
    from audioclf.workflows import doctor_page

    rows = clean_rows(tmp_path)
    write_audio(tmp_path / "quiet.wav", 1e-4 * clip(300), 8000)
    csv_path = write_table(tmp_path / "meta.csv", HEADER, [*rows, ("quiet.wav", "dog", "train", "q")])

    def gone(path, *args):  # deleted or replaced between the doctor's decode and the page's
        raise AudioDecodeError(path, "file not found")

    monkeypatch.setattr(doctor_page, "audio_excerpt", gone)
    result = doctor_data(load_config(None, [f"data.path={csv_path}"]), tmp_path / "report", progress=False,
                         labels=False)
    page = result.html.read_text()
    assert [f.kind for f in result.findings] == ["silent"] and "<audio" not in page
    assert "quiet.wav (train, dog)<br>not playable: file not found" in page
