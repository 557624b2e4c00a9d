"""Registered entries honour timm's model contract (what timm's train.py, validate.py and feature API expect).

Every block family is checked twice: as its real `convspace_<preset>` entry (the keywords train.py/validate.py
pass, the feature API) and as a freshly exported entry of a tiny variant (everything else, fast on a CPU). The
convs that no preset uses (shuffle, separable, deformable) and dilated stages are checked as tiny variants only.
"""

import copy
import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models._features_fx import get_notrace_functions, get_notrace_modules
from timm.optim import create_optimizer_v2
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

from nas.export.zoo import PRESET_PREFIX, import_entry, write_entry
from space.config import ArchConfig
from space.errors import ConvspaceError
from space.layout import stage_plans
from space.presets import PRESETS, densenet

PRESET_FAMILIES = {"resnet": "resnet50", "resnext": "resnext50_32x4d", "resnest": "resnest50d", "convnext": "convnext_tiny",
                   "conv2former": "conv2former_n", "dense": "densenet121"}
# the other convs and dilation, each on the preset whose family it varies: (preset, stage fields per stage)
VARIANTS = {
    "shuffle": ("resnext50_32x4d", [dict(conv="shuffle")] * 4), "separable": ("resnext50_32x4d", [dict(conv="separable")] * 4),
    "deformable": ("resnext50_32x4d", [dict(conv="deformable")] * 4),
    "dilated": ("resnet50", [dict(dilation=1), dict(dilation=1), dict(dilation=2), dict(dilation=2)]),
}
FAMILIES = [*PRESET_FAMILIES, *VARIANTS]
SIZE = 64  # the final map is 2x2: pooling and unpooled shapes stay distinguishable
TRAIN_PY_KEYWORDS = dict(in_chans=3, num_classes=None, drop_rate=0.0, drop_path_rate=None, drop_block_rate=None, global_pool=None,
                         bn_momentum=None, bn_eps=None, scriptable=None, checkpoint_path=None)  # train.py's defaults


def tiny_preset(preset: str) -> ArchConfig:
    """The preset's family and micro design at test size: 8..128 channels, one block per stage (two in the third)."""
    cfg = PRESETS[preset]
    if cfg.stages[0].block == "dense":  # its widths follow from the growth: 8 + 8, 8 + 8, 8 + 16, 12 + 8
        return dataclasses.replace(densenet((1, 1, 2, 1), growth=8, stem_width=8), num_classes=10)
    widths = (16, 32, 64, 128) if cfg.stages[0].expansion < 1 else (8, 16, 32, 64)  # ResNet bottlenecks narrow 4x inside
    stages = tuple(dataclasses.replace(s, depth=d, width=w, groups=min(s.groups, 4)) for s, d, w in zip(cfg.stages, (1, 1, 2, 1), widths))
    return dataclasses.replace(cfg, stem=dataclasses.replace(cfg.stem, width=8), stages=stages, head_width=min(cfg.head_width, 32), num_classes=10)


def tiny(family: str) -> ArchConfig:
    """The tiny config of a preset family or of a variant."""
    if family in PRESET_FAMILIES:
        return tiny_preset(PRESET_FAMILIES[family])
    preset, changes = VARIANTS[family]
    cfg = tiny_preset(preset)
    return dataclasses.replace(cfg, stages=tuple(dataclasses.replace(s, **c) for s, c in zip(cfg.stages, changes)))


def reductions(family: str) -> list[int]:
    """How much each stage of the tiny config reduces the input (dilated stages keep their input's resolution)."""
    return [plan.reduction for plan in stage_plans(tiny(family))]


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> dict[str, str]:
    """One exported entry per family, written and registered as `cli.py export` does."""
    folder = tmp_path_factory.mktemp("zoo")
    names = {}
    for trial, family in enumerate(FAMILIES):
        names[family] = f"contract_{family}"
        import_entry(write_entry(names[family], tiny(family), folder, {"study": "contract", "trial": trial, "resolution": SIZE}))
    return names


@pytest.fixture()
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 3, SIZE, SIZE)


def final_width(family: str) -> int:
    cfg = tiny(family)
    return cfg.head_width or cfg.stages[-1].width


def final_side(family: str) -> int:
    return SIZE // reductions(family)[-1]


families = pytest.mark.parametrize("family", FAMILIES)


# 1. create_model keywords


