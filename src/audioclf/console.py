"""Terminal output: progress bars, per-epoch lines and result tables (rich).

On the ground floor with the config and the metrics: every layer may show progress (:func:`track`) without
importing anything above it; the tables read the plain dicts that runs, evaluations and ensembles return.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from .metrics import ordered_metric_names, shown_metric_names

T = TypeVar("T")

# Characters that are not text on a terminal: controls (ESC starts escape sequences that recolour, move the
# cursor or retitle the window), format characters (U+202E reverses what follows, zero-width ones hide),
# unpaired surrogates (undecodable file names) and line/paragraph separators.
_HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def printable(text: str) -> str:
    """``text`` with every character of :data:`_HIDDEN` but newline and tab written as ``repr`` writes it
    (``\\x1b``, ``\\u202e``): labels and file names come from data, and must not drive the terminal."""
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) not in _HIDDEN else repr(ch)[1:-1] for ch in text)


class Console(RichConsole):
    """rich's Console, printing every text through :func:`printable` (once, here, whatever prints: messages,
    tables, errors); rich's own colours and cursor moves are styles and control segments, kept as they are."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:  # rich >= 13: where segments become output
        return super()._render_buffer(s if s.control else Segment(printable(s.text), s.style) for s in buffer)


def stderr_console() -> Console:
    """Where progress, messages and errors go (the CLI's ``err`` and every :class:`ConsoleReporter` by
    default): stderr, so stdout stays the results; soft_wrap keeps paths and messages on one greppable line
    whatever the width; markup off prints a path or message with [brackets] as it is."""
    return Console(stderr=True, soft_wrap=True, markup=False)


class PrintableFormatter(logging.Formatter):
    """Log records (warnings name labels and files) through :func:`printable`, as the consoles print."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def track(iterable: Iterable[T], total: int, description: str, enabled: bool = True,
          min_total: int = 50) -> Iterator[T]:
    """Yield from ``iterable`` with a transient progress bar on stderr (off when not ``enabled``, for fewer
    than ``min_total`` items, or when stderr is not a terminal)."""
    if not enabled or total < min_total:
        yield from iterable
        return
    bar = ConsoleReporter().bar(description, total)
    try:
        for value in iterable:
            yield value
            bar.advance(1)
    finally:
        bar.close()


class _Bar:
    def __init__(self, progress: Progress, task: int):
        self._progress, self._task = progress, task

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        self._progress.stop()


class NoBar:
    """A progress bar that shows nothing: for reporters that wrap another one, or none."""

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class PassOn:
    """A reporter that passes everything on to ``inner`` (or shows nothing, without one); wrappers that also
    watch the epochs (pruning, tracking) extend :meth:`epoch`."""

    def __init__(self, inner=None):
        self.inner = inner

    def bar(self, description: str, total: int):
        return self.inner.bar(description, total) if self.inner else NoBar()

    def message(self, text: str) -> None:
        if self.inner:
            self.inner.message(text)

    def epoch(self, record: dict[str, Any], monitor: str, improved: bool) -> None:
        if self.inner:
            self.inner.epoch(record, monitor, improved)


class ConsoleReporter:
    """Progress of a run on a rich console (the trainer's ``Reporter``): what ``audioclf train`` shows, and
    ``audioclf.train()`` unless told to be quiet; quiet=True prints epochs only (no bars)."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or stderr_console()
        self.quiet = quiet

    def bar(self, description: str, total: int) -> _Bar:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=self.console, transient=True,
                            disable=self.quiet or not self.console.is_terminal)
        progress.start()
        return _Bar(progress, progress.add_task(description, total=total))

    def epoch(self, record: dict[str, Any], monitor: str, improved: bool) -> None:
        shown = [f"epoch {record['epoch']:>3}", f"train loss {record.get('train/loss', float('nan')):.4f}",
                 f"val loss {record.get('val/loss', float('nan')):.4f}",
                 f"val {monitor} {record.get(f'val/{monitor}', float('nan')):.4f}", f"{record['seconds']:.1f}s"]
        self.console.print(Text.assemble("  ".join(shown), ("  * best", "green") if improved else ""), markup=False)

    def message(self, text: str) -> None:
        self.console.print(text, style="bold", markup=False, highlight=False)


def results_table(metrics: dict[str, dict[str, float]], title: str = "Results") -> Table:
    """One row per metric, one column per split (train, val, test), or per other named column."""
    splits = [s for s in ("train", "val", "test") if metrics.get(s)] or [s for s in metrics if metrics[s]]
    table = Table(title=title)
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for name in shown_metric_names({s: metrics[s] for s in splits}):
        table.add_row(name, *[format_number(metrics[s].get(name)) for s in splits])
    return table


