"""Hostile input in the deploy paths (issue 20): stale exports after --resume, tampered quantization.json,
crafted ONNX metadata and checkpoints, and models whose outputs are not finite. Each is one line and a
non-zero exit, or the artifact left out with a warning, never a wrong answer or a traceback."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.runs import RunDir

pytest.importorskip("onnxruntime")

# train.keep=last: the kept checkpoint (best.pt) is rewritten by every resumed epoch, whether or not 8 validation
# clips happen to score better, so "an export older than the checkpoint" does not depend on the random draw
TINY = ["train.epochs=1", "train.batch_size=16", "train.keep=last", "train.lr=0.01", "data.clip_seconds=0.5",
        "model.name=mlp", "features.n_mels=16", "features.n_fft=256", "features.hop_length=160"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run (an MLP, one epoch) and its data; tests work on copies (:func:`run`)."""
    root = tmp_path_factory.mktemp("deploy")
    data = make_demo_dataset(root / "data", n_per_class=4, seconds=0.5, seed=3)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    return root / "run", data


@pytest.fixture
def run(trained, tmp_path):
    source, _ = trained
    return shutil.copytree(source, tmp_path / "run")


@pytest.fixture
def wav(trained):
    return str(sorted(trained[1].rglob("*.wav"))[0])


def one_line_error(capsys, after: str | None = None) -> str:
    """The one error line on stderr (``after``: the start of a line the command prints before it, e.g. serve's)."""
    err = capsys.readouterr().err
    if after is not None:
        first, err = err.split("\n", 1)
        assert first.startswith(after), first
    assert "Traceback" not in err and "unexpected" not in err and len(err.strip().splitlines()) == 1, err
    return err


# --- 5: an export made before train --resume ------------------------------------------------------
def test_an_export_older_than_the_resumed_checkpoint_is_refused_until_exported_again(run, wav, capsys, monkeypatch):
    uvicorn = pytest.importorskip("uvicorn")
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)  # serve: what it would load, not a server
    assert main(["export", str(run), "--with-frontend"]) == 0
    onnx = run / "model.wave.onnx"
    best = RunDir(run).checkpoint("best")
    before = best.read_bytes()
    assert main(["train", "--out", str(run), "--resume", "train.epochs=4"]) == 0
    assert best.read_bytes() != before  # the resumed epochs rewrote best.pt (same run id)
    capsys.readouterr()
    for command in (["predict", str(onnx), wav], ["predict", str(run), wav, "--ensemble", str(onnx)],
                    ["serve", str(onnx)]):
        assert main(command) == 2
        err = one_line_error(capsys, after="serving " if command[0] == "serve" else None)
        assert str(onnx) in err and "checkpoints/best.pt" in err and "export" in err and "again" in err
    # Exported again, it answers as the resumed PyTorch run does.
    assert main(["export", str(run), "--with-frontend"]) == 0
    capsys.readouterr()
    assert main(["predict", str(onnx), wav, "--top-k", "3"]) == 0
    from_onnx = capsys.readouterr().out
    assert main(["predict", str(run), wav, "--top-k", "3"]) == 0
    assert _scores(from_onnx) == pytest.approx(_scores(capsys.readouterr().out), abs=2e-3)


def _scores(printed: str) -> dict[str, float]:
    ranked = printed.strip().split(": ", 1)[1].split(", ")
    return {label: float(p) for label, p in (item.rsplit(" ", 1) for item in ranked)}


def test_an_export_next_to_a_run_without_the_checkpoints_hash_is_refused(run, exported, wav, capsys):
    import onnx

    proto = onnx.load(str(exported))
    props = {p.key: p.value for p in proto.metadata_props if p.key != "checkpoint_sha256"}  # as older exports
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(run / "model.wave.onnx"))
    capsys.readouterr()
    assert main(["predict", str(run / "model.wave.onnx"), wav]) == 2
    assert "without the hash" in one_line_error(capsys)


def test_an_export_outside_any_run_folder_stays_usable(run, wav, tmp_path):
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    assert main(["export", str(run), "--out", str(alone)]) == 0
    assert main(["train", "--out", str(run), "--resume", "train.epochs=3"]) == 0
    assert main(["predict", str(alone), wav]) == 0  # nothing to compare it with


