"""A found network as a detector's backbone: timm features_only -> torchvision FPN -> FCOS, trained on synthetic boxes.

The step after `cli.py export`: the exported entry is built by timm with `features_only=True, out_indices=...`, its
maps feed torchvision's FeaturePyramidNetwork (with FCOS's P6/P7) and FCOS's head, a few training steps run on a
small synthetic box data set made here (losses printed), and the trained detector predicts boxes in eval mode.
First it prints the backbone the YOLO way, as YOLOv5's model YAML reads ConvNeXt's four stages: one row per part,
`from` (the rows it takes), `number` (its blocks), `module` and `args` (in and out channels, stride) -- what the
network's `feature_info` gives -- then the neck and head rows that take the chosen stages.

    python examples/detector_backbone.py --model my_net                 # an entry `cli.py export` wrote (or convspace_<preset>)
    python examples/detector_backbone.py --model convspace_densenet121 --image-size 256 --steps 50
    python examples/detector_backbone.py --smoke                        # small and fast (the test runs this)

Without --model the script exports one itself, as `cli.py export` would from a study: a network of the default space
fitted by the search's budget solver to --budget FLOPs counted at the detector's --image-size (what
`search --cost-resolution` does), written to a temporary zoo folder and registered with timm. Nothing is downloaded
(weights=None, weights_backbone=None: every weight starts from its init).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project, when run as a script from anywhere

CLASSES = ("red", "green", "blue")  # one class per colour; label 0 is FCOS's background, as torchvision counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a timm name registered by nas.export.zoo: an exported entry or convspace_<preset> "
                                        "(default: export a network of the default space fitted to --budget)")
    parser.add_argument("--budget", default="1.5G", help="FLOPs of the exported network at --image-size (default 1.5G)")
    parser.add_argument("--image-size", type=int, default=256, help="the detector's input side (default 256)")
    parser.add_argument("--out-indices", default="1,2,3", help="the stages that feed the pyramid (default 1,2,3: strides 8, 16, 32)")
    parser.add_argument("--fpn-channels", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-blocks", type=int, help="export only a network of at most this many blocks (default: any)")
    parser.add_argument("--smoke", action="store_true", help="small and fast: 64 px, 3 steps of 4 images, a 30 MFLOPs network "
                                                             "of at most 12 blocks")
    args = parser.parse_args(argv)
    if args.smoke:
        args.image_size, args.steps, args.batch_size, args.fpn_channels = 64, 3, 4, 32
        args.budget = "30M" if args.model is None else args.budget
        args.max_blocks = args.max_blocks or 12  # on a CPU a step costs per layer more than per FLOP at this size
    args.out_indices = tuple(int(i) for i in args.out_indices.split(","))
    return args


def export_fitted_network(budget: str, resolution: int, seed: int, folder: Path, max_blocks: int | None = None) -> tuple[str, Any]:
    """Draw shapes of the default space until the budget solver fits one to `budget` at `resolution` (the search's
    proposals, without the training; with at most `max_blocks` blocks where given), write it as a model-factory entry
    into `folder` and register it with timm."""
    from nas.export.zoo import import_entry, write_entry
    from space.choices import SeededSuggester, Space
    from space.cost import parse_flops
    from space.fitting import Band, propose

    space, rng = Space.from_yaml("default"), random.Random(seed)
    band = Band(parse_flops(budget), resolution=resolution, classes=1000)
    for _ in range(1000):
        proposal = propose(space, SeededSuggester(rng), band)
        if proposal.refusal is None and (max_blocks is None or sum(s.depth for s in proposal.config.stages) <= max_blocks):
            break
    else:
        raise SystemExit(f"error: no shape of the default space fits {budget} at {resolution} px"
                         + (f" in at most {max_blocks} blocks" if max_blocks else ""))
    name = "detector_backbone_example"
    record = {"study": "examples/detector_backbone.py", "trial": f"seed {seed}", "resolution": resolution,
              "flops": proposal.cost.flops, "params": proposal.cost.params}
    import_entry(write_entry(name, proposal.config, folder, record))
    return name, proposal.config


def registered_config(name: str) -> Any:
    """The ArchConfig of a preset entry (convspace_<preset>) or of an entry `cli.py export` wrote."""
    import nas.export.zoo  # registers the presets and the entries in studies/exports (and $CONVSPACE_ZOO) with timm
    from nas.export.entries import find_entry
    from space.config import ArchConfig
    from space.presets import PRESETS

    preset = name.removeprefix(nas.export.zoo.PRESET_PREFIX)
    if name.startswith(nas.export.zoo.PRESET_PREFIX) and preset in PRESETS:
        return PRESETS[preset]
    entry = find_entry(name)
    if entry is None:
        raise SystemExit(f"error: --model {name!r} is neither a preset entry (convspace_<preset>) nor an exported entry")
    return ArchConfig.from_dict(entry["config"])


def build_detector(name: str, out_indices: tuple[int, ...], fpn_channels: int, image_size: int) -> tuple[Any, Any]:
    """FCOS on the timm features of `name`: the maps of `out_indices` -> FPN (+ P6, P7 from P5) -> FCOS's head."""
    import timm
    import torch
    from torch import nn
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    class Backbone(nn.Module):
        """What torchvision's detectors take: a module giving an ordered dict of maps, all `out_channels` wide."""

        def __init__(self) -> None:
            super().__init__()
            self.body = timm.create_model(name, features_only=True, out_indices=out_indices)  # weights: none, its own init
            self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), fpn_channels,
                                             extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
            self.out_channels = fpn_channels

        def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
            return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(self.body(x))))

    backbone = Backbone()
    levels = len(out_indices) + 2  # the chosen stages, then P6 and P7
    # FCOS: one point per location, sized as its level's stride (torchvision's default 8..128 for strides 8..128); a
    # level learns the boxes of 4 to 8 times that size
    strides = backbone.body.feature_info.reduction()
    anchors = AnchorGenerator(tuple((r,) for r in strides) + ((2 * strides[-1],), (4 * strides[-1],)), ((1.0,),) * levels)
    detector = FCOS(backbone, num_classes=len(CLASSES) + 1, min_size=image_size, max_size=image_size, anchor_generator=anchors,
                    score_thresh=0.05, detections_per_img=10, topk_candidates=100)
    return detector, backbone


