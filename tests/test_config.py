import pytest
import torch

from audioclf.config import apply_overrides, load_config, merge_dicts
from audioclf.errors import ConfigError


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.epochs=7", "train.lr=3e-4", "data.fractions=[0.7,0.15,0.15]",
                             "data.trim_silence=true", "model.name=mlp", "model.hidden=[32,16]", "seed=3"])
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.fractions == [0.7, 0.15, 0.15]
    assert cfg.data.trim_silence is True
    assert cfg.model == {"name": "mlp", "hidden": [32, 16]}
    assert cfg.seed == 3


def test_unknown_key_names_it_and_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'.*did you mean epochs"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"'dta'.*data"):
        load_config(None, ["dta.path=x"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"'train\.epochs': expected int"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"'data\.strict': expected bool"):
        load_config(None, ["data.strict=maybe"])


def test_override_needs_equals_sign():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["train.epochs"])


def test_a_folder_named_like_a_recipe_is_not_read_as_its_config(tmp_path, monkeypatch):
    # `audioclf demo --out demo` run twice: the second run found the folder `demo` before the bundled recipe
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert load_config("demo").model["name"] == "small_cnn"
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="no config file or recipe named 'mine'"):
        load_config("mine")
    (tmp_path / "mine.yaml").mkdir()
    with pytest.raises(ConfigError, match="mine.yaml: a folder, not a config file"):
        load_config("mine.yaml")


def test_bundled_recipe_by_name_and_unknown_recipe(tmp_path):
    cfg = load_config("demo", ["train.epochs=2"])
    assert cfg.model["name"] == "small_cnn" and cfg.train.epochs == 2
    with pytest.raises(ConfigError, match="no config file or recipe named 'dmeo'.*demo"):
        load_config("dmeo")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(str(bad))


@pytest.mark.parametrize("scheduler", ["plateau", "none", "cosine"])
def test_a_scheduler_change_does_not_inherit_the_recipes_scheduler_args(scheduler):
    """gtzan_tuned's exponential schedule carries gamma: 0.95; another scheduler must not be handed it (it refused
    the run: "scheduler 'plateau' has no argument 'gamma'")."""
    from audioclf.training.optim import build_scheduler

    cfg = load_config("gtzan_tuned", [f"train.scheduler={scheduler}"])
    assert cfg.train.scheduler_args == {}
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    build_scheduler(optimizer, name=scheduler, epochs=3, monitor="accuracy", **cfg.train.scheduler_args)
    assert load_config("gtzan_tuned", ["train.lr=0.01"]).train.scheduler_args == {"gamma": 0.95}  # same scheduler: kept
    given = load_config("gtzan_tuned", ["train.scheduler=plateau", "train.scheduler_args={factor: 0.5}"])
    assert given.train.scheduler_args == {"factor": 0.5}
    merged = merge_dicts(load_config("gtzan_tuned").to_dict(), {"train": {"scheduler": scheduler}})
    assert merged["train"]["scheduler_args"] == {}
