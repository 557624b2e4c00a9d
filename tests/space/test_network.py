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
    # the conv zoo: each new conv in both bottleneck layouts and with each norm, and dilated stages of each block family
    dict(conv="shuffle", groups=4), dict(conv="shuffle", groups=2, dw_position="middle", norm="bn", acts_per_block="all"),
    dict(conv="separable", groups=1), dict(conv="separable", groups=4, kernel=7, dw_position="middle", norm="gn"),
    dict(conv="splat", groups=1, radix=2), dict(conv="splat", groups=2, radix=4, dw_position="middle", norm="bn", expansion=1.0),
    dict(conv="splat", groups=1, radix=1, norm="gn", attention="se"), dict(conv="deformable", kernel=3),
    dict(conv="deformable", kernel=3, groups=2, dw_position="middle", norm="bn", conv_bias=False),
    dict(downsample="strided", dilations=(1, 1, 2, 4)), dict(downsample="strided", dilations=(1, 2, 1, 2), conv="separable", groups=2),
    dict(downsample="strided", dilations=(1, 1, 1, 2), block="basic", conv="dense", expansion=1.0),
    dict(downsample="strided", dilations=(1, 1, 2, 2), block="convmod"),
    dict(downsample="strided", dilations=(1, 1, 2, 4), conv="deformable", kernel=3),
]


def configure(stem_type=None, block=None, conv=None, groups=None, expansion=None, attention=None, kernel=None, radix=None, dilations=None, **arch):
    cfg = tiny_config(**arch)
    import dataclasses

    stage = {k: v for k, v in dict(block=block, conv=conv, groups=groups, expansion=expansion,
                                   attention=attention, kernel=kernel, radix=radix).items() if v is not None}
    stem = dataclasses.replace(cfg.stem, type=stem_type) if stem_type else cfg.stem
    stages = tuple(dataclasses.replace(s, **stage, dilation=d) for s, d in zip(cfg.stages, dilations or (1,) * len(cfg.stages)))
    return dataclasses.replace(cfg, stem=stem, stages=stages)


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


def test_dilated_stages_keep_their_resolution_and_feature_info_says_so():
    model = build_network(configure(downsample="strided", dilations=(1, 1, 2, 4)))
    maps = model.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert [64 // m.shape[-1] for m in maps] == [f["reduction"] for f in model.feature_info] == [4, 8, 8, 8]


def test_output_stride_dilates_as_timm_and_is_refused_where_it_cannot():
    from space.errors import ConvspaceError

    assert [s.dilation for s in build_network(configure(downsample="strided"), output_stride=16).config.stages] == [1, 1, 1, 2]
    assert build_network(configure(downsample="strided", dilations=(1, 1, 2, 4)), output_stride=32).feature_info[-1]["reduction"] == 32
    with pytest.raises(ConvspaceError, match="output_stride: must be 32 for networks with downsample separate"):
        build_network(tiny_config(), output_stride=16)
    with pytest.raises(ConvspaceError, match="output_stride: must be one of 8, 16, 32, got 4"):
        build_network(configure(downsample="strided"), output_stride=4)


def test_deformable_offsets_start_at_zero_so_the_conv_starts_plain():
    from space.blocks.parts import DeformableConv

    model = build_network(configure(conv="deformable", kernel=3))
    deformables = [m for m in model.modules() if isinstance(m, DeformableConv)]
    assert len(deformables) == 4 and all(not m.offset.weight.any() and not m.offset.bias.any() for m in deformables)
    assert all(m.conv.weight.std() > 0 for m in deformables)  # the conv itself got the network's init


def test_unknown_model_argument_is_refused():
    with pytest.raises(TypeError, match="pretrained_cfg"):
        build_network(tiny_config(), pretrained_cfg={})


def test_dense_stages_concatenate_transition_and_end_in_a_norm_act():
    import dataclasses

    from space.blocks.families import DenseLayer
    from space.errors import ConvspaceError
    from space.presets import densenet

    cfg = dataclasses.replace(densenet((2, 1, 2, 1), growth=4, stem_width=8, compression=0.75), num_classes=10, drop_path_rate=0.2)
    model = build_network(cfg).train()
    x = torch.randn(2, 3, 64, 64)
    maps = model.forward_intermediates(x, intermediates_only=True)
    # 8 + 2 x 4; 0.75 x 16 = 12, + 4; 0.75 x 16 = 12, + 8; 0.75 x 20 = 15, + 4 -- each transition halves the map
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info] == [16, 16, 20, 19]
    assert [64 // m.shape[-1] for m in maps] == [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    layer = model.stages[0].blocks[1]
    assert isinstance(layer, DenseLayer) and layer.conv1.out_channels == 16 and layer.conv2.out_channels == 4
    inputs = []
    layer.register_forward_hook(lambda module, args, out: inputs.append((args[0], out)))
    model.eval()(x)
    given, out = inputs[0]
    assert torch.equal(out[:, :12], given)  # the layer's input passes on untouched, its 4 new channels after it
    assert [m.drop_prob for m in model.modules() if hasattr(m, "drop_prob")] == pytest.approx([0.2 * i / 5 for i in range(1, 6)])
    assert isinstance(model.stages[3].tail, torch.nn.Module) and model.stages[3].tail.num_features == 19  # DenseNet's norm5 (BN + act)
    assert isinstance(model.stages[2].tail, torch.nn.Identity)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ConvspaceError, match="output_stride: must be 32 for networks with dense stages"):
        build_network(dataclasses.replace(cfg, downsample="strided"), output_stride=16)
