"""The tutorial's torchkeras LightModel and torchkeras.summary, replayed as the tutorial wrote
them (only the import changed): trained by fitkit's fit, and by Lightning's Trainer when
Lightning is installed, with the same numbers both ways.

Owns fitkit.compat.lightmodel and the summary() function; torchkeras's Model and KerasModel
are test_compat_torchkeras.py's.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import fitkit  # noqa: E402
from fitkit.compat import torchkeras  # noqa: E402


def circle_data():
    """The tutorial's data: points inside a ring are positive, in a 70/30 split."""
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(300, 2)), dtype=torch.float32)
    y = (x.norm(dim=1, keepdim=True) < 1.0).float()
    ds_train, ds_valid = TensorDataset(x[:210], y[:210]), TensorDataset(x[210:], y[210:])
    return DataLoader(ds_train, batch_size=50), DataLoader(ds_valid, batch_size=50)


class Net(nn.Module):
    """The tutorial's network."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 4)
        self.fc2 = nn.Linear(4, 8)
        self.fc3 = nn.Linear(8, 1)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return nn.Sigmoid()(self.fc3(x))


class Model(torchkeras.LightModel):
    """The tutorial's class, as written (pl.metrics' accuracy, since removed, by hand)."""

    def shared_step(self, batch) -> dict:
        x, y = batch
        prediction = self(x)
        loss = nn.BCELoss()(prediction, y)
        preds = torch.where(
            prediction > 0.5, torch.ones_like(prediction), torch.zeros_like(prediction)
        )
        acc = (preds == y).float().mean()
        return {"loss": loss, "acc": acc}

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-2)
        lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}


# ---------------------------------------------------------------------- summary
def test_summary_prints_fitkit_table_and_returns_it(capsys):
    text = torchkeras.summary(Net(), input_shape=(2,))
    assert capsys.readouterr().out == text + "\n"
    assert "fc1 (Linear)" in text and "[-1, 8]" in text and "Total params: 61" in text
    assert torchkeras.summary(Net(), (2,)) == text  # torchkeras 2.x: input_shape second
    assert torchkeras.summary(Net(), torch.zeros(3, 2)) == text  # 3.x: input_data second
    embed = nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(20, 1))
    assert "Total params: 221" in torchkeras.summary(
        embed, input_shape=(5,), input_dtype=torch.LongTensor
    )
    assert "net.fc3 (Linear)" in torchkeras.summary(Model(Net()), input_shape=(2,))


def test_summary_errors_name_the_argument():
    with pytest.raises(fitkit.FitkitTypeError, match="summary"):
        torchkeras.summary(Net, input_shape=(2,))
    with pytest.raises(fitkit.FitkitValueError, match="input_shape"):
        torchkeras.summary(Net())
    with pytest.raises(fitkit.FitkitTypeError, match="input_dtype"):
        torchkeras.summary(Net(), input_shape=(2,), input_dtype="float")


# ---------------------------------------------------------------------- LightModel, fitkit's fit
def test_light_model_trains_with_fit_as_the_class_style_does():
    dl_train, dl_valid = circle_data()
    torch.manual_seed(1234)
    model = Model(Net())
    history = model.fit(dl_train, validation_data=dl_valid, epochs=4, verbose=0)

    class Same(fitkit.Model):  # the same steps in fitkit's own class style
        def shared_step(self, batch):
            return Model.shared_step(self, batch)

        def configure_optimizers(self):
            return Model.configure_optimizers(self)

        def parameters(self):
            return self.net.parameters()

    torch.manual_seed(1234)
    same = Same(Net())
    same.compile()
    expected = same.fit(dl_train, validation_data=dl_valid, epochs=4, verbose=0)
    assert history.history == expected.history
    assert history.history["learning_rate"] == [0.01, 0.01, 0.005, 0.005]  # the StepLR, per epoch
    import pandas as pd

    dfhistory = pd.DataFrame(model.history)  # the tutorial reads model.history
    assert list(dfhistory.columns) == ["epoch", "loss", "acc", "val_loss", "val_acc"]
    assert dfhistory["epoch"].tolist() == [0, 1, 2, 3]  # Lightning's current_epoch
    np.testing.assert_allclose(dfhistory["val_loss"], expected.history["val_loss"])
    assert dfhistory["loss"].iloc[-1] < dfhistory["loss"].iloc[0]
    logs = model.evaluate(dl_valid)  # the last epoch's validation, again
    assert logs == pytest.approx(
        {"loss": expected.history["val_loss"][-1], "acc": expected.history["val_acc"][-1]}, rel=1e-6
    )
    assert model.predict(dl_valid).shape == (90, 1)
    model.fit(dl_train, epochs=1, verbose=0)  # the history grows, as across Trainer fits
    dfhistory = pd.DataFrame(model.history)  # one row per epoch: NaN where no validation ran
    assert dfhistory["epoch"].tolist() == [0, 1, 2, 3, 0]
    assert dfhistory["val_loss"].isna().tolist() == [False] * 4 + [True]
    assert "_fitkit" not in dict(model.named_children())  # the module holds the net only
    assert list(model.state_dict()) == [f"net.{k}" for k in Net().state_dict()]


def test_light_model_errors_name_what_is_missing():
    dl_train, _ = circle_data()

    class NoStep(torchkeras.LightModel):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters())

    class NoOptimizer(torchkeras.LightModel):
        shared_step = Model.shared_step

    with pytest.raises(fitkit.FitkitTypeError, match=r"NoStep needs shared_step"):
        NoStep(Net()).fit(dl_train, epochs=1, verbose=0)
    with pytest.raises(fitkit.FitkitTypeError, match=r"NoOptimizer needs configure_optimizers"):
        NoOptimizer(Net()).fit(dl_train, epochs=1, verbose=0)
    with pytest.raises(fitkit.FitkitTypeError, match="no network"):
        Model()(torch.zeros(1, 2))
    with pytest.raises(fitkit.FitkitTypeError, match="LightModel"):
        Model(Net)


def test_without_lightning_light_model_is_a_plain_module(monkeypatch):
    import importlib.util

    from fitkit.compat import lightmodel

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert lightmodel.lightning_module() is nn.Module


# ---------------------------------------------------------------------- Lightning's Trainer
@pytest.mark.slow
def test_the_tutorial_with_lightning_trainer_matches_fitkit_fit(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    import pandas as pd

    dl_train, dl_valid = circle_data()
    pl.seed_everything(1234)
    net = Net()
    model = Model(net)
    assert isinstance(model, pl.LightningModule)
    torchkeras.summary(model, input_shape=(2,))
    ckpt_cb = pl.callbacks.ModelCheckpoint(monitor="val_loss")
    trainer = pl.Trainer(
        max_epochs=4,
        accelerator="cpu",
        callbacks=[ckpt_cb],
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
    )
    trainer.fit(model, dl_train, dl_valid)
    dfhistory = pd.DataFrame(model.history)
    results = trainer.test(model, dl_valid, verbose=False)
    assert ckpt_cb.best_model_path  # the Trainer's checkpoint monitored our val_loss

    pl.seed_everything(1234)
    twin = Model(Net())
    history = twin.fit(dl_train, validation_data=dl_valid, epochs=4, verbose=0)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):  # the same updates
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert dfhistory["epoch"].tolist() == [0, 1, 2, 3]
    for key in ("loss", "acc", "val_loss", "val_acc"):  # means over samples, both ways
        np.testing.assert_allclose(dfhistory[key], history.history[key], rtol=1e-5)
    assert list(results[0]) == ["test_loss", "test_acc"]
    assert results[0]["test_loss"] == pytest.approx(twin.evaluate(dl_valid)["loss"], rel=1e-5)
    sparse = Model(Net())  # validation every second epoch: NaN where it did not run
    pl.Trainer(
        max_epochs=2,
        check_val_every_n_epoch=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(sparse, dl_train, dl_valid)
    assert pd.DataFrame(sparse.history)["val_loss"].isna().tolist() == [True, False]
