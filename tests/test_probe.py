"""The pretrained-embedding probe (models.probe, training.members): the three-member rule on hand-made cases, its
ONNX graph against scikit-learn, when ``train.probe`` adds it (only from the weights cache, never downloaded in
auto), and a zero-config run that fits, saves, lists and predicts with it, then loads without the cache.

No network and no real weights: a randomly initialised mn04 (the cheapest EfficientAT backbone) is saved into a
temporary cache and published as a checkpoint whose checksum matches it."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import torch

import audioclf
from audioclf.config import Config
from audioclf.deploy.predictor import Predictor
from audioclf.errors import ConfigError
from audioclf.models.efficientat import EfficientATMobileNet, WIDTHS
from audioclf.models.pretrained import CHECKPOINTS, Checkpoint
from audioclf.models.probe import ABSENT_LOGIT, ProbeClassifier, ProbeFrontEnd, ProbeMember, probe_onnx
from audioclf.training.members import MemberMix, choose_member_weight, choose_members, load_mix, resolve_probe
from test_members import STARVED, clips  # noqa: F401 (clips: a fixture)

SR = 16000
BACKBONE = "mn04"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty weights cache; ``put()`` saves a random-init mn04 there and publishes its MD5 as mn04's."""
    monkeypatch.setenv("AUDIOCLF_CACHE", str(tmp_path / "cache"))
    published = CHECKPOINTS.get(BACKBONE)
    path = tmp_path / "cache" / "weights" / "mn04_test.pt"

    def put() -> torch.nn.Module:
        torch.manual_seed(0)
        backbone = EfficientATMobileNet(WIDTHS[BACKBONE])
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": backbone.state_dict()}, path)
        CHECKPOINTS.remove(BACKBONE)
        CHECKPOINTS.add(BACKBONE, Checkpoint("http://127.0.0.1:9/mn04_test.pt", path.name, "the test",
                                             md5=hashlib.md5(path.read_bytes()).hexdigest()))
        return backbone

    yield put, path
    CHECKPOINTS.remove(BACKBONE)
    CHECKPOINTS.add(BACKBONE, published)


def _probs(rows: list[list[float]], counts: list[int]) -> np.ndarray:
    return np.concatenate([np.tile(row, (n, 1)) for row, n in zip(rows, counts)])


RIGHT, WRONG1, WRONG2 = [0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]
SURE_RIGHT, SURE1, SURE2 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


@pytest.mark.parametrize("case, weights, chosen", [
    # all three mildly right on most clips: the equal average of all three
    ("all", {"network": 1 / 3, "classical": 1 / 3, "probe": 1 / 3}, "ensemble"),
    # a confidently wrong probe drags the average of all down: dropped, the other two averaged
    ("pair", {"network": 0.5, "classical": 0.5, "probe": 0.0}, "network+classical"),
    # two confidently wrong members: every average falls short, the network alone
    ("one", {"network": 1.0, "classical": 0.0, "probe": 0.0}, "network"),
])
def test_three_members_average_all_else_drop_the_weakest_and_retry(case, weights, chosen):
    y = np.zeros(100, dtype=int)
    network = _probs([WRONG1, RIGHT], [5, 95])  # 0.95
    if case == "all":
        classical, probe = _probs([RIGHT, WRONG2], [90, 10]), _probs([RIGHT, WRONG1], [85, 15])
    elif case == "pair":
        classical, probe = _probs([RIGHT, WRONG2], [90, 10]), _probs([SURE2, SURE_RIGHT], [50, 50])
    else:
        classical, probe = _probs([SURE1, SURE_RIGHT], [50, 50]), _probs([SURE2, SURE_RIGHT], [50, 50])
    choice = choose_members(y, {"network": network, "classical": classical, "probe": probe})
    assert choice["chosen"] == chosen
    assert choice["weights"] == pytest.approx(weights)
    assert [step["members"] for step in choice["tried"]][0] == ["network", "classical", "probe"]
    assert len(choice["tried"]) == {"all": 1, "pair": 2, "one": 2}[case]
    assert choice["scores"]["network"] == 0.95 and "probe" in choice["why"]