# --- 10: a tampered quantization.json ---------------------------------------------------------------
@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "MATCHING_NO_KEYS", "MATCHING_WRONG_TYPES"])
def test_a_tampered_quantization_json_is_left_out_of_report_md_with_a_warning(run, content, caplog):
    made_from = {key: RunDir(run).load_checkpoint("best").get(key) for key in ("run_id", "checkpoint_sha256")}
    made_from["checkpoint"] = "best"
    text = {"MATCHING_NO_KEYS": json.dumps(made_from),  # passes the staleness check: its content is the problem
            "MATCHING_WRONG_TYPES": json.dumps({**made_from, "method": 3, "fp32": [], "int8": "x", "drop": None,
                                                "size_ratio": "big"})}.get(content, content)
    (run / "quantization.json").write_text(text)
    assert main(["train", "--out", str(run), "--resume", "train.epochs=2"]) == 0
    assert f"{run / 'quantization.json'}" in caplog.text and "quantize" in caplog.text
    assert "INT8" not in (run / "report.md").read_text()


def test_quantization_results_of_an_earlier_checkpoint_leave_report_md(run, wav, caplog, capsys):
    assert main(["quantize", str(run), "--calibration", "4"]) == 0
    assert "INT8" in (run / "report.md").read_text()
    assert main(["train", "--out", str(run), "--resume", "train.epochs=4"]) == 0
    assert "INT8" not in (run / "report.md").read_text()
    assert "quantization.json was made from an earlier" in caplog.text and "checkpoints/best.pt" in caplog.text
    capsys.readouterr()
    int8 = run / "model.features.int8.onnx"  # carries its fp32 model's stamp
    assert main(["predict", str(int8), wav]) == 2
    err = one_line_error(capsys)
    assert str(int8) in err and f"audioclf quantize {run} again" in err


# --- 6: models whose outputs are not finite ---------------------------------------------------------
def _nan_weights(run):
    import torch

    path = RunDir(run).checkpoint("best")
    state = torch.load(path, weights_only=False)
    name = [key for key, value in state["model"].items() if value.is_floating_point()][-1]  # the last layer's bias
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, path)


def _nan_onnx(run, tmp_path):
    import onnx
    from onnx import numpy_helper

    path = tmp_path / "alone" / "model.onnx"
    path.parent.mkdir()
    assert main(["export", str(run), "--out", str(path)]) == 0
    proto = onnx.load(str(path))
    last = proto.graph.initializer[-1]
    last.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(last), np.nan), last.name))
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("kind", ["pytorch", "onnx"])
def test_nan_probabilities_are_a_failed_file_not_a_prediction(run, wav, kind, tmp_path, capsys):
    model = _nan_weights(run) or run if kind == "pytorch" else _nan_onnx(run, tmp_path)
    table = tmp_path / "out.csv"
    capsys.readouterr()
    assert main(["predict", str(model), wav, "--csv", str(table)]) == 3
    printed = capsys.readouterr()
    assert printed.out.strip() == f"wrote {table}"  # no label, no probabilities printed
    assert printed.err.startswith(f"{wav}: skipped") and "not all finite" in printed.err
    (header, row), = [list(csv.reader(table.read_text().splitlines()))]
    assert row[0] == wav and set(row[1:-1]) == {""} and "not all finite" in row[-1]  # no prediction, no `nan`


def test_the_windows_serve_and_timeline_score_are_checked_too(run, wav, tmp_path, capsys):
    from audioclf.deploy.predictor import Predictor
    from audioclf.errors import NonFiniteOutputs

    _nan_weights(run)
    predictor = Predictor.from_run(run, device="cpu")
    with pytest.raises(NonFiniteOutputs, match="not all finite"):  # what serve's /predict answers from
        predictor.file_window_probabilities(wav)
    capsys.readouterr()
    assert main(["predict", str(run), wav, "--timeline", str(tmp_path / "t.csv")]) == 2
    assert wav in one_line_error(capsys) and not (tmp_path / "t.csv").exists()


def test_evaluate_with_nan_probabilities_is_one_line_naming_the_run(run, capsys):
    _nan_weights(run)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    err = one_line_error(capsys)
    assert str(RunDir(run).checkpoint("best")) in err and "not all finite" in err


# --- 10: crafted ONNX metadata ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The tiny run exported with its front-end to a file outside the run (no staleness check applies)."""
    path = tmp_path_factory.mktemp("exported") / "model.onnx"
    assert main(["export", str(trained[0]), "--out", str(path), "--with-frontend"]) == 0
    return path


