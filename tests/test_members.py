"""The validated ensemble (training.members): the classical member's features against librosa, its ONNX file
against scikit-learn, the choice rule on hand-made cases, and a zero-config run end to end where the network is
starved so the classical member must win, predicted, evaluated and exported alike."""

from __future__ import annotations

import json
import logging

import librosa
import numpy as np
import pytest
import torch

import audioclf
from audioclf.errors import ConfigError
from audioclf.models.classical import FRAME_FEATURES, ClassicalMember, UtteranceStatistics, frame_sizes
from audioclf.deploy.predictor import Predictor
from audioclf.training.members import MemberMix, _to_onnx, choose_member_weight, load_mix
from separable import separable_clips

SR = 16000


def _signal(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    chirp = np.sin(2 * np.pi * (300 + 1500 * t) * t)
    noise = np.random.default_rng(seed).normal(scale=0.05, size=t.size)
    return (0.5 * chirp * (0.3 + t) + noise).astype(np.float32)


def test_utterance_statistics_are_librosa_s_numbers():
    y = _signal()
    n_fft, hop = frame_sizes(SR)
    assert (n_fft, hop) == (512, 160)
    out = UtteranceStatistics(SR)(torch.from_numpy(y)[None])[0].numpy()
    assert out.shape == (2 * len(FRAME_FEATURES),)
    at = FRAME_FEATURES.index
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, n_fft=n_fft, hop_length=hop, n_mels=40)
    assert np.allclose(out[:20], mfcc.mean(axis=1), atol=1e-3 * np.abs(mfcc).max())
    assert np.allclose(out[len(FRAME_FEATURES):len(FRAME_FEATURES) + 20], mfcc.std(axis=1), rtol=1e-3, atol=1e-2)
    S = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    nyquist = SR / 2
    for name, reference in (("centroid", librosa.feature.spectral_centroid(S=S, sr=SR) / nyquist),
                            ("bandwidth", librosa.feature.spectral_bandwidth(S=S, sr=SR) / nyquist),
                            ("rolloff", librosa.feature.spectral_rolloff(S=S, sr=SR) / nyquist),
                            ("flatness", librosa.feature.spectral_flatness(S=S))):
        assert out[at(name)] == pytest.approx(float(reference.mean()), rel=1e-4), name


def test_zero_crossings_and_energy_follow_the_signal():
    t = np.arange(SR) / SR
    statistics = UtteranceStatistics(SR)
    tone = torch.from_numpy(np.sin(2 * np.pi * 1000 * t + 0.1).astype(np.float32))[None]
    at = FRAME_FEATURES.index
    out = statistics(tone)[0]
    assert float(out[at("zcr")]) == pytest.approx(2 * 1000 / SR, rel=0.03)  # two sign changes per period
    assert float(out[at("centroid")]) == pytest.approx(1000 / (SR / 2), rel=0.05)
    quieter = statistics(tone * 0.1)[0]
    assert float(out[at("log_energy")] - quieter[at("log_energy")]) == pytest.approx(20.0, abs=0.01)


def test_the_onnx_member_is_the_fitted_pipeline_with_every_class_in_the_run_s_order():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    y = rng.choice([0, 2, 3], size=240)  # class 1 of 4 never seen in training
    x = rng.normal(size=(240, 94)).astype(np.float32)
    x[:, 0] += y
    calibrated = CalibratedClassifierCV(SVC(C=1.0, gamma="scale"), method="sigmoid", cv=3, ensemble=False)
    pipeline = make_pipeline(StandardScaler(), calibrated).fit(x, y)
    member = ClassicalMember(_to_onnx(pipeline, calibrated, x[:1], [0, 2, 3], 4), SR, 4)
    probs = member.probabilities_of(x[:50])
    assert probs.shape == (50, 4) and np.all(probs[:, 1] == 0)
    assert np.allclose(probs[:, [0, 2, 3]], pipeline.predict_proba(x[:50]), atol=1e-5)


