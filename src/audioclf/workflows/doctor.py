"""``audioclf doctor``: what is wrong with the data before a number is trusted: bad audio, duplicates, leaks.

The items and splits are those ``audioclf train`` (and ``audioclf describe``) would use with the same ``data.*``
keys. Every readable file is decoded once (:func:`~audioclf.data.audit.clip_facts`); the checks are in the data
layer (:mod:`~audioclf.data.audit`, :mod:`~audioclf.data.duplicates`). Likely label errors in the training split
come from confident learning on out-of-fold probabilities (:mod:`~audioclf.training.label_issues`, cleanlab;
single-label or multi-label audio; ``labels=False`` skips it, as it prepares the data and fits k small models).
Writes ``doctor.md`` with the class counts and duration pictures of ``describe`` into a folder, with ``doctor.html``
beside it (the same findings with an audio player and a spectrogram thumbnail each: :mod:`.doctor_page`), and with
``fix`` a cleaned manifest without the later copy of each leaking or conflicting duplicate (the audio is never
touched).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..console import markdown_table, track
from ..data.audit import ClipFacts, Finding, audio_findings, clip_facts, skipped_finding
from ..data.duplicates import DuplicateSet, duplicate_findings, exact_duplicates, group_leaks, near_duplicates, rows_to_drop
from ..data.prepare import group_column, split_from_headers
from ..data.summary import summarize
from ..errors import AudioDecodeError, ConfigError, DataError
from ..files import atomic_write_text
from ..runs.data_plots import plot_audio, plot_class_counts
from ..training.inputs import inputs_for
from ..training.label_issues import DEFAULT_FOLDS, find_label_issues, find_multilabel_issues
from .describe import _stage_config
from .doctor_page import DEFAULT_PLAYERS, check_players, doctor_html

__all__ = ["DoctorResult", "check_fix_path", "doctor_data"]

log = logging.getLogger(__name__)

# The order findings are reported in: what makes a score wrong first, then what makes audio useless.
ORDER = ("leak", "conflict", "group_leak", "undecodable", "empty", "silent", "clipped", "dc_offset",
         "odd_sample_rate", "mixed_channels", "duration_outlier", "label_issue", "exact_duplicate", "near_duplicate")


@dataclass
class DoctorResult:
    findings: list[Finding]
    n_items: int
    markdown: Path | None = None
    html: Path | None = None  # doctor.html, beside doctor.md
    fixed: Path | None = None  # the cleaned manifest
    dropped: dict[str, str] = field(default_factory=dict)  # item path -> why
    sets: list[DuplicateSet] = field(default_factory=list)  # every exact and near duplicate set
    labels_note: str = ""  # how label issues were looked for, or why they were not

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ORDER, 0)
        for finding in self.findings:
            counts[finding.kind] += 1
        return {kind: n for kind, n in counts.items() if n}


def check_fix_path(fix: str | Path) -> Path:
    """The ``--fix`` target, checked before any work: a CSV path in an existing folder, not a folder."""
    fix = Path(fix)
    if fix.is_dir():
        raise ConfigError(f"--fix {fix}: a folder is there; give the path of the CSV to write")
    if not fix.parent.is_dir():
        raise ConfigError(f"--fix {fix}: folder {fix.parent} does not exist")
    if fix.suffix.lower() != ".csv":
        raise ConfigError(f"--fix {fix}: the cleaned manifest is a CSV; name it .csv")
    return fix


def doctor_data(cfg: Config, out: str | Path | None = None, fix: str | Path | None = None,
                stage: str | None = None, progress: bool = True, labels: bool = True,
                players: int | None = None) -> DoctorResult:
    """Check ``cfg.data`` (module docstring); ``out``: folder for ``doctor.md``, ``doctor.html`` and the
    pictures; ``fix``: path of the cleaned manifest CSV (written atomically); ``labels``: look for likely label
    errors too; ``players``: how many findings get an audio player and a thumbnail in ``doctor.html`` (None:
    :data:`~.doctor_page.DEFAULT_PLAYERS`)."""
    fix = check_fix_path(fix) if fix is not None else None
    players = check_players(DEFAULT_PLAYERS if players is None else players)
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: a file is there; doctor writes a folder (doctor.md, doctor.html and PNGs)")
    cfg, stage = _stage_config(cfg, stage)
    headers = split_from_headers(cfg)
    manifest = headers.manifest
    findings = [skipped_finding(entry.path, entry.reason) for entry in headers.skipped]
    facts: dict[str, ClipFacts] = {}
    for item in track(list(manifest), len(manifest), "decoding audio", progress):
        try:
            facts[item.id] = clip_facts(item.path, cfg.data.max_seconds)
        except AudioDecodeError as exc:  # the header read, the samples did not
            if cfg.data.strict:
                raise
            findings.append(skipped_finding(exc.path, exc.reason))
    by_path = {manifest_item.path: facts[manifest_item.id] for manifest_item in manifest if manifest_item.id in facts}
    findings += audio_findings(by_path)
    hashes = {key: f.pcm_hash for key, f in facts.items()}
    sets = exact_duplicates(list(manifest), hashes)
    sets += near_duplicates(list(manifest), {key: f.fingerprint for key, f in facts.items()}, hashes)
    fix_command = f"audioclf doctor --data {cfg.data.path} --fix cleaned.csv"
    findings += duplicate_findings(sets, fix_command) + group_leaks(manifest, group_column(cfg.data))
    note = "not looked for (--no-labels)"
    if labels:
        found, note = label_issue_findings(cfg)
        findings += found
    findings.sort(key=lambda finding: ORDER.index(finding.kind))
    result = DoctorResult(findings, len(manifest), sets=sets, labels_note=note)
    drops = rows_to_drop(sets)
    if fix is not None:
        manifest.with_items([item for item in manifest if item.id not in drops]).to_csv(fix)
        result.fixed = fix
    result.dropped = {item.path: drops[item.id] for item in manifest if item.id in drops}
    if out is not None:
        summary = summarize(manifest, headers.infos)
        pictures = {"class_counts": plot_class_counts(summary, out / "class_counts.png"),
                    "audio": plot_audio(summary, out / "audio.png")}
        title, overview = doctor_headline(result, cfg, summary, stage)
        result.markdown = atomic_write_text(out / "doctor.md", doctor_markdown(result, title, overview, summary))
        page = doctor_html(result, title, overview, summary, pictures, {item.path: item for item in manifest},
                           players, cfg.data.max_seconds)
        result.html = atomic_write_text(out / "doctor.html", page)
    return result


def label_issue_findings(cfg: Config) -> tuple[list[Finding], str]:
    """The training split's likely label errors, most doubtful first, and a note on how they were found (or why
    not: multi-label data, too few files per class or group; the rest of the doctor's checks still run)."""
    try:
        inputs = inputs_for(cfg)
        if inputs.kind != "audio":
            return [], f"not looked for: the inputs are {inputs.kind}, not audio"
        inputs.prepare()
        single = inputs.task == "single_label"
        issues = (find_label_issues if single else find_multilabel_issues)(
            inputs, min(DEFAULT_FOLDS, cfg.train.noisy_folds), cfg.seed)
    except (ConfigError, DataError) as exc:
        return [], f"not looked for: {str(exc).splitlines()[0]}"
    paths = {item.id: item.path for item in inputs.prepared.split("train")}
    found = [Finding("label_issue", f"{paths[issue.id]}: labelled '{issue.given}', the out-of-fold model says "
                                    f"'{issue.suggested}' (label quality {issue.quality:.3f})", [paths[issue.id]],
                     _label_fix(cfg, paths[issue.id], issue.suggested, single))
             for issue in issues.ranked()]
    return found, (f"confident learning (cleanlab) on out-of-fold probabilities of {issues.folds} folds by "
                   f"{issues.folds_by}: {len(found)} of {len(issues.ids)} training labels doubted")