def test_with_two_members_the_general_rule_is_the_old_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = rng.integers(0, 3, 40)
        net, cls = rng.dirichlet(np.ones(3), 40), rng.dirichlet(np.ones(3), 40)
        old, new = choose_member_weight(y, net, cls), choose_members(y, {"network": net, "classical": cls})
        assert (old["chosen"], old["weight"]) == (new["chosen"], new["weights"]["classical"])


def test_the_probe_graph_is_the_backbone_and_the_fitted_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(0)
    backbone = EfficientATMobileNet(WIDTHS[BACKBONE]).eval()
    front_end = ProbeFrontEnd(BACKBONE, SR)
    rng = np.random.default_rng(0)
    windows = rng.normal(scale=0.1, size=(24, SR)).astype(np.float32)
    y = np.repeat([0, 2, 3], 8)  # class 1 of 4 never seen
    windows[y == 2] *= 5
    features = front_end(windows)
    assert features.shape[:3] == (24, 1, 128)  # resampled to 32 kHz: 100 frames a second at hop 320
    assert features.shape[3] == pytest.approx(100, abs=1)
    probe = ProbeClassifier(backbone, np.zeros(1), np.ones(1), np.zeros((1, 1)), np.zeros(1))
    with torch.no_grad():
        embeddings = probe.embedding(features).numpy()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(embeddings, y)
    weight, bias = np.zeros((4, embeddings.shape[1])), np.full(4, ABSENT_LOGIT)
    weight[[0, 2, 3]], bias[[0, 2, 3]] = pipeline[-1].coef_, pipeline[-1].intercept_
    classifier = ProbeClassifier(backbone, pipeline[0].mean_, pipeline[0].scale_, weight, bias)
    member = ProbeMember(probe_onnx(classifier, features[:1]), BACKBONE, SR, 4)
    probs = member.probabilities(windows)
    assert probs.shape == (24, 4) and np.all(probs[:, 1] == 0)
    assert np.allclose(probs[:, [0, 2, 3]], pipeline.predict_proba(embeddings), atol=1e-4)


def _auto() -> Config:
    return Config()


def test_auto_takes_the_probe_only_from_the_cache_and_skips_a_corrupt_file(cache, caplog):
    put, path = cache
    assert resolve_probe(_auto(), "classical") == "none"  # nothing cached: nothing downloaded, no probe
    assert not path.parent.exists() or not any(path.parent.iterdir())
    put()
    assert resolve_probe(_auto(), "classical") == BACKBONE
    assert resolve_probe(_auto(), "none") == "none"  # no ensemble, no probe
    path.write_bytes(path.read_bytes()[:-100] + b"x" * 100)
    with caplog.at_level(logging.WARNING):
        assert resolve_probe(_auto(), "classical") == "none"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "not the published checkpoint" in warnings[0]


def test_a_probe_asked_for_but_not_cached_is_one_line_naming_the_file_and_the_download(clips, cache, tmp_path):
    with pytest.raises(ConfigError) as error:
        audioclf.train(clips, out=tmp_path / "run", quiet=True, train={"probe": "mn10"})
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "cache" / "weights" / CHECKPOINTS.get("mn10").filename) in message
    assert "train.probe_download=true" in message and CHECKPOINTS.get("mn10").url in message
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"train.probe='mn99': expected auto \| none \| mn04"):
        audioclf.train(clips, out=tmp_path / "run", quiet=True, train={"probe": "mn99"})
    with pytest.raises(ConfigError, match=r"train.probe=mn04: the probe is an ensemble member, and "
                                          r"train.ensemble=none"):
        cfg = Config()
        cfg.train.probe, cfg.train.ensemble = BACKBONE, "none"
        from audioclf.training.members import resolve_ensemble
        resolve_ensemble(cfg, cfg, "audio", "single_label")


