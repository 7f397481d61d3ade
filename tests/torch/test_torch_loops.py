"""Torch loops as a hand-written loop runs them: loaders opened once per epoch, modes kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_classes

import fitkit


def _loader(x, y, seed_shuffle=True):
    ds = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    return torch.utils.data.DataLoader(ds, batch_size=16, shuffle=seed_shuffle)


def _net():
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )


def test_shuffled_loader_run_equals_the_hand_written_loop(torch_kit):
    x, y = make_classes(n=96)
    fitkit.set_seed(0)
    net = _net()
    loader = _loader(x, y)
    model = fitkit.Model(net, device="cpu")  # dropout draws from the device's generator
    model.compile(torch.optim.SGD(net.parameters(), lr=0.1), torch.nn.CrossEntropyLoss())
    history = model.fit(loader, epochs=3, verbose=0)

    fitkit.set_seed(0)
    ref = _net()
    ref_loader = _loader(x, y)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    epoch_losses = []
    for _ in range(3):
        ref.train()
        total, count = 0.0, 0
        for xb, yb in ref_loader:
            loss = loss_fn(ref(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(xb), count + len(xb)
        epoch_losses.append(total / count)
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.cpu(), b.cpu())
    np.testing.assert_allclose(history.history["loss"], epoch_losses, rtol=1e-6)


def test_a_loader_is_opened_once_per_epoch(torch_kit):
    x, y = make_classes(n=64)
    opened = []

    class Counting(torch.utils.data.DataLoader):
        def __iter__(self):
            opened.append(1)
            return super().__iter__()

    ds = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    model = fitkit.Model(torch_kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy")
    model.fit(Counting(ds, batch_size=16, shuffle=True), epochs=3, verbose=0)
    assert len(opened) == 3
    opened.clear()
    model.validate(Counting(ds, batch_size=16))
    assert len(opened) == 1


@pytest.mark.parametrize("start_training", [True, False])
def test_train_eval_mode_is_restored_after_each_call(torch_kit, start_training):
    x, y = make_classes(n=64)
    net = _net()
    net.train(start_training)
    model = fitkit.Model(net)
    model.compile("sgd", "cross_entropy")
    model.predict(x)
    assert net.training is start_training
    model.validate(x, y)
    assert net.training is start_training
    model.fit(x, y, epochs=1, verbose=0, validation_split=0.25)
    assert net.training is start_training
    model.predict_on_batch(x[:4])
    assert net.training is start_training


def test_bf16_autocast_context_in_a_custom_step(torch_kit):
    x, y = make_classes(n=64)
    seen = []

    class Custom(fitkit.Model):
        def train_step(self, batch):
            x, y, _ = self.unpack_batch(batch)
            with self.autocast():
                y_pred = self.net(x)
                loss = self.compute_loss(x, y, y_pred.float())
            seen.append(y_pred.dtype)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return {"loss": loss}

    model = Custom(torch_kit.mlp(4, 3))
    model.compile("adam", "cross_entropy", precision="bf16")
    model.fit(x, y, epochs=1, verbose=0)
    assert seen and all(d == torch.bfloat16 for d in seen)


def test_large_data_is_shuffled_batch_by_batch_with_the_same_result(torch_kit, monkeypatch):
    """Above a size, each batch is gathered through the permutation instead of copying the
    whole data set per epoch: the batches, and so the weights, are the same."""
    from fitkit.torch import data

    x, y = make_classes(n=200)
    runs = []
    for limit in (data.WHOLE_GATHER_BYTES, 0):
        monkeypatch.setattr(data, "WHOLE_GATHER_BYTES", limit)
        fitkit.set_seed(3)
        net = torch_kit.mlp(4, 3)
        model = fitkit.Model(net)
        model.compile(torch.optim.SGD(net.parameters(), lr=0.1), "cross_entropy")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        runs.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a.cpu(), b.cpu())
