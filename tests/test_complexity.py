"""Parameter / MAC counting: hand counts of the DCASE 2022 models, and cross-checks against two independent
counters (torch.utils.flop_counter and ptflops) on convolutions, linear layers, attention and RNNs."""

from __future__ import annotations

import pytest
import torch
from ptflops import get_model_complexity_info
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from audioclf.models.complexity import check_limits, complexity_report, format_report
from audioclf.errors import AudioclfError, ConfigError
from audioclf.models import create_model

DCASE_LIMITS = {"max_params": 128_000, "max_macs": 30_000_000}


def reference_macs(model: nn.Module, input_shape: tuple[int, ...], train: bool = False) -> int:
    """torch's own FLOP counter (2 FLOPs per MAC; counts conv / matmul / attention, no bias adds)."""
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model.train(train)(torch.zeros(1, *input_shape))
    return counter.get_total_flops() // 2


def test_dcase_baseline_hand_count():
    report = complexity_report(create_model("dcase2022_baseline", 10, (1, 40, 51)), (1, 40, 51))
    # Hand count ("same" padding keeps 40 x 51 until MaxPool(5,5) -> 8 x 10, MaxPool(4,10) -> 2 x 1 -> 64):
    conv_macs = [40 * 51 * 16 * 1 * 49, 40 * 51 * 16 * 16 * 49, 8 * 10 * 32 * 16 * 49]
    dense_macs = [64 * 100, 100 * 10]
    assert report.macs_total == sum(conv_macs) + sum(dense_macs) == 29_203_560
    # The DCASE figure is 29.23 M: ours is 0.09 % lower (their TFLite-based counter adds non-MAC work).
    assert report.macs_total == pytest.approx(29.23e6, rel=2e-3)
    weights = [16 * 49, 16 * 16 * 49, 32 * 16 * 49, 64 * 100, 100 * 10]
    biases = [16, 16, 32, 100, 10]
    assert report.params_total == sum(weights) + sum(biases) == 45_990  # BatchNorm folded into the convs
    assert report.params_pytorch == 45_990 + 2 * (16 + 16 + 32)  # + BN weight and bias
    # The quoted "46,512 parameters" is the TFLite INT8 weight size: 1 byte per weight + int32 biases.
    assert report.bytes_int8_tflite == sum(weights) + 4 * sum(biases) == 46_512
    assert report.bytes_int8 == 45_990 and report.bytes_fp32 == 4 * 45_990
    check_limits(report, **DCASE_LIMITS)


def test_student_fits_the_dcase_limits_and_the_teacher_does_not():
    student = complexity_report(create_model("asc_student", 10, (1, 80, 51)), (1, 80, 51))
    # stem 32@(6,5) on 80x51, two 3x3 convs on 40x25, four on 8x12, 1x1 to 10 classes, dense 10x10
    expected = 80 * 51 * 32 * 30 + 2 * 40 * 25 * 32 * 32 * 9 + 4 * 8 * 12 * 32 * 32 * 9 + 8 * 12 * 10 * 32 + 100
    assert student.macs_total == expected == reference_macs(create_model("asc_student", 10, (1, 80, 51)), (1, 80, 51))
    assert student.macs_total == pytest.approx(26.116e6, rel=0.01)  # Table 13 of González Poy (2022): 26.116 MMACs
    check_limits(student, **DCASE_LIMITS)
    teacher = complexity_report(create_model("asc_teacher", 10, (1, 4, 4)), (1, 4, 4))
    with pytest.raises(AudioclfError, match=r"3,9\d\d,\d{3} parameters > limit 128,000"):
        check_limits(teacher, **DCASE_LIMITS)


@pytest.mark.parametrize("name,shape", [
    ("dcase2022_baseline", (1, 40, 51)),
    ("asc_student", (1, 40, 51)),
    ("small_cnn", (1, 32, 40)),
    ("m5", (4000,)),
])
def test_registered_models_match_torch_flop_counter(name, shape):
    model = create_model(name, 7, shape)
    assert complexity_report(model, shape).macs_total == reference_macs(model, shape)


