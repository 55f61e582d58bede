"""``doctor.html``: the doctor's findings as one self-contained page, beside ``doctor.md`` and rendered from the
same findings.

Everything the page shows is inside it as a ``data:`` URI (the class-count and duration pictures, each finding's
audio excerpt and spectrogram thumbnail), so it still works when moved or mailed and never reads a file outside
itself. To keep it bounded, only the first ``players`` findings (in the report's order: leaks and conflicts
first) get players: for each, the first :data:`EXCERPT_SECONDS` of at most :data:`FILES_PER_FINDING` of its
files (a duplicate pair side by side), as 16 kHz mono 16-bit WAV — about 210 KB of base64 per file, so the
default 30 findings stay under ~13 MB. Every name and label that came from the data is HTML-escaped: a file
called ``<img src=x onerror=...>.wav`` shows as text.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.audio import audio_excerpt, wav_bytes
from ..data.manifest import Item
from ..errors import AudioDecodeError, ConfigError
from ..features import FeatureConfig, FrontEnd
from ..runs.data_plots import spectrogram_thumbnail

__all__ = ["DEFAULT_PLAYERS", "EXCERPT_RATE", "EXCERPT_SECONDS", "check_players", "doctor_html"]

DEFAULT_PLAYERS = 30
EXCERPT_SECONDS, EXCERPT_RATE = 5.0, 16000
FILES_PER_FINDING = 2  # a duplicate pair, a group seen in two splits; one file for the other kinds
NO_AUDIO = ("undecodable", "empty")  # findings about files that did not decode: nothing to play
# The thumbnails' log-mel: the front-end's defaults (64 mels, 20 ms hop at 16 kHz), whatever the run's features,
# in absolute dB (no top_db relative to each clip's peak), drawn from -70 dB (black: a clip at -80 dBFS stays
# dark) to +30 dB (a full-scale tone's peak in these mels, measured), so levels compare across thumbnails.
THUMBNAIL_FEATURES = FeatureConfig(sample_rate=EXCERPT_RATE, top_db=None)
THUMBNAIL_DB = (-70.0, 30.0)

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 16px 24px; color: #222; }
h1 { font-size: 1.5em; overflow-wrap: anywhere; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 2px 10px; }
td.n, th.n { text-align: right; } tbody tr:nth-child(even) { background: #f6f6f6; }
img.plot { max-width: 100%; height: auto; }
.finding { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; margin: 10px 0; }
.finding .message { overflow-wrap: anywhere; margin: 0 0 6px; }
.kind { font-weight: 600; text-transform: uppercase; font-size: 0.8em; color: #fff; background: #a33;
        padding: 1px 6px; border-radius: 3px; margin-right: 6px; }
.finding[data-kind=undecodable] .kind, .finding[data-kind=empty] .kind, .finding[data-kind=silent] .kind,
.finding[data-kind=clipped] .kind, .finding[data-kind=dc_offset] .kind, .finding[data-kind=odd_sample_rate] .kind,
.finding[data-kind=mixed_channels] .kind, .finding[data-kind=duration_outlier] .kind { background: #b65f00; }
.finding[data-kind=label_issue] .kind { background: #2a5d9f; }
.finding[data-kind=exact_duplicate] .kind, .finding[data-kind=near_duplicate] .kind { background: #666; }
.files { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 300px; } figure img { display: block; width: 300px; height: 80px; }
figure audio { width: 300px; height: 36px; margin-top: 4px; }
figcaption { font-size: 0.8em; color: #444; overflow-wrap: anywhere; }
.fix { margin-top: 6px; overflow-wrap: anywhere; } .fix code { background: #f2f2f2; padding: 1px 4px; }
.note { color: #666; font-size: 0.9em; }
"""


def check_players(players: int) -> int:
    """The ``--players`` count, checked before any work: a whole number of findings, 0 for none."""
    if isinstance(players, bool) or not isinstance(players, int) or players < 0:
        raise ConfigError(f"--players {players!r}: expected a whole number >= 0 (findings with audio players)")
    return players


def _data_uri(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _thumbnail(front_end: FrontEnd, wave: np.ndarray) -> bytes:
    with torch.no_grad():
        log_mel = front_end(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))[0, 0].numpy()
    return spectrogram_thumbnail(log_mel, THUMBNAIL_DB)


def _shown_paths(finding, items: Mapping[str, Item]) -> list[str]:
    """The files a finding's players show: a group leak's first file in each of two splits (the leak itself),
    otherwise its first files."""
    if finding.kind != "group_leak":
        return finding.paths[:FILES_PER_FINDING]
    first_of_split: dict[str | None, str] = {}
    for path in finding.paths:
        first_of_split.setdefault(items[path].split if path in items else None, path)
    return list(first_of_split.values())[:FILES_PER_FINDING]


def _caption(path: str, items: Mapping[str, Item]) -> str:
    item = items.get(path)
    where = f" ({item.split or 'no split'}, {','.join(item.labels)})" if item is not None else ""
    return html.escape(f"{path}{where}")


