"""The proxy's batches: every training image once per epoch, normalised as before, augmented batch-wise and seeded."""

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from tests.conftest import tiny_config
from trainers.batches import Batches, crop_and_flip, draw_crops, normalise
from trainers.proxy import ProxySettings, train

CPU = torch.device("cpu")


def numbered(count: int, size: int = 8) -> TensorDataset:
    """uint8 images whose every pixel is their index (labels too), so a batch shows which images it holds."""
    return TensorDataset(torch.arange(count, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, size, size).contiguous(),
                         torch.arange(count))


def test_an_epoch_serves_each_image_of_the_subset_once_in_a_seeded_order():
    subset = torch.tensor([7, 3, 11, 5, 0, 9])
    batches = Batches(numbered(12), 4, CPU, indices=subset, generator=torch.Generator().manual_seed(0))
    epochs = [[y.tolist() for _, y in batches] for _ in range(2)]
    assert len(batches) == 2 and [len(b) for b in epochs[0]] == [4, 2]
    assert all(sorted(sum(e, [])) == sorted(subset.tolist()) for e in epochs) and epochs[0] != epochs[1]  # reshuffled
    again = Batches(numbered(12), 4, CPU, indices=subset, generator=torch.Generator().manual_seed(0))
    assert [y.tolist() for _, y in again] == epochs[0]
    dropped = Batches(numbered(12), 4, CPU, indices=subset, generator=torch.Generator().manual_seed(0), drop_last=True)
    assert len(dropped) == 1 and [len(y) for _, y in dropped] == [4]
    for x, y in Batches(numbered(12), 5, CPU):  # in order without a generator; pixels match labels after normalising
        assert torch.equal(x[:, 0, 0, 0], y.float() * 2 / 255 - 1)


def test_uint8_images_are_normalised_as_the_proxy_always_did_and_floats_pass_through():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.allclose(normalise(x), (x.float() / 255 - 0.5) / 0.5, atol=1e-6)
    floats = torch.rand(2, 3, 4, 4)
    assert normalise(floats) is floats


def test_crop_and_flip_is_a_random_crop_of_the_reflect_padded_image_mirrored():
    x = torch.rand(16, 3, 12, 10)
    dy, dx, flip = draw_crops(16, x.shape[-2:], torch.Generator().manual_seed(1))
    assert dy.abs().max() <= 1 and flip.any() and not flip.all()  # pad 12 // 8 = 1
    out = crop_and_flip(x, dy, dx, flip)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    for i in range(16):
        crop = padded[i, :, 1 + dy[i, 0]:1 + dy[i, 0] + 12, 1 + dx[i, 0]:1 + dx[i, 0] + 10]
        assert torch.equal(out[i], crop.flip(-1) if flip[i, 0] else crop)
    big = torch.rand(4, 3, 32, 32)
    shifts = torch.full((4, 1), 4)
    assert torch.equal(crop_and_flip(big, shifts, -shifts, torch.zeros(4, 1, dtype=torch.bool)),
                       F.pad(big, (4, 4, 4, 4), mode="reflect")[:, :, 8:40, 0:32])  # 4 px at 32, as the CIFAR recipes
    assert torch.equal(crop_and_flip(x.to(torch.uint8), dy, dx, flip), out.to(torch.uint8))  # on uint8 as on floats


def test_augmentation_is_seeded_and_left_out_where_asked():
    data = TensorDataset(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    plain = torch.cat([x for x, _ in Batches(data, 4, CPU)])

    def served(seed: int) -> torch.Tensor:
        return torch.cat([x for x, _ in Batches(data, 4, CPU, augment_seed=seed)])

    assert torch.equal(served(0), served(0)) and not torch.equal(served(0), served(1)) and not torch.equal(served(0), plain)
    assert torch.equal(torch.cat([x for x, _ in Batches(data, 4, CPU, augment_seed=0).epoch(augment=False)]), plain)


def test_augment_defaults_on_for_photographs_and_off_for_digits_and_is_part_of_the_identity_unlike_the_cache(tmp_path):
    assert ProxySettings(data="cifar10").augment and not ProxySettings(data="digits").augment
    assert ProxySettings(data="digits", augment=True).augment
    settings = ProxySettings(cache_dir=str(tmp_path / "c"))
    assert settings.cache_dir == str(tmp_path / "c") and "cache_dir" not in settings.identity() and "threads" not in settings.identity()
    assert settings.identity()["augment"] is False


def test_the_proxy_augments_every_training_step_and_nothing_else_seeded(monkeypatch):
    import trainers.batches

    crops = []
    monkeypatch.setattr(trainers.batches, "crop_and_flip", lambda x, *drawn: crops.append(len(x)) or crop_and_flip(x, *drawn))
    settings = ProxySettings(epochs=2, data="synthetic", batch_size=16, augment=True, bn_batches=2)  # 48 images: 3 steps
    result = train(tiny_config(), settings)
    assert crops == [16] * 6  # neither BatchNorm's re-estimation nor the evaluation sees augmented images
    assert train(tiny_config(), settings).accuracy == result.accuracy
    crops.clear()
    train(tiny_config(), ProxySettings(epochs=1, data="synthetic", batch_size=16))  # synthetic: off by default
    assert crops == []
