"""Multi-stage training from one recipe: each stage's overrides on top of the base config, each stage
initialised from the previous one's best weights (MISSION S1 §6.4: pre-train on noisy, fine-tune on
curated with another freezing policy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config, apply_overrides, config_from_dict
from .errors import ConfigError


def _flatten(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict) and prefix.split(".")[-1] not in ("options", "scheduler_args"):
        return [item for key, sub in value.items() for item in _flatten(f"{prefix}.{key}" if prefix else key, sub)]
    import yaml

    return [f"{prefix}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]


def stage_configs(cfg: Config) -> list[tuple[str, Config]]:
    """(name, config) per stage; stage k > 0 gets ``init_from`` = stage k-1's run directory."""
    root = Path(cfg.out or "runs/stages")
    base = cfg.to_dict()
    base["stages"] = []
    out: list[tuple[str, Config]] = []
    previous: Path | None = None
    for index, stage in enumerate(cfg.stages):
        if not isinstance(stage, dict):
            raise ConfigError(f"stages[{index}]: expected a mapping of overrides, got {stage!r}")
        stage = dict(stage)
        name = str(stage.pop("name", f"stage{index + 1}"))
        if "stages" in stage or "cv" in stage:
            raise ConfigError(f"stages[{index}] ({name}): a stage cannot set 'stages' or 'cv'")
        overrides = _flatten("", stage) + [f"out={root / name}"]
        if previous is not None and "init_from" not in stage:
            overrides.append(f"init_from={previous}")
        try:
            stage_cfg = config_from_dict(apply_overrides(base, overrides))
        except ConfigError as exc:
            raise ConfigError(f"stages[{index}] ({name}): {exc}") from None
        out.append((name, stage_cfg))
        previous = root / name
    return out


def train_stages(cfg: Config, reporter=None) -> list[Path]:
    """Run every stage in order; returns their run directories."""
    from .experiment import train

    runs = []
    for name, stage_cfg in stage_configs(cfg):
        if reporter:
            reporter.console.print(f"[bold]stage {name}[/bold] -> {stage_cfg.out}")
        runs.append(train(stage_cfg, reporter=reporter))
    return runs