def _player(path: str, items: Mapping[str, Item], front_end: FrontEnd, max_seconds: float | None) -> str:
    """One file's figure: its log-mel thumbnail, a player of its first seconds, its path, split and labels."""
    caption = _caption(path, items)
    try:
        wave = audio_excerpt(path, EXCERPT_SECONDS, EXCERPT_RATE, max_seconds)
    except AudioDecodeError as exc:
        return f'<figure><figcaption>{caption}<br>not playable: {html.escape(exc.reason)}</figcaption></figure>'
    seconds = len(wave) / EXCERPT_RATE
    # A full excerpt may have more after it; a shorter one is the whole file.
    span = f"the first {seconds:.1f} s" if len(wave) >= EXCERPT_SECONDS * EXCERPT_RATE else f"all {seconds:.1f} s"
    return (f'<figure><img class="thumb" alt="log-mel spectrogram of {span}" '
            f'src="{_data_uri("image/png", _thumbnail(front_end, wave))}">'
            f'<audio controls preload="auto" src="{_data_uri("audio/wav", wav_bytes(wave, EXCERPT_RATE))}"></audio>'
            f'<figcaption>{caption}<br>{span}</figcaption></figure>')


def _fix(text: str) -> str:
    if not text:
        return ""
    shown = f"<code>{html.escape(text)}</code>" if text.startswith("audioclf") else html.escape(text)
    return f'<div class="fix">fix: {shown}</div>'


def _table(header: Sequence[str], rows: Sequence[Sequence], numeric_from: int = 1) -> str:
    """An HTML table, every cell escaped; columns from ``numeric_from`` on are right-aligned numbers."""
    def cells(values, tag):
        return "".join(f'<{tag}{" class=n" if i >= numeric_from else ""}>{html.escape(str(v))}</{tag}>'
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def _with_code(text: str) -> str:
    """``text`` escaped, its `quoted` parts (markdown's inline code, as in the shared overview) as <code>."""
    pieces = html.escape(text).split("`")
    if len(pieces) % 2 == 0:  # an unpaired backtick: plain text
        return html.escape(text)
    return "".join(f"<code>{piece}</code>" if i % 2 else piece for i, piece in enumerate(pieces))


def _counts_table(counts: Mapping[str, int]) -> str:
    """Findings per kind, each kind a link to its first finding on the page."""
    rows = "".join(f'<tr><td><a href="#{kind}">{kind.replace("_", " ")}</a></td><td class=n>{n}</td></tr>'
                   for kind, n in counts.items())  # kinds are the doctor's own names: nothing to escape
    return f"<table><thead><tr><th>kind</th><th class=n>findings</th></tr></thead><tbody>{rows}</tbody></table>"


def _picture(path: Path, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="{_data_uri("image/png", path.read_bytes())}">'


def doctor_html(result, title: str, overview: str, summary, pictures: Mapping[str, Path], items: Mapping[str, Item],
                players: int = DEFAULT_PLAYERS, max_seconds: float | None = None) -> str:
    """The page (module docstring) of a :class:`~audioclf.workflows.doctor.DoctorResult`: ``title`` and
    ``overview`` as in doctor.md, ``summary`` the data's :class:`~audioclf.data.summary.DataSummary`,
    ``pictures`` the PNGs by name ("class_counts", "audio"), ``items`` the manifest's items by path (for the
    players' captions), ``players``: how many findings get audio players; ``max_seconds``: ``data.max_seconds``."""
    splits = summary.splits
    counts = result.counts()
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{_with_code(overview)}</p>",
             "<h2>Findings</h2>",
             _counts_table(counts) if counts else "<p>No findings.</p>",
             f"<p>Label issues: {html.escape(result.labels_note)}.</p>"]
    if result.dropped:
        parts += [f"<h2>Rows --fix drops ({len(result.dropped)})</h2>",
                  _table(["file", "why"], list(result.dropped.items()), numeric_from=2)]
    parts += ["<h2>Class counts per split</h2>",
              _table(["class", *splits, "total"],
                     [[name, *(summary.class_counts[s][name] for s in splits),
                       sum(summary.class_counts[s][name] for s in splits)] for name in summary.classes]),
              _picture(pictures["class_counts"], "class counts per split"),
              "<h2>Durations</h2>", _picture(pictures["audio"], "histogram of durations and native sample rates")]
    parts += _findings(result.findings, items, players, max_seconds)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _findings(findings: Sequence, items: Mapping[str, Item], players: int, max_seconds: float | None) -> list[str]:
    """One box per finding, in the report's order: its kind, message, players (the first ``players`` findings
    about decodable files) and fix; the first box of each kind is the target of the counts table's link."""
    if not findings:
        return []
    played = {id(f) for f in [f for f in findings if f.kind not in NO_AUDIO][:players]}  # identity: equal ones repeat
    parts = [f'<h2>Findings, worst first</h2><p class="note">{len(played)} of {len(findings)} findings have players '
             f"(the first {EXCERPT_SECONDS:g} s of each file, {EXCERPT_RATE // 1000} kHz mono) and log-mel "
             "thumbnails; --players sets how many.</p>"]
    front_end = FrontEnd(THUMBNAIL_FEATURES).eval()
    first_of_kind: dict[str, int] = {}
    for finding in findings:
        first_of_kind.setdefault(finding.kind, id(finding))
    for finding in findings:
        files = ""
        if id(finding) in played:
            files = "".join(_player(path, items, front_end, max_seconds) for path in _shown_paths(finding, items))
            files = f'<div class="files">{files}</div>'
        anchor = f' id="{html.escape(finding.kind)}"' if first_of_kind[finding.kind] == id(finding) else ""
        parts.append(f'<div class="finding"{anchor} data-kind="{html.escape(finding.kind)}"><p class="message">'
                     f'<span class="kind">{html.escape(finding.kind.replace("_", " "))}</span>'
                     f'{html.escape(finding.message)}</p>'
                     f"{files}{_fix(finding.fix)}</div>")
    return parts