def synthetic_boxes(n: int, size: int, seed: int) -> tuple[Any, list[dict[str, Any]]]:
    """`n` noisy grey images with 1-3 filled rectangles each, coloured by class, and their boxes (x1, y1, x2, y2)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = 0.5 + 0.1 * torch.randn(n, 3, size, size, generator=g)
    targets = []
    for image in images:
        boxes, labels = [], []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            w, h = (int(v) for v in torch.randint(size // 6, size // 2, (2,), generator=g))
            x, y = int(torch.randint(0, size - w, (1,), generator=g)), int(torch.randint(0, size - h, (1,), generator=g))
            label = int(torch.randint(0, len(CLASSES), (1,), generator=g))
            image[:, y:y + h, x:x + w] = 0.1
            image[label, y:y + h, x:x + w] = 0.9
            boxes.append([x, y, x + w, y + h])
            labels.append(label + 1)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return images.clamp(0, 1), targets


def stage_table(name: str, cfg: Any, feature_info: Any, out_indices: tuple[int, ...], fpn_channels: int) -> list[tuple[Any, ...]]:
    """YOLO-style rows (index, from, number, module, args) of the backbone, from its feature_info, then the neck and head.

    Backbone rows: the stem, then one row per stage: its blocks (`number`), its family, and args [in, out, stride]
    where `out` and `stride` are feature_info's num_chs and reduction. The neck row takes the rows of `out_indices`."""
    rows = [(0, -1, 1, f"{name}.stem ({cfg.stem.type})", [cfg.in_chans, cfg.stem.width, 4])]
    previous = cfg.stem.width
    for i, (info, stage) in enumerate(zip(feature_info, cfg.stages)):
        family = stage.block if stage.block != "bottleneck" else f"bottleneck/{stage.conv}"
        rows.append((i + 1, -1, stage.depth, f"{name}.{info['module']} ({family})", [previous, info["num_chs"], info["reduction"]]))
        previous = info["num_chs"]
    taps = [i + 1 for i in out_indices]
    neck = len(rows)
    rows.append((neck, taps, 1, "torchvision.ops.FeaturePyramidNetwork + LastLevelP6P7",
                 [[feature_info[i]["num_chs"] for i in out_indices], fpn_channels]))
    rows.append((neck + 1, neck, 1, "torchvision.models.detection.FCOSHead", [fpn_channels, len(CLASSES) + 1]))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    from space.cost import arch_cost
    from space.verify import fvcore_flops

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as zoo:  # an entry exported here lives as long as the run (timm keeps it registered)
        if args.model:
            name, cfg = args.model, registered_config(args.model)
        else:
            name, cfg = export_fitted_network(args.budget, args.image_size, args.seed, Path(zoo), args.max_blocks)
        detector, backbone = build_detector(name, args.out_indices, args.fpn_channels, args.image_size)

    cost = arch_cost(dataclasses.replace(cfg, num_classes=1000), args.image_size)
    trunk = fvcore_flops(backbone.body, args.image_size, cfg.in_chans)
    print(f"backbone {name}: {cost.params / 1e6:.2f} M params as a 1000-class classifier, {cost.flops / 1e9:.3f} GFLOPs at "
          f"{args.image_size} px (the count `search --cost-resolution {args.image_size}` budgets); its features_only trunk "
          f"(stages up to {max(args.out_indices)}) {trunk / 1e9:.3f} GFLOPs (fvcore)")
    print(f"\n{'':>3} {'from':>10} {'n':>3}  {'module':<58} args")
    every_stage = backbone.body.feature_info.get_dicts(idx=list(range(len(cfg.stages))))  # not only the ones taken
    for index, source, number, module, module_args in stage_table(name, cfg, every_stage,
                                                                    args.out_indices, args.fpn_channels):
        print(f"{index:>3} {str(source):>10} {number:>3}  {module:<58} {module_args}")

    images, targets = synthetic_boxes(max(args.batch_size * 2, 8), args.image_size, args.seed)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=args.lr, weight_decay=1e-4)
    detector.train()
    print(f"\ntraining FCOS for {args.steps} steps of {args.batch_size} synthetic {args.image_size} px images")
    for step in range(args.steps):
        picked = [(step * args.batch_size + j) % len(images) for j in range(args.batch_size)]
        losses = detector([images[j] for j in picked], [targets[j] for j in picked])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        print(f"step {step + 1:>3}: loss {total.item():.4f} (" + ", ".join(f"{k} {v.item():.4f}" for k, v in losses.items()) + ")")

    detector.eval()
    with torch.no_grad():
        predictions = detector([images[0], images[1]])
    for i, prediction in enumerate(predictions):
        print(f"\nimage {i}: truth " + "; ".join(f"{CLASSES[int(label) - 1]} {[round(v) for v in box.tolist()]}"
                                                 for box, label in zip(targets[i]["boxes"], targets[i]["labels"])))
        for box, score, label in zip(prediction["boxes"][:5], prediction["scores"][:5], prediction["labels"][:5]):
            kind = CLASSES[int(label) - 1] if 1 <= int(label) <= len(CLASSES) else f"class {int(label)}"
            print(f"  predicted {kind:<8} {[round(v, 1) for v in box.tolist()]} score {score.item():.3f}")
    print(f"\ndone in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
