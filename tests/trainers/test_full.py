"""The full-training recipe's settings: every bad value is refused in one line before anything is built."""

import pytest

from space.errors import ConvspaceError
from trainers.full import TrainSettings


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs: must be >= 1, got 0"),
        ("batch_size", 1, "batch-size: must be >= 2, got 1"),
        ("batch_size", 3, "batch-size: mixup/cutmix pair the images of a batch, so it must be even, got 3"),
        ("lr", -1.0, "lr: must be > 0, got -1.0"),
        ("lr", 0.0, "lr: must be > 0, got 0.0"),
        ("warmup_epochs", -1, "warmup-epochs: must be >= 0, got -1"),
        ("resolution", 16, "resolution: must be >= 32 (the network reduces 32x), got 16"),
        ("mixup", -0.5, "mixup: must be >= 0 (0 disables), got -0.5"),
        ("cutmix", -1.0, "cutmix: must be >= 0 (0 disables), got -1.0"),
        ("drop_path", 1.0, "drop-path: must be in [0, 1), got 1.0"),
        ("ema_decay", 1.0, "ema-decay: must be in [0, 1) (0 disables), got 1.0"),
        ("workers", -2, "workers: must be >= 0, got -2"),
    ],
)
def test_bad_settings_are_refused_with_the_field_and_the_allowed_values(field, value, message):
    with pytest.raises(ConvspaceError) as refused:
        TrainSettings(model="convspace_convnext_tiny", **{field: value})
    assert str(refused.value) == message


def test_an_odd_batch_is_fine_without_mixup_and_cutmix():
    assert TrainSettings(model="m", batch_size=3, mixup=0, cutmix=0).batch_size == 3
    assert TrainSettings(model="m", drop_path=0.0, ema_decay=0.0, lr=1e-3, resolution=32).scaled_lr == 1e-3
