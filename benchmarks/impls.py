"""The implementations under comparison, one function each; each runs in its own process.

Owns only the training code of each contender, written as its users would write it; data,
weights and timing come from workloads.py and run_one.py. Each returns epoch end times
(seconds since its fit started), the final validation accuracy and its import time.
"""

from __future__ import annotations

import os
import time

from workloads import WORKLOADS, channels_last, keras_net, torch_net


def torch_threads() -> int:
    """torch's intra-op threads: 2 (the cores) unless BENCH_TORCH_THREADS says otherwise.

    On a shared 2-core machine, 2 threads plus another busy process make each parallel
    region wait for a descheduled thread: W1 epochs then take 3-40x longer; 1 thread does not.
    """
    return int(os.environ.get("BENCH_TORCH_THREADS", "2"))


def _setup(name):
    spec = WORKLOADS[name]
    return spec, spec["data"]()


# ----------------------------------------------------------------------------- fitkit
def _fitkit_torch(name, first_step, native):
    t = time.perf_counter()
    import torch

    import fitkit

    imported = time.perf_counter() - t
    torch.set_num_threads(torch_threads())
    spec, (xt, yt, xv, yv) = _setup(name)
    net = torch_net(name)
    model = fitkit.Model(net)
    if native:
        model.compile(
            torch.optim.Adam(net.parameters(), lr=spec["lr"]),
            torch.nn.CrossEntropyLoss(),
            metrics=["accuracy"],
        )
    else:
        model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=spec["lr"])
    return _fitkit_fit(fitkit, model, spec, xt, yt, xv, yv, first_step, imported)


def _fitkit_fit(fitkit, model, spec, xt, yt, xv, yv, first_step, imported):
    if first_step:
        model.fit(xt, yt, batch_size=spec["batch_size"], epochs=1, steps_per_epoch=1, verbose=0)
        return {"import_s": imported}
    return _timed_fit(
        model.fit,
        fitkit.callbacks.Callback,
        spec,
        imported,
        x=xt,
        y=yt,
        batch_size=spec["batch_size"],
        validation_data=(xv, yv),
    )


def _timed_fit(fit, callback_base, spec, imported, **data):
    """A Keras-style ``fit`` with an epoch-end clock (epoch hooks only: no per-step cost).

    ``data``: the fit arguments that say what to train on (``x``, ``y``, ``batch_size``,
    ``validation_data``), arrays or a dataset / loader.
    """
    ends = []

    class EpochClock(callback_base):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    start = time.perf_counter()
    history = fit(epochs=spec["epochs"], verbose=0, callbacks=[EpochClock()], **data)
    return {
        "import_s": imported,
        "epoch_ends": [e - start for e in ends],
        "val_accuracy": history.history["val_accuracy"][-1],
    }


def fitkit_torch(name, first_step=False):
    """fitkit on torch with native objects (torch.optim.Adam, nn.CrossEntropyLoss)."""
    return _fitkit_torch(name, first_step, native=True)


def fitkit_torch_strings(name, first_step=False):
    """fitkit on torch with string specs: fitkit picks the fast defaults (fused Adam)."""
    return _fitkit_torch(name, first_step, native=False)


def fitkit_tf(name, first_step=False):
    t = time.perf_counter()
    import keras
    import tensorflow as tf

    import fitkit

    imported = time.perf_counter() - t
    spec, (xt, yt, xv, yv) = _setup(name)
    xt, xv = channels_last(xt), channels_last(xv)
    model = fitkit.Model(keras_net(name))
    model.compile(keras.optimizers.Adam(spec["lr"]), "cross_entropy", metrics=["accuracy"])
    del tf
    return _fitkit_fit(fitkit, model, spec, xt, yt, xv, yv, first_step, imported)


def fitkit_torch_loader(name, first_step=False):
    """fitkit on torch given DataLoaders (the torch_loader_loop's), native Adam and loss."""
    t = time.perf_counter()
    import torch

    import fitkit

    imported = time.perf_counter() - t
    torch.set_num_threads(torch_threads())
    spec, (xt, yt, xv, yv) = _setup(name)
    train, val = _loaders(torch, spec, xt, yt, xv, yv)
    net = torch_net(name)
    model = fitkit.Model(net)
    model.compile(
        torch.optim.Adam(net.parameters(), lr=spec["lr"]),
        torch.nn.CrossEntropyLoss(),
        metrics=["accuracy"],
    )
    if first_step:
        model.fit(train, epochs=1, steps_per_epoch=1, verbose=0)
        return {"import_s": imported}
    return _timed_fit(
        model.fit, fitkit.callbacks.Callback, spec, imported, x=train, validation_data=val
    )


