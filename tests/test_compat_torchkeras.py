"""fitkit.compat.torchkeras: the tutorial's torchkeras 2.x code, and torchkeras 4's KerasModel,
replayed with only the import changed, on small generated images (no downloads).

Owns the compat layer's contract: same numbers as fitkit.Model.fit, torchkeras's printed
layout and DataFrame columns, errors that name the argument. The training loop itself is
tested by the facade's tests.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import fitkit  # noqa: E402
from fitkit.compat import torchkeras  # noqa: E402

RULE = re.compile(r"^={80}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


# ---------------------------------------------------------------------- the tutorial's pieces
def images(n: int, seed: int, binary: bool = False):
    """28x28 one-channel images: class 1 has a faint bright square in the middle."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.3, (n, 1, 28, 28)).astype("float32")
    x[y == 1, :, 8:20, 8:20] += 0.25
    labels = torch.from_numpy(y.astype("float32")[:, None]) if binary else torch.from_numpy(y)
    return torch.from_numpy(x), labels


def loaders(binary: bool = False, batch_size: int = 32):
    """200 training and 70 validation images (last batches smaller), in order."""
    train, val = TensorDataset(*images(200, 0, binary)), TensorDataset(*images(70, 1, binary))
    return DataLoader(train, batch_size=batch_size), DataLoader(val, batch_size=batch_size)


