"""Knowledge distillation: the loss against hand computations, frozen teachers, ensembles, the teacher
cache, and ``distill`` end to end from a teacher run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from audioclf.compress.distill import (
    TeacherCache, TeacherEnsemble, distill, distillation_step, kd_loss, soft_target_loss,
)
from audioclf.config import load_config
from audioclf.errors import ConfigError, DataError
from audioclf.deploy.predictor import Predictor
from audioclf.runs import RunDir
from audioclf.training.loop import train_one_epoch
from audioclf.workflows.evaluation import evaluate_run
from test_export import shared_run


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- the loss -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_kd_loss_is_zero_when_the_student_copies_the_teacher(task):
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)) * 3
    targets = torch.tensor([0, 1, 2, 3, 4, 0]) if task == "single_label" else (logits > 0).float()
    for T in (1.0, 2.0, 5.0):
        assert kd_loss(logits, logits, targets, T=T, alpha=0.0, task=task).item() == pytest.approx(0.0, abs=1e-6)
    different = logits.flip(0)
    assert kd_loss(different, logits, targets, T=2.0, alpha=0.0, task=task).item() > 0.01


def test_single_label_kd_loss_matches_the_formula_by_hand():
    s = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    t = np.array([[3.0, 1.0, -2.0], [0.5, 0.5, 1.0]])
    y = np.array([0, 2])
    T, alpha = 2.0, 0.3
    ce = -np.mean(np.log(_softmax(s)[np.arange(2), y]))
    p_t, p_s = _softmax(t / T), _softmax(s / T)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    expected = alpha * ce + (1 - alpha) * T**2 * kl
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T=T, alpha=alpha, task="single_label")
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_multi_label_kd_loss_matches_the_bernoulli_kl_by_hand():
    s = np.array([[1.0, -2.0, 0.5]])
    t = np.array([[2.0, -1.0, -0.5]])
    y = np.array([[1.0, 0.0, 0.0]])
    T, alpha = 3.0, 0.6
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    bce = -np.mean(y * np.log(sig(s)) + (1 - y) * np.log(1 - sig(s)))
    p, q = sig(t / T), sig(s / T)
    kl = np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))
    expected = alpha * bce + (1 - alpha) * T**2 * kl
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T=T, alpha=alpha, task="multi_label")
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_soft_target_gradient_is_T_times_the_probability_difference():
    # d/dz_s [T^2 KL(softmax(z_t/T) || softmax(z_s/T))] = T (softmax(z_s/T) - softmax(z_t/T)) per item
    s = torch.tensor([[1.0, 2.0, -1.0], [0.3, -0.2, 0.9]], requires_grad=True)
    t = torch.tensor([[0.5, 2.5, 0.0], [1.0, 0.0, -1.0]])
    T = 4.0
    soft_target_loss(s, t, T, "single_label").backward()
    expected = T * (torch.softmax(s.detach() / T, -1) - torch.softmax(t / T, -1)) / len(s)  # batch mean
    torch.testing.assert_close(s.grad, expected)


def test_invalid_settings_are_config_errors():
    logits = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match="T=0"):
        kd_loss(logits, logits, torch.tensor([0, 1]), T=0, alpha=0.5)
    with pytest.raises(ConfigError, match="alpha=1.5"):
        distillation_step(nn.Linear(3, 3), T=2, alpha=1.5)
    with pytest.raises(ConfigError, match="task 'regression'"):
        distillation_step(nn.Linear(3, 3), task="regression")
    with pytest.raises(DataError, match="share the class list"):
        soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 4), 2.0, "single_label")


# --- teachers and the step ----------------------------------------------------------------------
def _teacher() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))


def test_gradients_never_reach_the_teacher():
    teacher, student = _teacher().train(), nn.Linear(6, 4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    step = distillation_step(teacher, T=2.0, alpha=0.5)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    out = step(student, x, y)
    assert set(out) == {"loss", "task_loss", "kd_loss", "output"}
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert not teacher.training  # eval mode: no dropout, BatchNorm statistics untouched
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key])
    # the same batch gives the same teacher output (no dropout noise in the soft targets)
    again = step(student, x, y)
    assert again["kd_loss"].item() == pytest.approx(out["kd_loss"].item())
    assert out["loss"].item() == pytest.approx(0.5 * out["task_loss"].item() + 0.5 * out["kd_loss"].item())


def test_ensemble_averages_logits():
    a, b = _teacher().eval(), nn.Linear(6, 4)
    ensemble = TeacherEnsemble([a, b])
    x = torch.randn(5, 6)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), (a(x) + b(x)) / 2)
    step_list = distillation_step([a, b], T=3.0, alpha=0.0)
    step_module = distillation_step(ensemble, T=3.0, alpha=0.0)
    student, y = nn.Linear(6, 4), torch.zeros(5, dtype=torch.long)
    assert step_list(student, x, y)["loss"].item() == pytest.approx(step_module(student, x, y)["loss"].item())


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_teacher_cache_gives_the_live_teacher_loss_and_the_loop_logs_both_terms(task):
    teacher = _teacher()
    x = torch.randn(12, 6)
    y = torch.randint(0, 4, (12,)) if task == "single_label" else (torch.rand(12, 4) > 0.5).float()
    dataset = _Pairs(x, y)
    cache = TeacherCache.precompute(teacher, dataset, task, batch_size=5)
    with torch.no_grad():
        torch.testing.assert_close(cache.logits, teacher(x))
    loader = torch.utils.data.DataLoader(cache.wrap(dataset), batch_size=12)
    packed_x, packed = next(iter(loader))
    torch.manual_seed(0)
    student = nn.Linear(6, 4)
    cached = distillation_step(cache, T=2.0, alpha=0.4, task=task)(student, packed_x, packed)
    live = distillation_step(teacher, T=2.0, alpha=0.4, task=task)(student, x, y)
    for key in ("loss", "task_loss", "kd_loss"):
        assert cached[key].item() == pytest.approx(live[key].item(), rel=1e-6)

    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    logged = train_one_epoch(student, loader, distillation_step(cache, 2.0, 0.4, task), optimizer, torch.device("cpu"))
    assert set(logged) == {"loss", "task_loss", "kd_loss"}


# --- distill() from run directories -------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    return shared_run(tmp_path_factory)  # a DCASE-baseline teacher


def _student_config(out, *extra):
    return load_config(None, [f"out={out}", "train.epochs=2", "train.batch_size=8", "features.n_mels=20",
                              "features.n_fft=512", "features.hop_length=320", "model.name=asc_student",
                              "model.filters=4", "augment.waveform=[]", *extra])  # fixed inputs: teacher cache


def test_distill_writes_a_student_run(teacher_run, tmp_path):
    student = distill([teacher_run, teacher_run], _student_config(tmp_path / "student"), T=2.0, alpha=0.5)
    run = RunDir(student)
    records = run.read_metrics()
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert {"train/loss", "train/task_loss", "train/kd_loss"} <= set(record)
        assert record["train/loss"] == pytest.approx(0.5 * record["train/task_loss"] + 0.5 * record["train/kd_loss"])
    summary = run.read_summary()
    info = summary["distillation"]
    assert info["T"] == 2.0 and info["alpha"] == 0.5 and info["teacher_cache"] is True
    assert info["ensemble"] == "mean of teacher logits" and len(info["teachers"]) == 2
    # the mean logits of two copies of one teacher are that teacher: its own test metrics
    alone = evaluate_run(teacher_run, device="cpu")["metrics"]
    for name in ("accuracy", "log_loss"):
        assert info["teacher_metrics"]["test"][name] == pytest.approx(alone[name], abs=1e-6)
    assert summary["model"]["name"] == "asc_student"
    # the student keeps the teacher's split, classes, rate and clip length, with its own front-end
    teacher_state, student_state = (RunDir(teacher_run).load_checkpoint(), run.load_checkpoint())
    assert student_state["classes"] == teacher_state["classes"]
    assert (student_state["sample_rate"], student_state["clip_samples"]) == (16000, 16000)
    assert student_state["spec"]["features"]["n_mels"] == 20
    assert run.manifest.read_text() == RunDir(teacher_run).manifest.read_text()
    probs = Predictor.from_run(student, device="cpu").predict_wave(np.zeros(16000, np.float32))
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    json.dumps(summary)


def test_distill_checks_teachers_and_config(teacher_run, tmp_path):
    with pytest.raises(ConfigError, match="data.sample_rate=22050"):
        distill([teacher_run], _student_config(tmp_path / "s", "data.sample_rate=22050"))
    with pytest.raises(ConfigError, match="mixup"):
        distill([teacher_run], _student_config(tmp_path / "s", "augment.mixup_alpha=0.2"))
    with pytest.raises(ConfigError, match="at least one teacher"):
        distill([], _student_config(tmp_path / "s"))
    # a second teacher trained on another split would have seen the student's test items
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.yaml", "manifest.csv"):
        (other / name).write_text((teacher_run / name).read_text())
    (other / "checkpoints").mkdir()
    (other / "checkpoints" / "best.pt").write_bytes((teacher_run / "checkpoints" / "best.pt").read_bytes())
    text = (other / "manifest.csv").read_text().replace(",test,", ",XX,").replace(",train,", ",test,", 1)
    (other / "manifest.csv").write_text(text.replace(",XX,", ",train,"))
    with pytest.raises(DataError, match="splits differ"):
        distill([teacher_run, other], _student_config(tmp_path / "s"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_distillation_step_on_cuda_moves_the_teacher_and_matches_cpu():
    teacher, student = _teacher(), nn.Linear(6, 4)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    expected = distillation_step(teacher, T=2.0, alpha=0.5)(student, x, y)
    got = distillation_step(teacher, T=2.0, alpha=0.5)(student.cuda(), x.cuda(), y.cuda())
    assert got["loss"].device.type == "cuda" and next(teacher.parameters()).device.type == "cuda"
    for key in ("loss", "task_loss", "kd_loss"):
        assert got[key].item() == pytest.approx(expected[key].item(), rel=1e-4, abs=1e-6)