def test_zero_config_without_weights_trains_no_probe(clips, cache, tmp_path):
    run = audioclf.train(clips, out=tmp_path / "run", quiet=True, **STARVED)
    assert [m["name"] for m in run.summary["members"]["members"]] == ["network", "classical"]
    assert not (run.root / "members" / "probe.onnx").exists()
    assert "probe: none" in run.root.joinpath("config.yaml").read_text()


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_zero_config_with_cached_weights_fits_keeps_and_predicts_with_the_probe(clips, cache, tmp_path, caplog,
                                                                              capsys, monkeypatch):
    put, _ = cache
    put()
    run = audioclf.train(clips, out=tmp_path / "run", **STARVED)
    err = " ".join(capsys.readouterr().err.split())
    assert "+ a linear probe on mn04" in err and "probe (mn04)" in err
    members = run.summary["members"]
    assert [m["name"] for m in members["members"]] == ["network", "classical", "probe"]
    assert members["probe"]["backbone"] == BACKBONE and members["members"][2]["embedding_dim"] == 384
    assert set(members["scores"]) == {"network", "classical", "probe", "average"}
    assert members["weights"]["probe"] > 0, members["why"]  # the random backbone's features still separate these
    assert sum(members["weights"].values()) == pytest.approx(1.0)
    assert (run.root / "members" / "probe.onnx").stat().st_size > 100_000
    report = (run.root / "report.md").read_text()
    assert "probe member (mn04 embeddings + logistic regression)" in report
    assert run.root.joinpath("config.yaml").read_text().count(f"probe: {BACKBONE}") == 1
    # predict answers with the stored mix: the weighted sum of each member's probabilities
    files = sorted(clips.rglob("*.wav"))[::10]
    chosen = np.array([p.probs for p in run.predict(files, device="cpu")])
    mix = load_mix(run.root)
    assert mix.probe is not None and mix.probe_weight == members["weights"]["probe"]
    predictor = Predictor.from_run(run.root, device="cpu")
    parts = {}
    for name, part in (("network", MemberMix(None, 0.0, "n")), ("classical", MemberMix(mix.classical, 1.0, "c")),
                       ("probe", MemberMix(None, 0.0, "p", mix.probe, 1.0))):
        predictor.mix = part
        parts[name] = np.array([p.probs for p in predictor.predict(files)])
    expected = sum(members["weights"][name] * parts[name] for name in parts)
    assert np.allclose(chosen, expected, atol=1e-6)
    assert not np.allclose(parts["probe"], parts["classical"], atol=0.05)
    evaluated = run.evaluate()
    assert evaluated["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    with caplog.at_level(logging.WARNING):
        run.export()
    assert "holds the network alone, without the classical member" in caplog.text
    assert "and the probe member (members/probe.onnx" in caplog.text
    # the run folder is self-contained: no weights cache needed to load and predict
    monkeypatch.setenv("AUDIOCLF_CACHE", str(tmp_path / "empty"))
    again = np.array([p.probs for p in Predictor.from_run(run.root, device="cpu").predict(files)])
    assert np.allclose(again, chosen, atol=1e-6)


@pytest.mark.parametrize("weights, chosen, kept", [
    ({"network": 1 / 3, "classical": 1 / 3, "probe": 1 / 3}, "ensemble", "the equal average of network, classical, probe"),
    ({"network": 0.5, "classical": 0.0, "probe": 0.5}, "network+probe", "the equal average of network, probe"),
    ({"network": 0.5, "probe": 0.5}, "ensemble", "the equal average of network, probe"),  # classical not fitted
    ({"network": 0.0, "classical": 0.0, "probe": 1.0}, "probe", "the probe member alone"),
    ({"network": 0.5, "classical": 0.5}, "ensemble", "the average of the network and the classical member"),
])
def test_the_report_lists_every_member_and_names_the_kept_mix(weights, chosen, kept):
    from audioclf.runs.report import _members_section

    per_split = {name: {"val": 0.5, "test": 0.25} for name in weights}
    text = "\n".join(_members_section({"chosen": chosen, "weights": weights, "why": "", "per_split": per_split,
                                       "probe": {"backbone": "mn10"}}))
    assert f"Kept: {kept}." in text
    assert ("probe member (mn10 embeddings + logistic regression) | 0.5" in text) == ("probe" in weights)
