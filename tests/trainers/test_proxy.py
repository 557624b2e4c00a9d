import pytest
import torch

from space.errors import ConvspaceError
from tests.conftest import tiny_config
from trainers.data import load_data
from trainers.proxy import ProxySettings, TrainingDiverged, train


def test_digits_split_is_stratified_fixed_per_seed_and_shipped():
    first, again, other = load_data("digits", 32, seed=0), load_data("digits", 32, seed=0), load_data("digits", 32, seed=1)
    assert (len(first.train), len(first.val), first.num_classes, first.in_chans) == (1437, 360, 10, 3)
    assert torch.equal(first.val.tensors[1], again.val.tensors[1]) and not torch.equal(first.val.tensors[1], other.val.tensors[1])
    assert torch.bincount(first.val.tensors[1]).min() >= 35  # every class in the val split (stratified)
    assert first.train.tensors[0].shape[1:] == (3, 32, 32)


def test_missing_data_is_a_clear_user_error(tmp_path):
    with pytest.raises(ConvspaceError, match="data: cifar100 not found: put the extracted python version .cifar-100-python/"):
        load_data("cifar100", 32, data_dir=str(tmp_path))
    (tmp_path / "train").mkdir()
    with pytest.raises(ConvspaceError, match="needs val/ with one folder per class"):
        load_data(str(tmp_path), 32)


def test_proxy_reports_every_epoch_and_is_seeded():
    seen = []
    settings = ProxySettings(epochs=2, data="synthetic", batch_size=16, seed=3)
    result = train(tiny_config(), settings, on_epoch=lambda epoch, acc, seconds: seen.append((epoch, acc)))
    assert [e for e, _ in seen] == [1, 2] and result.accuracy == seen[-1][1] and result.epochs == 2
    assert train(tiny_config(), settings).accuracy == result.accuracy


def test_a_diverging_loss_fails_the_trial_with_its_reason():
    settings = ProxySettings(epochs=1, data="synthetic", batch_size=16, lr=1e12, warmup_epochs=0)
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(tiny_config(layer_scale_init=0.0, norm="bn", conv_bias=False), settings)
