import pytest

from audioclf.config import load_config
from audioclf.errors import ConfigError
from audioclf.workflows.stages import plan_stages


def test_stage_overrides_and_references(tmp_path):
    cfg = load_config(None, [f"out={tmp_path}", "train.lr=0.001", "data.path=noisy.csv",
                             "stages=[{name: noisy, train: {epochs: 3}}, "
                             "{name: curated, data: {path: curated.csv, options: {}}, train: {lr: 0.0003}, "
                             "init_from: '@noisy', quantize: 50, export: true}, "
                             "{name: student, kind: distill, teachers: [curated], T: 3, alpha: 0.2}]"])
    noisy, curated, student = plan_stages(cfg)
    assert (noisy.name, curated.name, student.name) == ("noisy", "curated", "student")
    assert noisy.config.train.epochs == 3 and noisy.config.train.lr == 0.001 and noisy.config.init_from is None
    assert noisy.config.out == str(tmp_path / "noisy")
    assert curated.config.data.path == "curated.csv" and curated.config.train.lr == 0.0003
    assert curated.config.init_from == str(tmp_path / "noisy") and curated.config.stages == []
    assert curated.quantize == 50 and curated.export is True
    assert student.kind == "distill" and student.teachers == ["curated"] and (student.T, student.alpha) == (3.0, 0.2)


@pytest.mark.parametrize("stages, message", [
    ("[{name: a, train: {epoch: 3}}]", r"stages\[0\] \(a\).*train\.epoch"),
    ("[{name: a, init_from: '@b'}]", r"init_from=@b names no earlier stage"),
    ("[{name: a, kind: distill}]", "needs teachers"),
    ("[{name: a, kind: distill, teachers: [z]}]", "teacher 'z' is not an earlier stage"),
    ("[{name: a, kind: prune}]", "kind='prune'"),
])
def test_bad_stages_name_the_stage(tmp_path, stages, message):
    cfg = load_config(None, [f"out={tmp_path}", f"stages={stages}"])
    with pytest.raises(ConfigError, match=message):
        plan_stages(cfg)
