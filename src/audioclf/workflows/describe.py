"""``audioclf describe``: the data exploration the reference reports do before training, as one command.

For the splits ``audioclf train`` would use with the same ``data.*`` keys (import, group column, split method
and seed), it draws class counts, durations and sample rates, labels per clip (multi-label sets) and the
metadata columns the data has (devices, locations, speakers, sexes ...), and writes them as PNGs and
``data.md`` into one folder. Only file headers are read: nothing is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..console import markdown_table
from ..data.prepare import group_column, split_from_headers
from ..data.summary import DataSummary, column_values, described_columns, shared_values, summarize
from ..errors import ConfigError
from ..files import atomic_write_text
from ..runs.data_plots import MAX_DRAWN_VALUES, plot_audio, plot_class_counts, plot_columns, plot_labels_per_item
from ..training.inputs import EmbeddingInputs, ShardInputs

__all__ = ["Description", "describe_data"]

# Every file describe_data may write: one left from an earlier description (a columns.png for data that no
# longer has such columns) is removed, so the folder shows only this data.
PICTURES = ("class_counts.png", "audio.png", "labels_per_clip.png", "columns.png")


@dataclass
class Description:
    summary: DataSummary
    markdown: Path  # data.md
    pictures: list[Path]


def describe_data(cfg: Config, out: str | Path, columns: list[str] | tuple[str, ...] = (),
                  stage: str | None = None) -> Description:
    """Describe the audio data of ``cfg.data`` into folder ``out`` (PNGs, then ``data.md`` last, each written
    atomically). ``columns``: metadata columns to describe besides the group column and the known ones
    (:data:`~audioclf.data.summary.DESCRIBED_COLUMNS`). A recipe in stages: the data of stage ``stage``
    (default the first), whose ``data.*`` overrides may pick another subset."""
    cfg, stage = _stage_config(cfg, stage)
    if ShardInputs.describes(cfg) or EmbeddingInputs.describes(cfg):
        raise ConfigError(f"describe reads audio files with their labels; {cfg.data.path} holds "
                          f"{'audio shards' if ShardInputs.describes(cfg) else 'embeddings'}: describe the data "
                          "they were made from")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: a file is there; describe writes a folder (data.md and PNGs)")
    headers = split_from_headers(cfg)
    group = group_column(cfg.data)
    names = described_columns(headers.manifest, group, columns)
    summary = summarize(headers.manifest, headers.infos, names, group,
                        [entry.to_dict() for entry in headers.skipped])
    (out / "data.md").unlink(missing_ok=True)  # until the new one is written: no numbers of other pictures
    pictures = [plot_class_counts(summary, out / "class_counts.png"), plot_audio(summary, out / "audio.png")]
    if summary.labels_per_item is not None:
        pictures.append(plot_labels_per_item(summary, out / "labels_per_clip.png"))
    if summary.columns:
        pictures.append(plot_columns(summary, out / "columns.png"))
    for name in PICTURES:
        if out / name not in pictures:
            (out / name).unlink(missing_ok=True)
    text = data_markdown(summary, cfg, stage)
    return Description(summary, atomic_write_text(out / "data.md", text), pictures)


def _stage_config(cfg: Config, stage: str | None) -> tuple[Config, str | None]:
    """The config whose data is described: ``cfg``, or one stage's of a recipe in stages (default the first)."""
    if not cfg.stages:
        if stage is not None:
            raise ConfigError(f"--stage {stage}: this config has no stages")
        return cfg, None
    from .stages import plan_stages

    stages = plan_stages(cfg)
    chosen = stages[0] if stage is None else next((s for s in stages if s.name == stage), None)
    if chosen is None:
        raise ConfigError(f"--stage {stage}: no such stage; the recipe has {', '.join(s.name for s in stages)}")
    return chosen.config, chosen.name