def test_layers_match_ptflops():
    # ptflops also counts bias additions: compare on bias-free layers
    layers = [
        (nn.Conv2d(3, 8, (3, 5), stride=2, padding=1, dilation=(1, 2), bias=False), (3, 20, 30)),
        (nn.Conv1d(4, 8, 9, stride=4, groups=2, bias=False), (4, 100)),
        (nn.Linear(7, 5, bias=False), (3, 7)),
    ]
    for layer, shape in layers:
        flops, _ = get_model_complexity_info(layer, shape, as_strings=False, print_per_layer_stat=False)
        assert complexity_report(layer, shape).macs_total == flops, layer


@pytest.mark.parametrize("kind,gates", [(nn.LSTM, 4), (nn.GRU, 3)])
def test_recurrent_layers_against_hand_count_and_ptflops(kind, gates):
    steps, features, hidden = 6, 8, 16
    rnn = kind(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
    report = complexity_report(rnn, (steps, features))
    layer0 = 2 * gates * hidden * (features + hidden)  # both directions
    layer1 = 2 * gates * hidden * (2 * hidden + hidden)  # input is both directions' outputs
    assert report.macs_total == steps * (layer0 + layer1)
    # ptflops adds per step and layer-direction: bias adds (2 x gates x H) and element-wise gating
    # (LSTM 10 H: gate sums, c = f*c + i*g, h = o*tanh(c); GRU 7 H)
    elementwise = {4: 10, 3: 7}[gates] * hidden + 2 * gates * hidden
    flops, params = get_model_complexity_info(rnn, (steps, features), as_strings=False, print_per_layer_stat=False)
    assert flops == report.macs_total + steps * 4 * elementwise
    assert params == report.params_total == report.params_pytorch


def test_attention_matches_torch_flop_counter():
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    model = _SelfAttention(mha)
    report = complexity_report(model, (7, 16))
    # in eval mode attention takes a fused kernel the FLOP counter does not see; in train mode (dropout 0)
    # with need_weights=True it runs the same arithmetic as separate matmuls
    assert report.macs_total == reference_macs(model, (7, 16), train=True) == 4 * 7 * 16 * 16 + 2 * 7 * 7 * 16
    assert report.params_total == sum(p.numel() for p in mha.parameters())  # out_proj included once
    assert report.layers[0].params == report.params_total


class _SelfAttention(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        self.mha = mha

    def forward(self, x):
        return self.mha(x, x, x)[0]


def test_batchnorm_folding_rules():
    # BN after a bias-free conv folds (conv gains a bias); BN on the raw input cannot fold: 1 MAC/element
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 6, 3))
    folded = complexity_report(model, (1, 5, 6))
    conv_macs, linear_macs = 5 * 6 * 4 * 9, 120 * 3
    assert folded.macs_total == 30 + conv_macs + linear_macs
    stats = {s.name: s for s in folded.layers}
    assert stats["1"].params == 36 + 4 and stats["1"].note == "gained bias"
    assert stats["2"].params == 0 and "folded into 1" in stats["2"].note
    assert stats["0"].params == 2 and stats["0"].macs == 30
    assert folded.params_total == 2 + 40 + 363
    plain = complexity_report(model, (1, 5, 6), batchnorm_folded=False)
    assert plain.macs_total == folded.macs_total + 4 * 5 * 6
    assert plain.params_total == plain.params_pytorch == 2 + 36 + 8 + 363


def test_shared_layers_are_counted_per_call_and_modes_restored():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return self.fc(self.fc(x))

    model = Twice().train()
    report = complexity_report(model, (8,))
    assert report.macs_total == 2 * 64 and report.params_total == 72
    assert model.training  # restored after counting in eval mode


def test_frozen_parameters_and_uncounted_layers():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    report = complexity_report(model, (4,))
    assert report.params_pytorch == report.params_total == 20 + 8 + 10  # LayerNorm params still count
    assert report.params_trainable == 18
    assert report.biases_total == 4 + 4 + 2  # LayerNorm's bias is a bias too


def test_format_report_and_errors():
    report = complexity_report(create_model("dcase2022_baseline", 10, (1, 40, 51)), (1, 40, 51))
    text = format_report(report)
    assert "29,203,560" in text and "45,990 parameters" in text and "46,512 bytes" in text
    assert text.count("\n") >= len(report.layers) + 3
    assert report.to_dict()["mmacs"] == pytest.approx(29.20356)
    with pytest.raises(AudioclfError, match=r"29\.204 MMACs > limit 20\.000 MMACs"):
        check_limits(report, max_macs=20_000_000)
    with pytest.raises(ConfigError, match="input_shape"):
        complexity_report(nn.Linear(2, 2), (0, 2))