@pytest.mark.parametrize("preset", PRESET_FAMILIES.values())
def test_preset_entries_build_with_the_keywords_timm_scripts_pass(preset):
    name = PRESET_PREFIX + preset
    model = timm.create_model(name, **TRAIN_PY_KEYWORDS)
    assert model.num_classes == 1000 and model.drop_rate == 0.0
    features = timm.create_model(name, num_classes=0, global_pool="").eval()  # validate.py --gp '' / a detector's trunk
    with torch.no_grad():
        out = features(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, features.num_features, 1, 1) and features.get_classifier().__class__ is torch.nn.Identity
    getter = timm.create_model(name, features_only=True, feature_cls="getter").eval()
    with torch.no_grad():
        maps = getter(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == getter.feature_info.channels() == [s.width for s in PRESETS[preset].stages]
    assert [64 // m.shape[-1] for m in maps] == getter.feature_info.reduction() == [4, 8, 16, 32]


@families
def test_global_pool_and_num_classes_zero_give_unpooled_or_chosen_pooling(entries, family, x):
    unpooled = timm.create_model(entries[family], num_classes=0, global_pool="").eval()
    assert unpooled(x).shape == (2, final_width(family), final_side(family), final_side(family))
    model = timm.create_model(entries[family], num_classes=0, global_pool="max").eval()
    features = model.forward_features(x)
    pooled = features.amax(dim=(2, 3), keepdim=True)
    norm = getattr(model.head, "norm", None)  # ConvNeXt normalises the pooled features
    expected = (norm(pooled) if norm is not None else pooled).flatten(1)
    assert torch.allclose(model(x), expected, atol=1e-6)


@families
def test_drop_rate_is_dropout_before_the_classifier(entries, family, x):
    model = timm.create_model(entries[family], num_classes=5, drop_rate=0.5)
    assert model.drop_rate == 0.5 and model.head.drop.p == 0.5
    model.train()
    assert not torch.allclose(model(x), model(x))  # no drop path here: only the dropout differs between the two
    model.eval()
    assert torch.equal(model(x), model(x))
    plain = timm.create_model(entries[family], num_classes=5).train()
    assert torch.equal(plain(x), plain(x))


@families
def test_drop_path_rate_and_in_chans(entries, family):
    model = timm.create_model(entries[family], drop_path_rate=0.2, in_chans=1, num_classes=3)
    assert max(m.drop_prob for m in model.modules() if isinstance(m, DropPath)) == pytest.approx(0.2)
    first_conv = model.get_submodule(model.pretrained_cfg["first_conv"])
    assert first_conv.weight.shape[1] == 1
    assert model(torch.randn(2, 1, SIZE, SIZE)).shape == (2, 3)


@pytest.mark.parametrize("family", ["resnet", "resnext", "resnest", "shuffle", "separable", "deformable", "dilated"])
def test_zero_init_last_as_timm_resnet(entries, family):
    def zeroed_norms(model: torch.nn.Module) -> int:
        return sum(bool((m.weight == 0).all()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    assert zeroed_norms(timm.create_model(entries[family])) == 5  # the last BN of each of the 5 blocks
    assert zeroed_norms(timm.create_model(entries[family], zero_init_last=False)) == 0


def test_device_dtype_and_output_stride_keywords(entries):
    meta = timm.create_model(entries["conv2former"], device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    half = timm.create_model(entries["resnet"], dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert timm.create_model(entries["convnext"], output_stride=32).feature_info[-1]["reduction"] == 32
    with pytest.raises(ConvspaceError, match="output_stride: must be 32 for networks with downsample separate"):
        timm.create_model(entries["convnext"], output_stride=16)
    # a detector's trunk: timm dilates the last stages as its own ResNet does, and features_only reports it
    features = timm.create_model(entries["resnet"], features_only=True, output_stride=8)
    assert features.feature_info.reduction() == [4, 8, 8, 8]
    assert [SIZE // m.shape[-1] for m in features(torch.randn(1, 3, SIZE, SIZE))] == [4, 8, 8, 8]


@pytest.mark.parametrize("keyword", [dict(drop_block_rate=0.1), dict(bn_momentum=0.1), dict(act_layer="relu"), dict(depths=(1, 1, 1, 1))])
def test_other_keywords_are_refused(entries, keyword):
    with pytest.raises(TypeError, match=f"unexpected model arguments: \\['{next(iter(keyword))}'\\]"):
        timm.create_model(entries["resnet"], **keyword)


# 2. forward_intermediates / prune_intermediate_layers / feature_cls='getter'


@families
def test_forward_intermediates_agree_with_forward_and_features_only(entries, family, x):
    model = timm.create_model(entries[family]).eval()
    final, intermediates = model.forward_intermediates(x)
    assert torch.allclose(model.forward_head(final), model(x), atol=1e-5)
    assert [tuple(t.shape) for t in intermediates] == [(2, f["num_chs"], SIZE // f["reduction"], SIZE // f["reduction"]) for f in model.feature_info]
    features = timm.create_model(entries[family], features_only=True).eval()
    # timm's feature wrapper names the flattened modules stem_0, stages_0, ...: same weights, its own names
    features.load_state_dict({k.replace(".", "_", 1): v for k, v in model.state_dict().items() if k.startswith(("stem.", "stages."))})
    maps = features(x)
    assert len(maps) == len(intermediates) == len(model.feature_info) == 4
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(maps, intermediates))

    only = model.forward_intermediates(x, intermediates_only=True, norm=True)
    assert all(torch.equal(a, b) for a, b in zip(only, intermediates)) and len(only) == 4
    last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape for t in last_two] == [t.shape for t in intermediates[2:]]
    early, chosen = model.forward_intermediates(x, indices=[0, -2], stop_early=True)
    assert torch.allclose(early, intermediates[2]) and [t.shape for t in chosen] == [intermediates[0].shape, intermediates[2].shape]


@families
def test_getter_features_hold_only_what_the_maps_use(entries, family, x):
    full = sum(p.numel() for p in timm.create_model(entries[family]).parameters())
    getter = timm.create_model(entries[family], features_only=True, feature_cls="getter", out_indices=(1, 3))
    cfg = tiny(family)
    maps = getter(x)
    assert [m.shape[1] for m in maps] == getter.feature_info.channels() == [cfg.stages[1].width, cfg.stages[3].width]
    assert [SIZE // m.shape[-1] for m in maps] == getter.feature_info.reduction() == [reductions(family)[1], reductions(family)[3]]
    assert sum(p.numel() for p in getter.parameters()) < full  # head (and Conv2Former's pre-pool conv) pruned
    sum(m.mean() for m in maps).backward()
    assert all(p.grad is not None for p in getter.parameters())  # no unused parameters (DDP without find_unused)
    scripted = torch.jit.script(getter.eval())
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(scripted(x), getter(x)))


@families
def test_prune_intermediate_layers_keeps_the_taken_stages(entries, family, x):
    model = timm.create_model(entries[family]).eval()
    reference = copy.deepcopy(model).forward_intermediates(x, intermediates_only=True)
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert len(model.stages) == 2 and model.num_features == model.feature_info[1]["num_chs"]
    assert torch.allclose(model(x), reference[1], atol=1e-6)  # no head left: forward gives the last kept map
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(model.forward_intermediates(x, indices=2, intermediates_only=True), reference[:2]))


# 3. set_grad_checkpointing / group_matcher


@families
def test_grad_checkpointing_recomputes_blocks_and_keeps_gradients(entries, family, x):
    model = timm.create_model(entries[family]).train()
    target = torch.tensor([1, 7])

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        F.cross_entropy(model(x), target).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = gradients()
    calls = []
    model.stages[2].blocks[1].register_forward_pre_hook(lambda *_: calls.append(1))  # pre: recomputation may stop early
    model.set_grad_checkpointing()
    checkpointed = gradients()
    assert len(calls) == 2  # the block ran again in backward: its activations were not kept
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)
    model.set_grad_checkpointing(False)
    calls.clear()
    gradients()
    assert len(calls) == 1


@families
def test_layer_decay_scales_lr_from_stem_to_head(entries, family):
    model = timm.create_model(entries[family])
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.8)
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(scale) == len(names) == sum(len(g["params"]) for g in optimizer.param_groups)
    cfg = tiny(family)
    layers = 1 + sum(s.depth for s in cfg.stages) + 1  # stem, blocks (Conv2Former's pre-pool conv with the last), head
    assert scale[id(names["stem.0.conv.weight"])] == pytest.approx(0.8 ** (layers - 1))
    assert scale[id(model.get_classifier().weight)] == 1.0
    blocks = [scale[id(names[f"stages.{i}.blocks.{j}.{rest}"])] for i, j, rest in _first_param_per_block(names)]
    assert blocks == sorted(blocks) and len(set(blocks)) == len(blocks)  # deeper blocks, larger LR
    if cfg.head_width:
        assert scale[id(names["final_conv.conv.weight"])] == blocks[-1]
    coarse = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) == 1 + len(cfg.stages) + 1  # stem, stages, the rest (head)


def _first_param_per_block(names: dict[str, torch.nn.Parameter]) -> list[tuple[int, int, str]]:
    seen = {}
    for name in names:
        parts = name.split(".")
        if parts[0] == "stages" and parts[2] == "blocks":
            seen.setdefault((int(parts[1]), int(parts[3])), ".".join(parts[4:]))
    return [(i, j, rest) for (i, j), rest in sorted(seen.items())]


# 4. fx then TorchScript, and what already held


def _fx_model(model: torch.nn.Module, train: bool) -> torch.nn.Module:
    """timm's test recipe (tests/test_models.py _create_fx_model): trace with timm's leaf modules, return the output."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    assert NodePathTracer(**tracer_kwargs).trace(model) is not None
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs)


@families
def test_fx_then_torchscript_and_fx_backward(entries, family, x):
    model = timm.create_model(entries[family], scriptable=True).eval()
    scripted = torch.jit.script(_fx_model(model, train=False))
    with torch.inference_mode():
        (out,) = scripted(x).values()
        assert torch.allclose(out, model(x), atol=1e-5)
    fx_train = _fx_model(timm.create_model(entries[family]).train(), train=True)
    (out,) = fx_train(x).values()
    out.mean().backward()
    assert all(p.grad is not None for p in fx_train.parameters())


@families
def test_plain_torchscript_reset_classifier_and_pretrained_cfg(entries, family, x):
    model = timm.create_model(entries[family]).eval()
    assert torch.allclose(torch.jit.script(model)(x), model(x), atol=1e-5)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, SIZE, SIZE) and "study=contract" in cfg["notes"]
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    model.reset_classifier(3, "max")
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0, "")
    assert model(x).shape == (2, final_width(family), final_side(family), final_side(family))
