"""Every block family and option builds, runs forward and backward, and follows timm's model API."""

import pytest
import torch

from space.network import build_network
from tests.conftest import tiny_config

OPTIONS = [
    dict(),
    dict(stem_type="resnet"), dict(stem_type="deep"), dict(stem_type="conv2former"),
    dict(block="basic", conv="dense", expansion=1.0), dict(block="convmod"),
    dict(conv="grouped", groups=4), dict(conv="dense"), dict(dw_position="middle"),
    dict(norm="bn"), dict(norm="gn"), dict(act="relu"), dict(act="silu"),
    dict(norms_per_block="all", acts_per_block="all"), dict(attention="se"), dict(attention="cbam"),
    dict(downsample="strided"), dict(layer_scale_init=0.0), dict(head_width=32), dict(head_norm=False),
    dict(conv_bias=False), dict(kernel=21), dict(kernel=3), dict(drop_path_rate=0.2),
]


def configure(stem_type=None, block=None, conv=None, groups=None, expansion=None, attention=None, kernel=None, **arch):
    cfg = tiny_config(**arch)
    import dataclasses

    stage = {k: v for k, v in dict(block=block, conv=conv, groups=groups, expansion=expansion,
                                   attention=attention, kernel=kernel).items() if v is not None}  # fmt: skip
    stem = dataclasses.replace(cfg.stem, type=stem_type) if stem_type else cfg.stem
    return dataclasses.replace(cfg, stem=stem, stages=tuple(dataclasses.replace(s, **stage) for s in cfg.stages))


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "convnext")
def test_builds_runs_forward_and_backward(option):
    model = build_network(configure(**option))
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_timm_api():
    model = build_network(tiny_config(), num_classes=7, drop_path_rate=0.1, in_chans=1)
    assert model.num_classes == 7 and model.drop_path_rate == 0.1 and model.in_chans == 1
    x = torch.randn(2, 1, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, 64, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    assert [f["num_chs"] for f in model.feature_info] == [8, 16, 32, 64]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    modules = dict(model.named_modules())
    assert all(f["module"] in modules for f in model.feature_info)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)


def test_drop_path_rises_linearly_over_blocks():
    from timm.layers import DropPath

    model = build_network(tiny_config(drop_path_rate=0.3))
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1, 0.2, 0.3])  # the first of 4 blocks has none


def test_unknown_model_argument_is_refused():
    with pytest.raises(TypeError, match="pretrained_cfg"):
        build_network(tiny_config(), pretrained_cfg={})