def _label_fix(cfg: Config, path: str, suggested: str, single: bool) -> str:
    """What to do about a doubted label: single-label, the row to change (or train.noisy); multi-label, the tags
    by hand (train.noisy handles single-label data only)."""
    if not single:
        return f"listen; if the tags should be '{suggested}', {_relabel(cfg, path, suggested)} (a missing or an extra tag)"
    return f"listen; if it is '{suggested}', {_relabel(cfg, path, suggested)}; or train with train.noisy=drop|relabel"


def _relabel(cfg: Config, path: str, label: str) -> str:
    """Where a label is changed: the CSV's row of the file; a data set's folder says it in its metadata file or
    (a folder per class) by the file's folder, which only its importer knows."""
    if Path(cfg.data.path).suffix.lower() == ".csv":
        return f"in {cfg.data.path} set the labels of the row of {Path(path).name} to '{label}'"
    return f"relabel {path} as '{label}' (its metadata row, or move it into the class folder '{label}')"


def doctor_headline(result: DoctorResult, cfg: Config, summary, stage: str | None = None) -> tuple[str, str]:
    """The title and the one-sentence overview doctor.md and doctor.html share."""
    splits = summary.splits
    return (f"Data doctor: {cfg.data.path}{f' (stage {stage})' if stage else ''}",
            f"{result.n_items} items ({' / '.join(f'{s} {summary.items[s]}' for s in splits)}), "
            f"{len(summary.classes)} classes, split as `audioclf train` splits them (data.split={cfg.data.split}, "
            f"seed {cfg.seed}).")