def fitkit_tf_data(name, first_step=False):
    """fitkit on TensorFlow given the tf_loop's tf.data pipelines (shuffle, batch)."""
    t = time.perf_counter()
    import keras
    import tensorflow as tf

    import fitkit

    imported = time.perf_counter() - t
    spec, (xt, yt, xv, yv) = _setup(name)
    train, val = tf_datasets(tf, spec, channels_last(xt), yt, channels_last(xv), yv)
    model = fitkit.Model(keras_net(name))
    model.compile(keras.optimizers.Adam(spec["lr"]), "cross_entropy", metrics=["accuracy"])
    if first_step:
        model.fit(train, epochs=1, steps_per_epoch=1, verbose=0)
        return {"import_s": imported}
    return _timed_fit(
        model.fit, fitkit.callbacks.Callback, spec, imported, x=train, validation_data=val
    )


# ----------------------------------------------------------------------------- hand-written
def torch_loop_epoch(net, opt, loss_fn, x, y, bs, max_steps=None) -> dict:
    """One hand-written training epoch: a permutation, slices, sums kept on the device."""
    import torch

    perm = torch.randperm(len(x))
    xp, yp = x[perm], y[perm]
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
    for step, i in enumerate(range(0, len(x), bs)):
        if max_steps is not None and step == max_steps:
            break
        xb, yb = xp[i : i + bs], yp[i : i + bs]
        opt.zero_grad(set_to_none=True)
        out = net(xb)
        loss = loss_fn(out, yb)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(xb)
        correct += (out.argmax(1) == yb).sum()
    return {"loss": (loss_sum / len(x)).item(), "accuracy": correct.item() / len(x)}


def torch_loop(name, first_step=False):
    """A careful hand-written loop: tensor slicing, a permutation per epoch, no per-step sync."""
    t = time.perf_counter()
    import torch

    imported = time.perf_counter() - t
    torch.set_num_threads(torch_threads())
    spec, (xt, yt, xv, yv) = _setup(name)
    net = torch_net(name)
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y, x_val, y_val = map(torch.from_numpy, (xt, yt, xv, yv))
    bs = spec["batch_size"]
    start, ends = time.perf_counter(), []
    for _ in range(1 if first_step else spec["epochs"]):
        net.train()
        logs = torch_loop_epoch(net, opt, loss_fn, x, y, bs, max_steps=1 if first_step else None)
        if first_step:
            return {"import_s": imported}
        net.eval()
        with torch.no_grad():
            val_loss, val_correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
            for i in range(0, len(x_val), bs):
                out = net(x_val[i : i + bs])
                val_loss += loss_fn(out, y_val[i : i + bs]) * len(out)
                val_correct += (out.argmax(1) == y_val[i : i + bs]).sum()
        logs["val_accuracy"] = val_correct.item() / len(x_val)
        ends.append(time.perf_counter() - start)
    return {"import_s": imported, "epoch_ends": ends, "val_accuracy": logs["val_accuracy"]}


def torch_loader_epoch(net, opt, loss_fn, loader, max_steps=None) -> dict:
    """One hand-written training epoch over a DataLoader; sums kept on the device."""
    import torch

    loss_sum, correct, n = torch.zeros(()), torch.zeros((), dtype=torch.int64), 0
    for step, (xb, yb) in enumerate(loader):
        if max_steps is not None and step == max_steps:
            break
        opt.zero_grad(set_to_none=True)
        out = net(xb)
        loss = loss_fn(out, yb)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(xb)
        correct += (out.argmax(1) == yb).sum()
        n += len(xb)
    return {"loss": (loss_sum / n).item(), "accuracy": correct.item() / n}


def torch_loader_loop(name, first_step=False):
    """A careful hand-written loop over DataLoader(TensorDataset, shuffle=True): no .item()
    per step, loss and accuracy summed on the device and read once per epoch."""
    t = time.perf_counter()
    import torch

    imported = time.perf_counter() - t
    torch.set_num_threads(torch_threads())
    spec, (xt, yt, xv, yv) = _setup(name)
    train, val = _loaders(torch, spec, xt, yt, xv, yv)
    net = torch_net(name)
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    start, ends = time.perf_counter(), []
    for _ in range(1 if first_step else spec["epochs"]):
        net.train()
        logs = torch_loader_epoch(net, opt, loss_fn, train, max_steps=1 if first_step else None)
        if first_step:
            return {"import_s": imported}
        net.eval()
        with torch.no_grad():
            val_loss, val_correct, n = torch.zeros(()), torch.zeros((), dtype=torch.int64), 0
            for xb, yb in val:
                out = net(xb)
                val_loss += loss_fn(out, yb) * len(out)
                val_correct += (out.argmax(1) == yb).sum()
                n += len(out)
        logs["val_accuracy"] = val_correct.item() / n
        ends.append(time.perf_counter() - start)
    return {"import_s": imported, "epoch_ends": ends, "val_accuracy": logs["val_accuracy"]}