def _one_hot_probs(predicted, n_classes=3, confidence=0.8):
    probs = np.full((len(predicted), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


@pytest.mark.parametrize("net_right, net_confidence, cls_right, cls_confidence, expected", [
    (90, 0.6, 90, 0.6, ("ensemble", 0.5)),   # equal members: the plain average
    (88, 0.6, 86, 0.6, ("ensemble", 0.5)),   # within one standard error (3.2 points) of the better one
    (95, 0.5, 40, 0.9, ("network", 0.0)),    # a confidently wrong classical member drags the average down
    (40, 0.9, 95, 0.5, ("classical", 1.0)),  # and the other way round
])
def test_the_average_is_kept_unless_validation_says_it_falls_short(net_right, net_confidence, cls_right,
                                                                   cls_confidence, expected):
    y = np.zeros(100, dtype=int)
    net = _one_hot_probs(np.where(np.arange(100) < net_right, 0, 1), confidence=net_confidence)
    cls = _one_hot_probs(np.where(np.arange(100) >= 100 - cls_right, 0, 2), confidence=cls_confidence)
    choice = choose_member_weight(y, net, cls)
    assert (choice["chosen"], choice["weight"]) == expected
    assert choice["scores"]["network"] == net_right / 100 and choice["scores"]["classical"] == cls_right / 100


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four classes that clip statistics separate at once (20 one-second clips each: tests/separable.py)."""
    root = tmp_path_factory.mktemp("members") / "clips"
    separable_clips(root)
    return root


# A network that cannot learn in one epoch at this rate: the classical member must carry the run.
STARVED = {"train": {"epochs": 1, "batch_size": 16, "lr": 1e-7}, "augment": {"mixup_alpha": 0.0},
           "features": {"n_mels": 32, "n_fft": 512, "hop_length": 320}}


def test_zero_config_keeps_the_classical_member_when_it_must_win_and_every_path_uses_the_choice(clips, tmp_path,
                                                                                              caplog, capsys):
    run = audioclf.train(clips, out=tmp_path / "run", **STARVED)
    err = " ".join(capsys.readouterr().err.split())
    assert "ensemble + a classical member" in err and "members (val accuracy): network" in err
    members = run.summary["members"]
    assert members["chosen"] in ("classical", "ensemble"), members["why"]
    scores = members["scores"]
    assert scores["classical"] > scores["network"] + 0.3  # the starved network is near chance (1/4)
    assert run.metrics["val"]["accuracy"] >= scores["classical"] - members["tolerance"] - 1e-9
    assert (run.root / "members" / "classical.onnx").stat().st_size > 1000
    assert "classical member" in (run.root / "report.md").read_text()
    # predict, evaluate and the loaded run answer with the chosen predictor: the summary's test score again.
    evaluated = run.evaluate()
    assert evaluated["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    files = sorted(clips.rglob("*.wav"))
    mix = load_mix(run.root)
    assert mix.weight == members["weights"]["classical"] > 0
    chosen = np.array([p.probs for p in run.predict(files[:6], device="cpu")])
    predictor = Predictor.from_run(run.root, device="cpu")
    assert np.allclose(chosen, [p.probs for p in predictor.predict(files[:6])])
    parts = {}
    for name, part in (("network", MemberMix(None, 0.0, "network")), ("classical", MemberMix(mix.classical, 1.0, "c"))):
        predictor.mix = part
        parts[name] = np.array([p.probs for p in predictor.predict(files[:6])])
    assert np.allclose(chosen, (1 - mix.weight) * parts["network"] + mix.weight * parts["classical"], atol=1e-6)
    assert not np.allclose(parts["network"], parts["classical"], atol=0.05)
    # Test-time augmentation from the run as from the CLI: every copy scored by the kept predictor.
    shifted = [p.probs for p in run.predict(files[:2], device="cpu", tta=3)]
    assert np.allclose(shifted, [p.probs for p in Predictor.from_run(run.root, device="cpu", tta=3).predict(files[:2])])
    assert not np.allclose(shifted, chosen[:2])
    with caplog.at_level(logging.WARNING):
        run.export()
    assert "the ONNX file holds the network alone" in caplog.text


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_a_named_model_trains_alone_unless_the_ensemble_is_asked_for(clips, tmp_path):
    named = audioclf.train(clips, out=tmp_path / "named", model={"name": "small_cnn"}, quiet=True, **STARVED)
    assert "members" not in named.summary and not (named.root / "members").exists()
    assert "ensemble: none" in named.root.joinpath("config.yaml").read_text()
    asked = audioclf.train(clips, out=tmp_path / "asked", model={"name": "small_cnn"}, quiet=True,
                           train={**STARVED["train"], "ensemble": "classical"},
                           augment=STARVED["augment"], features=STARVED["features"])
    assert asked.summary["members"]["members"][1]["name"] == "classical"


def test_bad_ensemble_settings_and_damaged_members_are_one_line_errors(clips, tmp_path):
    with pytest.raises(ConfigError, match=r"train.ensemble='both': expected auto \| classical \| none"):
        audioclf.train(clips, out=tmp_path / "bad", quiet=True, train={"ensemble": "both"})
    assert not (tmp_path / "bad").exists()
    run = audioclf.train(clips, out=tmp_path / "run", quiet=True, **STARVED)
    members = run.root / "members"
    (members / "classical.onnx").write_bytes(b"not a graph")
    if run.summary["members"]["weights"]["classical"] > 0:
        with pytest.raises(ConfigError, match=r"classical.onnx: not a valid classical member"):
            load_mix(run.root)
    (members / "members.json").write_text("{")
    with pytest.raises(ConfigError, match=r"members.json: unreadable"):
        load_mix(run.root)
    json.loads(json.dumps(run.summary["members"]))  # the summary's entry is plain JSON


def test_without_skl2onnx_auto_trains_the_network_alone_and_says_why(monkeypatch, caplog):
    import builtins

    from audioclf.config import Config
    from audioclf.training.members import resolve_ensemble

    real_import = builtins.__import__

    def no_skl2onnx(name, *args, **kwargs):
        if name == "skl2onnx":
            raise ImportError("No module named 'skl2onnx'", name="skl2onnx")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skl2onnx)
    cfg = Config()
    with caplog.at_level(logging.WARNING):
        assert resolve_ensemble(cfg, cfg, "audio", "single_label") == "none"
    assert "pip install 'audioclf[deploy]'" in caplog.text and "skl2onnx is missing" in caplog.text
    cfg.train.ensemble = "classical"
    with pytest.raises(ConfigError, match=r"train.ensemble=classical: .*skl2onnx is missing"):
        resolve_ensemble(cfg, cfg, "audio", "single_label")
    assert resolve_ensemble(Config(), Config(), "audio", "multi_label") == "none"  # no message: not applicable