class CnnModel(nn.Module):
    """The tutorial's CNN (smaller channels)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Conv2d(1, 8, kernel_size=3),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(8, 16, kernel_size=5),
                nn.MaxPool2d(2, 2),
                nn.Dropout2d(p=0.1),
                nn.AdaptiveMaxPool2d((1, 1)),
                nn.Flatten(),
                nn.Linear(16, 8),
                nn.ReLU(),
                nn.Linear(8, 2),
            ]
        )

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def accuracy_score(y_true, y_pred) -> np.float64:
    """sklearn.metrics.accuracy_score's result for labels (scikit-learn is not installed)."""
    return np.float64(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def accuracy(y_pred, y_true):
    """The tutorial's metric: numpy through .numpy(), returns a numpy float."""
    y_pred_cls = torch.argmax(nn.Softmax(dim=1)(y_pred), dim=1).data
    return accuracy_score(y_true.numpy(), y_pred_cls.numpy())


class Net(torchkeras.Model):
    """The tutorial's subclass form: a binary CNN with a sigmoid output."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=5)
        self.dropout = nn.Dropout2d(p=0.1)
        self.adaptive_pool = nn.AdaptiveMaxPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(16, 8)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(8, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        x = self.flatten(self.adaptive_pool(self.dropout(x)))
        return self.sigmoid(self.linear2(self.relu(self.linear1(x))))


def binary_accuracy(y_pred, y_true):
    """The tutorial's binary metric: a tensor."""
    y_pred = torch.where(y_pred > 0.5, torch.ones_like(y_pred), torch.zeros_like(y_pred))
    return torch.mean(1 - torch.abs(y_true - y_pred))


# ---------------------------------------------------------------------- torchkeras 2.x
def test_wrap_form_trains_as_fitkit_model_does(capsys):
    """Same net, seed and data: the compat layer gives fitkit.Model.fit's numbers."""
    dl_train, dl_val = loaders()
    torch.manual_seed(0)
    model = torchkeras.Model(CnnModel())
    model.compile(
        loss_func=nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        metrics_dict={"accuracy": accuracy},
    )
    dfhistory = model.fit(3, dl_train=dl_train, dl_val=dl_val, log_step_freq=3)

    torch.manual_seed(0)
    net = CnnModel()
    same = fitkit.Model(net, device="cpu")  # torchkeras 2.x stays on the CPU without device=
    same.compile(
        optimizer=torch.optim.Adam(net.parameters(), lr=0.01),
        loss=nn.CrossEntropyLoss(),
        metrics={"accuracy": accuracy},
    )
    history = same.fit(dl_train, epochs=3, validation_data=dl_val, verbose=0)

    assert list(dfhistory.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert dfhistory["epoch"].tolist() == [1, 2, 3]
    expected = history.df.drop(columns="learning_rate")
    np.testing.assert_allclose(dfhistory.to_numpy(float), expected.to_numpy(float), rtol=1e-6)
    assert dfhistory["val_accuracy"].iloc[-1] > 0.9  # it learned
    logs = model.evaluate(dl_val)
    assert list(logs) == ["val_loss", "val_accuracy"]
    assert logs["val_accuracy"] == pytest.approx(same.validate(dl_val)["accuracy"])


def test_metric_values_are_exact_over_samples():
    """A numpy-float metric over batches of 32, 32 and 6: weighted by batch size."""
    dl_train, dl_val = loaders()
    torch.manual_seed(0)
    model = torchkeras.Model(CnnModel())
    model.compile(loss_func=nn.CrossEntropyLoss(), metrics_dict={"accuracy": accuracy})
    model.fit(1, dl_train, dl_val)
    probs = model.predict(dl_val)
    assert isinstance(probs, torch.Tensor) and probs.shape == (70, 2)
    exact = (probs.argmax(1) == dl_val.dataset.tensors[1]).double().mean().item()
    assert model.evaluate(dl_val)["val_accuracy"] == pytest.approx(exact, abs=1e-12)
    loss = nn.CrossEntropyLoss()(probs, dl_val.dataset.tensors[1]).item()
    assert model.evaluate(dl_val)["val_loss"] == pytest.approx(loss, rel=1e-5)


def test_printed_layout_is_torchkeras_2(capsys):
    dl_train, dl_val = loaders()
    torch.manual_seed(0)
    model = torchkeras.Model(CnnModel())
    model.compile(loss_func=nn.CrossEntropyLoss(), metrics_dict={"accuracy": accuracy})
    model.fit(2, dl_train=dl_train, dl_val=dl_val, log_step_freq=3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["Start Training ...", "", lines[2]] and RULE.match(lines[2])
    assert lines[-1] == "Finished Training..."
    steps = [ast.literal_eval(line) for line in lines if line.startswith("{")]
    assert [s["step"] for s in steps] == [3, 6, 3, 6]  # 7 steps per epoch
    assert all(list(s) == ["step", "loss", "accuracy"] for s in steps)
    assert all(round(v, 3) == v for s in steps for v in s.values())
    header = "| epoch | loss | accuracy | val_loss | val_accuracy |"
    headers = [i for i, line in enumerate(lines) if re.sub(r" +", " ", line) == header]
    assert len(headers) == 2
    for i in headers:  # print("\n", table) then the rule, as torchkeras 2.x printed them
        assert lines[i - 2] == "" and lines[i - 1].startswith(" +---")
        assert lines[i + 1].startswith("+---") and lines[i + 3].startswith("+---")
        assert lines[i + 4] == "" and RULE.match(lines[i + 5])
    row = [c.strip() for c in lines[headers[1] + 2].strip("|").split("|")]
    assert row[0] == "2" and all(len(c.split(".")[-1]) <= 3 for c in row[1:])


def test_subclass_form_with_forward_and_default_optimizer():
    dl_train, dl_val = loaders(binary=True)
    torch.manual_seed(0)
    model = Net()
    assert "(conv1): Conv2d(1, 8" in str(model) and "(net)" not in str(model)
    model.compile(loss_func=nn.BCELoss(), metrics_dict={"accuracy": binary_accuracy})
    assert isinstance(model.optimizer, torch.optim.Adam)  # torchkeras's default: Adam, 1e-3
    assert model.optimizer.param_groups[0]["lr"] == 1e-3
    assert "loss_func" not in dict(model.named_children())  # the network's state only
    dfhistory = model.fit(4, dl_train, dl_val=dl_val, log_step_freq=100)
    assert list(dfhistory.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert dfhistory["loss"].iloc[-1] < dfhistory["loss"].iloc[0]
    probs = model.predict(dl_val)
    assert probs.shape == (70, 1) and float(probs.min()) >= 0 and float(probs.max()) <= 1
    assert isinstance(model(torch.zeros(2, 1, 28, 28)), torch.Tensor)  # still a module


def test_history_grows_across_fits_until_compile():
    dl_train, _ = loaders()
    model = torchkeras.Model(CnnModel())
    model.compile(loss_func=nn.CrossEntropyLoss(), metrics_dict={"accuracy": accuracy})
    model.fit(1, dl_train)
    dfhistory = model.fit(1, dl_train)
    assert dfhistory["epoch"].tolist() == [1, 2]
    assert list(dfhistory.columns) == ["epoch", "loss", "accuracy"]  # no validation data
    model.compile(loss_func=nn.CrossEntropyLoss())
    assert model.fit(1, dl_train)["epoch"].tolist() == [1]


def test_print_summary_and_one_batch_steps(capsys):
    model = torchkeras.Model(CnnModel())
    assert str(model).startswith("Model(\n  (net): CnnModel(")  # as torch prints it
    assert model.summary(input_shape=(1, 28, 28)) is None
    out = capsys.readouterr().out
    assert "net.layers.0 (Conv2d)" in out and "[-1, 8, 26, 26]" in out
    assert "Total params: 3,450" in out
    model.compile(loss_func=nn.CrossEntropyLoss(), metrics_dict={"accuracy": accuracy})
    x, y = images(8, 2)
    assert list(model.train_step(x, y)) == ["loss", "accuracy"]
    assert list(model.evaluate_step(x, y)) == ["val_loss", "val_accuracy"]


def test_summary_of_integer_inputs():
    embed = torchkeras.Model(nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(20, 1)))
    embed.summary(input_shape=(5,), input_dtype=torch.LongTensor)


def test_errors_name_the_argument():
    dl_train, _ = loaders()
    with pytest.raises(fitkit.FitkitTypeError, match=r"net=.*class CnnModel"):
        torchkeras.Model(CnnModel)
    model = torchkeras.Model(CnnModel())
    with pytest.raises(fitkit.NotCompiledError, match="loss_func"):
        model.fit(1, dl_train)
    with pytest.raises(fitkit.FitkitTypeError, match="loss_func"):
        model.compile(loss_func=None)
    with pytest.raises(fitkit.FitkitTypeError, match="optimizer"):
        model.compile(nn.CrossEntropyLoss(), optimizer="adam")
    with pytest.raises(fitkit.FitkitTypeError, match="metrics_dict"):
        model.compile(nn.CrossEntropyLoss(), metrics_dict=[accuracy])
    with pytest.raises(fitkit.FitkitTypeError, match="forward"):
        torchkeras.Model().compile(nn.CrossEntropyLoss())
    model.compile(nn.CrossEntropyLoss())
    with pytest.raises(fitkit.FitkitValueError, match="epochs"):
        model.fit(0, dl_train)
    with pytest.raises(fitkit.FitkitValueError, match="log_step_freq"):
        model.fit(1, dl_train, log_step_freq=0)
    with pytest.raises(fitkit.FitkitValueError, match="dl_train"):
        model.fit(1, None)
    with pytest.raises(fitkit.FitkitValueError, match="device"):
        model.compile(nn.CrossEntropyLoss(), device="gpu-please")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_cuda_device_without_cuda_trains_on_the_cpu():
    model = torchkeras.Model(CnnModel())
    with pytest.warns(UserWarning, match="CUDA is not available"):
        model.compile(nn.CrossEntropyLoss(), device="cuda:0")
    model.fit(1, loaders()[0])


def test_importing_the_package_imports_no_framework():
    code = (
        "import fitkit, fitkit.compat, sys\n"
        "print(' '.join(m for m in ('torch', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


# ---------------------------------------------------------------------- torchkeras 4.x
class StateAccuracy:
    """A torchmetrics-like metric: update / compute / reset."""

    def __init__(self):
        self.reset()

    def update(self, preds, targets):
        self.correct = self.correct.to(preds.device) + (preds.argmax(-1) == targets).sum()
        self.total += targets.shape[0]

    def compute(self):
        return self.correct.double() / self.total

    def reset(self):
        self.correct, self.total = torch.zeros((), dtype=torch.int64), 0


class CalledAccuracy(nn.Module):
    """torchkeras 4's README metric: a module whose call updates the state (no update)."""

    def __init__(self):
        super().__init__()
        self.correct = nn.Parameter(torch.tensor(0.0), requires_grad=False)
        self.total = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def forward(self, preds, targets):
        m = (preds.argmax(dim=-1) == targets).sum()
        self.correct += m
        self.total += targets.shape[0]
        return m / targets.shape[0]

    def compute(self):
        return self.correct.float() / self.total

    def reset(self):
        self.correct -= self.correct
        self.total -= self.total


class Weights(fitkit.callbacks.Callback):
    """Records the weights at each epoch end."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.get_weights())


def test_keras_model_stops_early_and_restores_the_best(tmp_path, capsys):
    dl_train, dl_val = loaders()
    torch.manual_seed(0)
    net = CnnModel()
    model = torchkeras.KerasModel(
        net,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        metrics_dict={"acc": StateAccuracy()},
    )
    seen, ckpt = Weights(), tmp_path / "checkpoint"
    dfhistory = model.fit(
        dl_train,
        val_data=dl_val,
        epochs=20,
        ckpt_path=str(ckpt),
        patience=2,
        monitor="val_acc",
        mode="max",
        callbacks=[seen],
    )
    assert list(dfhistory.columns) == [
        "epoch",
        "train_loss",
        "train_acc",
        "lr",
        "val_loss",
        "val_acc",
    ]
    best = int(np.argmax(dfhistory["val_acc"].to_numpy()))  # first best, as torchkeras
    assert len(dfhistory) == best + 3 < 20  # stopped after 2 epochs without a better one
    for now, kept in zip(model.net.state_dict().values(), seen.seen[best], strict=True):
        np.testing.assert_array_equal(now.numpy(), kept)  # the best epoch's weights are back
    saved = torch.load(ckpt, weights_only=True)  # the net's state dict, as torchkeras saved it
    assert list(saved) == list(net.state_dict())
    assert model.evaluate(dl_val, quiet=True)["val_acc"] == dfhistory["val_acc"][best]
    out = capsys.readouterr().out
    assert "Epoch 1 / 20" in out and "<<<<<< reach best val_acc : " in out
    assert "val_acc without improvement in 2 epoch" in out
    assert any(RULE.match(line) for line in out.splitlines())
    clone = torchkeras.KerasModel(
        CnnModel(), loss_fn=nn.CrossEntropyLoss(), metrics_dict={"acc": StateAccuracy()}
    )
    clone.load_ckpt(str(ckpt))
    assert clone.evaluate(dl_val, quiet=True) == model.evaluate(dl_val, quiet=True)


def test_keras_model_scheduler_steps_per_batch_and_called_metrics(tmp_path):
    dl_train, dl_val = loaders()
    net = CnnModel()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    model = torchkeras.KerasModel(
        net,
        loss_fn=nn.CrossEntropyLoss(),
        metrics_dict={"acc": CalledAccuracy()},
        optimizer=optimizer,
        lr_scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9),
    )
    dfhistory = model.fit(
        dl_train,
        val_data=dl_val,
        epochs=2,
        patience=5,
        plot=False,
        ckpt_path=str(tmp_path / "ckpt.pt"),
        monitor="train_loss",
    )
    np.testing.assert_allclose(dfhistory["lr"], [0.01 * 0.9**7, 0.01 * 0.9**14])
    assert 0.0 <= dfhistory["train_acc"].min() and dfhistory["val_acc"].max() <= 1.0
    assert list(model.evaluate(dl_val, quiet=True)) == ["val_loss", "val_acc"]


def test_keras_model_errors_name_the_argument(tmp_path):
    dl_train, dl_val = loaders()
    with pytest.raises(fitkit.FitkitTypeError, match="metrics_dict"):
        torchkeras.KerasModel(CnnModel(), nn.CrossEntropyLoss(), metrics_dict={"acc": accuracy})
    with pytest.raises(fitkit.FitkitTypeError, match="loss_fn"):
        torchkeras.KerasModel(CnnModel(), loss_fn="ce")
    with pytest.raises(fitkit.FitkitTypeError, match="stage"):
        torchkeras.KerasModel(CnnModel(), nn.CrossEntropyLoss(), stage="x")
    model = torchkeras.KerasModel(CnnModel(), nn.CrossEntropyLoss())
    with pytest.raises(fitkit.FitkitValueError, match=r"monitor='val_loss'.*train_loss, lr"):
        model.fit(dl_train, epochs=1, ckpt_path=str(tmp_path / "c"))  # no validation data
    with pytest.raises(fitkit.FitkitValueError, match="mode"):
        model.fit(dl_train, dl_val, mode="auto")
    with pytest.raises(fitkit.FitkitValueError, match="mixed_precision"):
        model.fit(dl_train, dl_val, mixed_precision="O2")
    with pytest.raises(fitkit.FitkitValueError, match="wandb"):
        model.fit(dl_train, dl_val, wandb=True)


def test_keras_model_plot_needs_matplotlib_before_training(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    dl_train, dl_val = loaders()
    model = torchkeras.KerasModel(CnnModel(), nn.CrossEntropyLoss())
    with pytest.raises(fitkit.FitkitValueError, match=r'plot=True.*pip install "fitkit\[plot\]"'):
        model.fit(dl_train, dl_val, ckpt_path=str(tmp_path / "c"), plot=True)
    assert not (tmp_path / "c").exists()  # refused before training


def _fit_with_plot(tmp_path, epochs=3):
    dl_train, dl_val = loaders()
    torch.manual_seed(0)
    net = CnnModel()
    model = torchkeras.KerasModel(
        net,
        nn.CrossEntropyLoss(),
        metrics_dict={"acc": StateAccuracy()},
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
    )
    return model.fit(
        dl_train,
        dl_val,
        epochs=epochs,
        ckpt_path=str(tmp_path / "run" / "ckpt"),
        monitor="val_acc",
        mode="max",
        plot=True,
    )


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("matplotlib") is None, reason="needs matplotlib"
)
def test_keras_model_plot_saves_the_curves_outside_a_notebook(tmp_path, capsys):
    import matplotlib.image
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    dfhistory = _fit_with_plot(tmp_path)
    out = capsys.readouterr().out
    png = tmp_path / "run" / "history.png"  # next to ckpt_path, as torchkeras's history.png
    assert f"View dynamic loss/metric plot: \n{png}" in out and "Epoch 1 /" not in out
    image = matplotlib.image.imread(str(png))
    assert image.shape[:2] == (400, 600) and image[..., :3].std() > 0  # a drawn 6x4 figure
    assert set(plt.get_fignums()) == before  # no pyplot figure left open
    assert len(dfhistory) == 3


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("matplotlib") is None, reason="needs matplotlib"
)
def test_keras_model_plot_updates_one_figure_per_epoch_in_a_notebook(tmp_path, capsys, monkeypatch):
    import types

    shown = []

    class Handle:
        def update(self, image):
            shown.append(("update", image.data))

    def display(image, display_id=False):
        shown.append(("display", image.data, display_id))
        return Handle()

    image = types.SimpleNamespace  # IPython.display.Image(data=png) keeps .data
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(
        sys.modules, "IPython.display", types.SimpleNamespace(display=display, Image=image)
    )
    _fit_with_plot(tmp_path, epochs=3)
    assert [s[0] for s in shown] == ["display", "update", "update"]
    assert shown[0][2] is True  # one output, updated in place
    assert all(s[1].startswith(b"\x89PNG") for s in shown)
    assert shown[-1][1] == (tmp_path / "run" / "history.png").read_bytes()
    assert "View dynamic" not in capsys.readouterr().out