def doctor_markdown(result: DoctorResult, title: str, overview: str, summary) -> str:
    splits = summary.splits
    lines = [f"# {title}", "", overview, "", "## Findings", ""]
    counts = result.counts()
    lines.append(markdown_table(["kind", "findings"], [[kind, n] for kind, n in counts.items()])
                 if counts else "No findings.")
    lines += ["", f"Label issues: {result.labels_note}."]
    if result.dropped:
        lines += ["", f"## Rows --fix drops ({len(result.dropped)})", "",
                  *(f"- `{path}`: {why}" for path, why in result.dropped.items())]
    lines += ["", "## Class counts per split", "", "![class counts](class_counts.png)", "",
              markdown_table(["class", *splits], [[name, *(summary.class_counts[s][name] for s in splits)]
                                                  for name in summary.classes]),
              "", "## Durations", "", "![durations and sample rates](audio.png)", ""]
    for kind in counts:
        lines += [f"## {kind.replace('_', ' ')}", ""]
        for finding in (f for f in result.findings if f.kind == kind):
            lines.append(f"- {finding.message}" + (f"  \n  fix: `{finding.fix}`" if finding.fix.startswith("audioclf")
                                                   else f"  \n  fix: {finding.fix}" if finding.fix else ""))
        lines.append("")
    return "\n".join(lines) + "\n"


def console_lines(result: DoctorResult) -> list[str]:
    """A few lines for the terminal: the counts per kind, the first findings, what was written."""
    counts = result.counts()
    lines = [f"{result.n_items} items checked: " + (", ".join(f"{n} {kind}" for kind, n in counts.items())
                                                    or "no findings")]
    lines.append(f"label issues: {result.labels_note}")
    lines += [f"  {f.kind}: {f.message}" for f in result.findings[:10]]
    if len(result.findings) > 10:
        lines.append(f"  ... {len(result.findings) - 10} more in doctor.md")
    if result.fixed is not None:
        lines.append(f"wrote {result.fixed}: {len(result.dropped)} row(s) dropped" +
                     "".join(f"\n  dropped {path}: {why}" for path, why in list(result.dropped.items())[:10]))
    if result.markdown is not None:
        lines.append(f"wrote {result.markdown}" + (f" and {result.html}" if result.html is not None else ""))
    return lines