def torch_naive(name, first_step=False):
    """The tutorial's loop: a DataLoader over a TensorDataset, .item() every step."""
    t = time.perf_counter()
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    imported = time.perf_counter() - t
    torch.set_num_threads(torch_threads())
    spec, (xt, yt, xv, yv) = _setup(name)
    net = torch_net(name)
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    train = DataLoader(
        TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)),
        batch_size=spec["batch_size"],
        shuffle=True,
    )
    val = DataLoader(
        TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)), batch_size=spec["batch_size"]
    )
    start, ends = time.perf_counter(), []
    for _ in range(1 if first_step else spec["epochs"]):
        net.train()
        loss_sum = metric_sum = 0.0
        for xb, yb in train:
            opt.zero_grad()
            out = net(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            metric_sum += (out.argmax(1) == yb).float().mean().item()
            if first_step:
                return {"import_s": imported}
        net.eval()
        val_metric = 0.0
        with torch.no_grad():
            for xb, yb in val:
                out = net(xb)
                loss_fn(out, yb).item()
                val_metric += (out.argmax(1) == yb).float().mean().item()
        ends.append(time.perf_counter() - start)
    return {"import_s": imported, "epoch_ends": ends, "val_accuracy": val_metric / len(val)}


def tf_datasets(tf, spec, xt, yt, xv, yv):
    """The tf.data pipelines every tf.data contender gets: shuffle (whole set) and batch."""
    train = tf.data.Dataset.from_tensor_slices((xt, yt)).shuffle(len(xt)).batch(spec["batch_size"])
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(spec["batch_size"])
    return train, val


def tf_loop(name, first_step=False):
    """A hand-written tf.function loop over tf.data, with keras.metrics, as the tutorial does."""
    t = time.perf_counter()
    import keras
    import tensorflow as tf

    imported = time.perf_counter() - t
    spec, (xt, yt, xv, yv) = _setup(name)
    xt, xv = channels_last(xt), channels_last(xv)
    net = keras_net(name)
    opt = keras.optimizers.Adam(spec["lr"])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train, val = tf_datasets(tf, spec, xt, yt, xv, yv)
    train_loss, train_acc = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()
    val_loss, val_acc = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            out = net(x, training=True)
            loss = loss_fn(y, out)
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        train_loss.update_state(loss)
        train_acc.update_state(y, out)

    @tf.function
    def valid_step(x, y):
        out = net(x, training=False)
        val_loss.update_state(loss_fn(y, out))
        val_acc.update_state(y, out)

    start, ends = time.perf_counter(), []
    for _ in range(1 if first_step else spec["epochs"]):
        for m in (train_loss, train_acc, val_loss, val_acc):
            m.reset_state()
        for xb, yb in train:
            train_step(xb, yb)
            if first_step:
                return {"import_s": imported}
        for xb, yb in val:
            valid_step(xb, yb)
        logs = [float(m.result()) for m in (train_loss, train_acc, val_loss, val_acc)]
        ends.append(time.perf_counter() - start)
    return {"import_s": imported, "epoch_ends": ends, "val_accuracy": logs[-1]}


# ----------------------------------------------------------------------------- Keras 3 fit
def _keras_fit(name, first_step):
    t = time.perf_counter()
    import keras

    imported = time.perf_counter() - t
    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(torch_threads())
    spec, (xt, yt, xv, yv) = _setup(name)
    xt, xv = channels_last(xt), channels_last(xv)
    net = keras_net(name)
    net.compile(
        optimizer=keras.optimizers.Adam(spec["lr"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if first_step:
        net.fit(
            xt[: spec["batch_size"]],
            yt[: spec["batch_size"]],
            batch_size=spec["batch_size"],
            epochs=1,
            verbose=0,
        )
        return {"import_s": imported}
    return _timed_fit(
        net.fit,
        keras.callbacks.Callback,
        spec,
        imported,
        x=xt,
        y=yt,
        batch_size=spec["batch_size"],
        validation_data=(xv, yv),
    )


def keras_tf_data(name, first_step=False):
    """Keras 3 fit (TensorFlow backend) given the tf_loop's tf.data pipelines."""
    t = time.perf_counter()
    import keras
    import tensorflow as tf

    imported = time.perf_counter() - t
    spec, (xt, yt, xv, yv) = _setup(name)
    train, val = tf_datasets(tf, spec, channels_last(xt), yt, channels_last(xv), yv)
    net = keras_net(name)
    net.compile(
        optimizer=keras.optimizers.Adam(spec["lr"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if first_step:
        net.fit(train.take(1), epochs=1, verbose=0)
        return {"import_s": imported}
    return _timed_fit(
        net.fit, keras.callbacks.Callback, spec, imported, x=train, validation_data=val
    )


def keras_tf(name, first_step=False):
    """Keras 3 fit on the TensorFlow backend (KERAS_BACKEND=tensorflow)."""
    return _keras_fit(name, first_step)


def keras_torch(name, first_step=False):
    """Keras 3 fit on the torch backend (KERAS_BACKEND=torch)."""
    return _keras_fit(name, first_step)


# ----------------------------------------------------------------------------- third party
def _loaders(torch, spec, xt, yt, xv, yv):
    from torch.utils.data import DataLoader, TensorDataset

    train = DataLoader(
        TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)),
        batch_size=spec["batch_size"],
        shuffle=True,
    )
    val = DataLoader(
        TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)), batch_size=spec["batch_size"]
    )
    return train, val


def torchkeras_fit(name, first_step=False):
    """torchkeras.KerasModel, as its README shows (optional: pip install torchkeras)."""
    t = time.perf_counter()
    import torch
    import torchkeras
    from torchmetrics import Accuracy

    imported = time.perf_counter() - t
    torch.set_num_threads(torch_threads())
    spec, (xt, yt, xv, yv) = _setup(name)
    train, val = _loaders(torch, spec, xt, yt, xv, yv)
    net = torch_net(name)
    model = torchkeras.KerasModel(
        net,
        loss_fn=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(net.parameters(), lr=spec["lr"]),
        metrics_dict={"acc": Accuracy(task="multiclass", num_classes=10)},
    )
    start = time.perf_counter()
    history = model.fit(
        train_data=train,
        val_data=val,
        epochs=1 if first_step else spec["epochs"],
        ckpt_path="/tmp/torchkeras_bench.pt",
        patience=100,
        monitor="val_acc",
        mode="max",
        plot=False,
        cpu=True,
    )
    if first_step:
        return {"import_s": imported}
    total = time.perf_counter() - start
    return {
        "import_s": imported,
        "epoch_ends": [total * (i + 1) / spec["epochs"] for i in range(spec["epochs"])],
        "epoch_ends_estimated": True,
        "val_accuracy": float(history["val_acc"].iloc[-1]),
    }


def lightning_fit(name, first_step=False):
    """A LightningModule with Trainer.fit (optional: pip install lightning)."""
    t = time.perf_counter()
    import lightning as L
    import torch

    imported = time.perf_counter() - t
    torch.set_num_threads(torch_threads())
    spec, (xt, yt, xv, yv) = _setup(name)
    train, val = _loaders(torch, spec, xt, yt, xv, yv)
    ends, start = [], [0.0]

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch_net(name)
            self.loss_fn = torch.nn.CrossEntropyLoss()

        def training_step(self, batch, _):
            x, y = batch
            out = self.net(x)
            loss = self.loss_fn(out, y)
            self.log("train_acc", (out.argmax(1) == y).float().mean(), on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            out = self.net(x)
            self.log("val_loss", self.loss_fn(out, y))
            self.log("val_acc", (out.argmax(1) == y).float().mean())

        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:
                ends.append(time.perf_counter() - start[0])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=spec["lr"])

    trainer = L.Trainer(
        max_epochs=1 if first_step else spec["epochs"],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        max_steps=1 if first_step else -1,
    )
    module = Module()
    start[0] = time.perf_counter()
    trainer.fit(module, train, val)
    if first_step:
        return {"import_s": imported}
    return {
        "import_s": imported,
        "epoch_ends": ends,
        "val_accuracy": float(trainer.callback_metrics["val_acc"]),
    }


IMPLS = {
    "fitkit_torch": ("torch", fitkit_torch),
    "fitkit_torch_strings": ("torch", fitkit_torch_strings),
    "torch_loop": ("torch", torch_loop),
    "torch_naive": ("torch", torch_naive),
    "fitkit_torch_loader": ("torch", fitkit_torch_loader),
    "torch_loader_loop": ("torch", torch_loader_loop),
    "keras_torch": ("torch", keras_torch),
    "torchkeras": ("torch", torchkeras_fit),
    "lightning": ("torch", lightning_fit),
    "fitkit_tf": ("tensorflow", fitkit_tf),
    "fitkit_tf_data": ("tensorflow", fitkit_tf_data),
    "tf_loop": ("tensorflow", tf_loop),
    "keras_tf": ("tensorflow", keras_tf),
    "keras_tf_data": ("tensorflow", keras_tf_data),
}
OPTIONAL = {"torchkeras": "torchkeras", "lightning": "lightning"}  # impl -> module to import