@pytest.mark.parametrize("key, value", [("clip_samples", "0"), ("clip_samples", "-5"), ("clip_samples", str(10**12)),
                                        ("sample_rate", "0"), ("classes", "[]"), ("input", None),
                                        ("classes", '"tone"'), ("task", "regression")])
def test_crafted_onnx_metadata_is_one_line_naming_the_file_and_key(exported, wav, key, value, tmp_path, capsys):
    import onnx

    proto = onnx.load(str(exported))
    props = {p.key: p.value for p in proto.metadata_props}
    props.pop(key) if value is None else props.update({key: value})
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    crafted = tmp_path / "crafted.onnx"
    onnx.save(proto, str(crafted))
    capsys.readouterr()
    assert main(["predict", str(crafted), wav]) == 2
    err = one_line_error(capsys)
    assert str(crafted) in err and f"'{key}'" in err


def test_an_onnx_model_whose_outputs_do_not_match_its_classes_is_refused(exported, wav, tmp_path, capsys):
    import onnx

    proto = onnx.load(str(exported))
    props = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {**props, "classes": json.dumps(json.loads(props["classes"])[:3])})
    crafted = tmp_path / "crafted.onnx"
    onnx.save(proto, str(crafted))
    capsys.readouterr()
    assert main(["predict", str(crafted), wav]) == 2
    err = one_line_error(capsys)
    assert str(crafted) in err and "'classes'" in err


# --- 10: crafted checkpoints -------------------------------------------------------------------------
def _edit_best(run, edit):
    import torch

    path = RunDir(run).checkpoint("best")
    state = torch.load(path, weights_only=False)
    edit(state)
    torch.save(state, path)
    return path


def _narrower_last_layer(state):
    name = [key for key in state["model"] if key.endswith("weight")][-1]
    state["model"][name] = state["model"][name][:, :-1].clone()


@pytest.mark.parametrize("edit", [
    pytest.param(lambda s: s.update(clip_samples=10**12), id="clip_samples-huge"),
    pytest.param(lambda s: s.update(clip_samples=0), id="clip_samples-zero"),
    pytest.param(lambda s: s.update(sample_rate=0), id="sample_rate-zero"),
    pytest.param(lambda s: s.update(classes=[]), id="classes-empty"),
    pytest.param(lambda s: s["spec"]["backbone"].update(n_classes=10**9), id="n_classes-huge"),
    pytest.param(lambda s: s["spec"]["backbone"].update(input_shape=[1, 16, 10**9]), id="input_shape-huge"),
    # Sizes far beyond any RAM: were the check gone, the allocation would fail at once instead of paging the machine.
    pytest.param(lambda s: s["spec"]["backbone"]["kwargs"].update(hidden=10**12), id="hidden-huge"),
    pytest.param(lambda s: s["spec"]["backbone"].update(kwargs=[1]), id="kwargs-not-a-mapping"),
    pytest.param(lambda s: s["spec"].update(features={**s["spec"]["features"], "n_mels": 10**9}), id="n_mels-huge"),
    pytest.param(_narrower_last_layer, id="tensor-of-another-shape"),
    pytest.param(lambda s: s["model"].popitem(), id="weights-of-another-model"),  # a key missing: other layers
])
@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_checkpoint_that_does_not_fit_its_model_is_one_line_naming_the_file(run, wav, edit, command, tmp_path,
                                                                              capsys):
    path = _edit_best(run, edit)
    capsys.readouterr()
    args = ["predict", str(run), wav] if command == "predict" else ["export", str(run), "--out", str(tmp_path / "m.onnx")]
    assert main(args) == 2
    assert str(path) in one_line_error(capsys)



def test_serve_answers_nan_probabilities_with_a_422_not_an_unexpected_500(run, wav):
    import urllib.error
    import urllib.request

    from audioclf.deploy.predictor import Predictor
    from audioclf.deploy.serve import create_app
    from servers import serving

    _nan_weights(run)
    with serving(create_app(Predictor.from_run(run, device="cpu"), {"source": str(run)})) as port:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict?name=a.wav", data=open(wav, "rb").read(),
                                         headers={"Content-Type": "audio/wav"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
    assert answer.value.code == 422
    assert "not all finite" in json.loads(answer.value.read())["error"]
