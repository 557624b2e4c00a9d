"""An ImageFolder tree as proxy data: loaded at the proxy resolution, trained on, and refused when malformed."""

import pytest
import torch
from PIL import Image

from space.errors import ConvspaceError
from tests.conftest import tiny_config
from trainers.data import load_data
from trainers.proxy import ProxySettings, train


def image_tree(root, layout: dict[str, dict[str, int]]):
    """root/<split>/<class>/<i>.png, each class a flat colour so that a tiny net can tell them apart."""
    colours = {"cat": (200, 30, 30), "dog": (30, 200, 30), "owl": (30, 30, 200)}
    for split, classes in layout.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("RGB", (20 + i, 16), colours[name]).save(folder / f"{i}.png")
    return root


def test_an_image_folder_tree_loads_at_the_proxy_resolution_and_trains(tmp_path):
    root = image_tree(tmp_path, {"train": {"cat": 6, "dog": 6}, "val": {"cat": 2, "dog": 2}})
    data = load_data(str(root), 32, cache_dir=str(tmp_path / "cache"))
    assert (len(data.train), len(data.val), data.num_classes, data.in_chans) == (12, 4, 2, 3)
    image, label = data.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == 0
    assert tuple(image[:, 0, 0]) == (200, 30, 30)  # the cat's flat colour, decoded
    result = train(tiny_config(num_classes=2), ProxySettings(epochs=1, data=str(root), batch_size=4, train_images=None,
                                                             cache_dir=str(tmp_path / "cache")))
    assert result.epochs == 1 and 0 <= result.accuracy <= 1


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "owl": 1}}, "must hold the same class folders (only in one: dog, owl)"),
        ({"train": {"cat": 2, "dog": 0}, "val": {"cat": 1, "dog": 1}}, "data: Found no valid file for the classes dog"),
        # one class "trained" to accuracy 1.0 and the search exited 0 (issue 23)
        ({"train": {"cat": 3}, "val": {"cat": 1}}, "/train holds 1 class folder (cat): a classifier needs at least two"),
        ({"train": {}, "val": {}}, "/train holds 0 class folders: a classifier needs at least two"),
        ({"train": {"cat": 2, "dog": 2}, "val": {"cat": 0, "dog": 0}}, "data: Found no valid file for the classes cat, dog"),  # a split with no images
    ],
)
def test_a_malformed_image_folder_is_a_one_line_user_error(tmp_path, layout, message):
    with pytest.raises(ConvspaceError) as refused:
        load_data(str(image_tree(tmp_path, layout)), 32, cache_dir=str(tmp_path / "cache"))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_one_class_is_refused_by_the_command_line_in_one_line_before_anything_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = image_tree(tmp_path / "imgs", {"train": {"cat": 2}, "val": {"cat": 1}})
    cli = Path(sys.executable).with_name("convspace")
    run = subprocess.run([str(cli), "search", "--data", str(root), "--budget", "10MFLOPs", "--study", "one_class"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert (run.returncode, run.stderr) == (2, f"error: data: {root}/train holds 1 class folder (cat): a classifier needs at least two\n")
    assert not (tmp_path / "studies").exists()  # no study was created