def data_markdown(summary: DataSummary, cfg: Config, stage: str | None = None) -> str:
    """``data.md``: the numbers behind each picture, as tables."""
    splits = summary.splits
    total = sum(summary.items.values())
    split_text = f"data.split={cfg.data.split}" + (f", group column '{summary.group}'" if summary.group else "")
    lines = [
        f"# Data: {cfg.data.path}{f' (stage {stage})' if stage else ''}", "",
        f"{total} items ({' / '.join(f'{s} {summary.items[s]}' for s in splits)}), {len(summary.classes)} classes, "
        f"{summary.task.replace('_', '-')}. Splits as `audioclf train` makes them ({split_text}, seed {cfg.seed}).",
    ]
    if summary.skipped:
        lines.append(f"{len(summary.skipped)} unreadable file(s) skipped, listed at the end.")

    lines += ["", "## Class counts per split", "", "![class counts](class_counts.png)", ""]
    rows = [[name, *(summary.class_counts[s][name] for s in splits), sum(summary.class_counts[s][name] for s in splits)]
            for name in summary.classes]
    sums = [sum(summary.class_counts[s].values()) for s in splits]
    rows.append(["**total**", *sums, sum(sums)])
    lines.append(markdown_table(["class", *splits, "total"], rows))
    if summary.task == "multi_label":
        lines += ["", "A clip counts once for each of its labels."]

    lines += ["", "## Durations and sample rates", "", "![durations and sample rates](audio.png)", "",
              "File durations from the headers, before any silence trimming.", ""]
    rows = []
    for split in [*splits, "all"]:
        values = np.concatenate([summary.durations[s] for s in splits]) if split == "all" else \
            np.asarray(summary.durations[split], dtype=float)
        rows.append([split, len(values), *(f"{v:.2f}" for v in (values.min(), np.median(values), values.mean(),
                                                                 values.max())), f"{values.sum() / 3600:.2f}"])
    lines += [markdown_table(["split", "files", "min (s)", "median (s)", "mean (s)", "max (s)", "total (h)"], rows), ""]
    rates = sorted({rate for s in splits for rate in summary.sample_rates[s]})
    lines.append(markdown_table(["sample rate (Hz)", *splits],
                                [[str(rate), *(summary.sample_rates[s].get(rate, 0) for s in splits)] for rate in rates]))

    if summary.labels_per_item is not None:
        lines += ["", "## Label cardinality (labels per clip)", "", "![labels per clip](labels_per_clip.png)", ""]
        counts = sorted({n for s in splits for n in summary.labels_per_item[s]})
        rows = [[str(n), *(summary.labels_per_item[s].get(n, 0) for s in splits)] for n in counts]
        rows.append(["mean", *(_mean_labels(summary.labels_per_item[s]) for s in splits)])
        lines.append(markdown_table(["labels per clip", *splits], rows))

    if summary.columns:
        lines += ["", "## Metadata columns", "", "![metadata columns](columns.png)"]
        for name in summary.columns:
            lines += ["", *_column_section(summary, name)]

    if summary.skipped:
        lines += ["", "## Skipped files", "", *(f"- {e['path']}: {e['reason']}" for e in summary.skipped)]
    return "\n".join(lines) + "\n"


def _mean_labels(counts: dict[int, int]) -> str:
    n = sum(counts.values())
    return f"{sum(k * v for k, v in counts.items()) / n:.2f}" if n else "–"


def _column_section(summary: DataSummary, name: str) -> list[str]:
    splits = summary.splits
    values = column_values(summary, name)
    shared = shared_values(summary, name)
    kept = " (the split keeps its values apart)" if name == summary.group else ""
    lines = [f"### {name}{kept}", "",
             "distinct values: " + " / ".join(f"{s} {len([v for v in summary.columns[name][s] if v])}" for s in splits)
             + f"; in more than one split: {len(shared)}"
             + (f" ({', '.join(shared[:10])}{' ...' if len(shared) > 10 else ''})" if shared else ""), ""]
    if len(values) <= MAX_DRAWN_VALUES:
        rows = [[value or "(none)", *(summary.columns[name][s].get(value, 0) for s in splits)] for value in values]
        lines.append(markdown_table([name, *splits], rows))
    else:
        per_value = [sum(summary.columns[name][s].get(v, 0) for s in splits) for v in values]
        lines.append(f"{len(values)} values (too many to list): {min(per_value)} to {max(per_value)} items each, "
                     f"median {np.median(per_value):g}.")
    return lines


def console_summary(description: Description) -> list[str]:
    """A few lines for the terminal: what is in each split and where the pictures are."""
    summary = description.summary
    durations = np.concatenate([summary.durations[s] for s in summary.splits])
    rates = sorted({rate for s in summary.splits for rate in summary.sample_rates[s]})
    lines = [
        f"{sum(summary.items.values())} items: " + " / ".join(f"{s} {summary.items[s]}" for s in summary.splits)
        + f"; {len(summary.classes)} classes ({summary.task.replace('_', '-')})",
        f"durations {durations.min():.2f}–{durations.max():.2f} s (median {np.median(durations):.2f}); "
        f"sample rates {', '.join(f'{r} Hz' for r in rates)}",
    ]
    if summary.labels_per_item is not None:
        lines.append("labels per clip (mean): " + " / ".join(
            f"{s} {_mean_labels(summary.labels_per_item[s])}" for s in summary.splits))
    for name in summary.columns:
        distinct = " / ".join(f"{s} {len([v for v in summary.columns[name][s] if v])}" for s in summary.splits)
        lines.append(f"{name}: distinct values {distinct}; {len(shared_values(summary, name))} in more than one split")
    if summary.skipped:
        lines.append(f"{len(summary.skipped)} unreadable file(s) skipped (listed in data.md)")
    lines.append(f"wrote {description.markdown} and {', '.join(p.name for p in description.pictures)}")
    return lines