def per_group_table(values: dict[str, float], title: str = "Per group (test)") -> Table | None:
    """Rows group=value, columns metrics, from flat ``per_group/<group>/<value>/<metric>`` keys."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "per_group":
            rows.setdefault(f"{parts[1]}={parts[2]}", {})[parts[3]] = value
    if not rows:
        return None
    metrics = sorted({m for row in rows.values() for m in row})
    table = Table(title=title)
    table.add_column("group")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for name in sorted(rows):
        table.add_row(name, *[format_number(rows[name].get(m)) for m in metrics])
    return table


def format_number(value: Any) -> str:
    """A table cell: floats to 4 decimals, and small non-zero ones (a drop of 4e-05) in 2 significant digits,
    never a misleading 0.0000; integers with thousands separators; nothing as "–"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if value == 0 or abs(value) >= 0.001 else f"{value:.2g}"



def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (report.md, and the console's tables when the output is not a terminal)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    # A "|" inside a cell (a list of speakers, a file name) would end the cell: escaped, Markdown shows it.
    lines += ["| " + " | ".join(format_number(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def show(console: Console, table: Table) -> None:
    """A table on ``console``: drawn for a terminal; as plain Markdown when piped or redirected, so a log or
    another program gets one line per row that never wraps."""
    if console.is_terminal:
        console.print(table)
        return
    header = [str(column.header) for column in table.columns]
    rows = [list(cells) for cells in zip(*(column._cells for column in table.columns))]
    title = f"{table.title}\n\n" if table.title else ""
    console.print(title + markdown_table(header, rows), markup=False, highlight=False, soft_wrap=True)


def cv_table(cv_summary: dict[str, Any]) -> Table:
    """Test metrics over folds: mean ± std and each fold's value."""
    folds = cv_summary["folds"]
    table = Table(title=f"Cross-validation ({len(folds)} folds, test split of each)")
    table.add_column("metric")
    table.add_column("mean ± std", justify="right")
    for fold in folds:
        table.add_column(f"fold {fold}", justify="right")
    stats = cv_summary["test"]
    by_fold = {i: {n: row["folds"][i] for n, row in stats.items() if i < len(row["folds"])} for i in range(len(folds))}
    for name in shown_metric_names(by_fold):
        row = stats[name]
        table.add_row(name, f"{row['mean']:.4f} ± {row['std']:.4f}", *[format_number(v) for v in row["folds"]])
    return table


def ensemble_table(result: dict[str, Any]) -> Table:
    """Rows = metrics; columns = each member, then the ensemble."""
    members = list(result["members"])
    table = Table(title=f"Ensemble of {len(members)} runs on {result['n_items']} items")
    table.add_column("metric")
    for i, _ in enumerate(members, start=1):
        table.add_column(f"run {i}", justify="right")
    table.add_column("ensemble", justify="right", style="bold")
    for name in ordered_metric_names(result["ensemble"]):
        table.add_row(name, *[format_number(result["members"][m].get(name)) for m in members], format_number(result["ensemble"][name]))
    table.caption = "  ".join(f"run {i}: {m}" for i, m in enumerate(members, start=1))
    return table


def quantization_table(result: dict[str, Any]) -> Table:
    """fp32 vs int8: metrics, their drop, file sizes."""
    table = Table(title=f"INT8 quantization ({result['method']}, {result['n_calibration']} calibration clips)")
    for column in ("", "fp32", "int8", "drop"):
        table.add_column(column, justify="right" if column else "left")
    fp32, int8 = result["fp32"]["metrics"], result["int8"]["metrics"]
    for name in ordered_metric_names(fp32):
        table.add_row(name, format_number(fp32.get(name)), format_number(int8.get(name)), format_number(result["drop"].get(name)))
    table.add_row("bytes", f"{result['fp32']['bytes']:,}", f"{result['int8']['bytes']:,}",
                  f"x{result['size_ratio']:.2f}")
    return table


def gate_line(gate: dict[str, Any]) -> str:
    """The INT8 gate's verdict: the drop on the validation split on this machine, against the limit."""
    verdict = "within" if gate["passed"] else "forced past" if gate["forced"] else "over"
    return (f"{gate['split']} {gate['metric']}: fp32 {gate['fp32']:.4f}, int8 {gate['int8']:.4f}, drop "
            f"{gate['drop_points']:.2f} ({verdict} the max drop {gate['max_drop']})")
