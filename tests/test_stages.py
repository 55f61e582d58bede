import pytest

from audioclf.config import load_config
from audioclf.errors import ConfigError
from audioclf.stages import stage_configs


def test_stage_overrides_and_chained_init(tmp_path):
    cfg = load_config(None, [f"out={tmp_path}", "train.lr=0.001", "data.path=noisy.csv",
                             "stages=[{name: noisy, train: {epochs: 3}}, "
                             "{name: curated, data: {path: curated.csv, options: {}}, train: {lr: 0.0003}}]"])
    (first_name, first), (second_name, second) = stage_configs(cfg)
    assert (first_name, second_name) == ("noisy", "curated")
    assert first.train.epochs == 3 and first.train.lr == 0.001 and first.init_from is None
    assert first.out == str(tmp_path / "noisy")
    assert second.data.path == "curated.csv" and second.train.lr == 0.0003
    assert second.init_from == str(tmp_path / "noisy") and second.stages == []


def test_bad_stage_key_names_the_stage(tmp_path):
    cfg = load_config(None, [f"out={tmp_path}", "stages=[{name: a, train: {epoch: 3}}]"])
    with pytest.raises(ConfigError, match=r"stages\[0\] \(a\).*train\.epoch"):
        stage_configs(cfg)
