"""One model trained four ways (script, function, train_on_batch, fit), with the same numbers.

fitkit offers the tutorial's four training styles on both backends (docs/styles.md):

1. script: your own loop, with fitkit.script's EpochLogs (exact epoch means) and printout;
2. function: the network carries optimizer, loss_func and metric_func, and
   fitkit.torch.loops / fitkit.tf.loops .train_model runs the epochs;
3. train_on_batch: your own epoch loop around Model.train_on_batch / test_on_batch;
4. fit: Model.fit does everything.

Here the same small MLP (8 -> 16 -> 1 logit) is trained on the same generated binary task in
each style: the same data, the same initial weights (one network, copied four times), plain
SGD with the same learning rate, the same batches in the same order (no shuffling). Every
style averages its epoch values exactly over the samples, so the four loss curves agree to
float rounding. The example prints them side by side, their largest difference, and saves
fit's curves as a PNG.

Run:  python examples/four_ways.py                         (torch if installed)
      FITKIT_BACKEND=tensorflow python examples/four_ways.py
      python examples/four_ways.py --quick --out /tmp      (small and fast, for the tests)
"""

import argparse
import pathlib
import time

import numpy as np
import pandas as pd

import fitkit

LR, BATCH = 0.1, 32


def make_data(n, seed=0):
    """8 standard-normal features; the label says whether a noisy non-linear score is > 0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype("float32")
    score = x[:, :4].sum(axis=1) + x[:, 4] * x[:, 5] + 0.3 * rng.standard_normal(n)
    return x, (score > 0).astype("float32")[:, None]


def make_net(backend):
    """The MLP; it returns a logit (no sigmoid), so every style uses a with-logits loss."""
    if backend == "torch":
        import torch.nn as nn

        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    import keras

    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )


def copy_of(net):
    """A new network with the same layers and the same initial weights as ``net``."""
    if fitkit.backend() == "torch":
        import copy

        return copy.deepcopy(net)
    import keras

    clone = keras.models.clone_model(net)
    clone.set_weights(net.get_weights())
    return clone


def batches(x, y, size=BATCH):
    """The batches in order (no shuffling), as numpy arrays."""
    for start in range(0, len(x), size):
        yield x[start : start + size], y[start : start + size]


# ----------------------------------------------------------------------------- 1. script
def script_style(net, data, epochs):
    """A hand-written loop; fitkit.script supplies exact epoch means and the printout."""
    from fitkit.script import EpochLogs, print_epoch

    x_train, y_train, x_valid, y_valid = data
    train_logs, valid_logs = EpochLogs(), EpochLogs(prefix="val_")
    history = fitkit.History()

    if fitkit.backend() == "torch":
        import torch

        optimizer = torch.optim.SGD(net.parameters(), lr=LR)
        loss_func = torch.nn.BCEWithLogitsLoss()

        def train_step(features, labels):
            features, labels = torch.from_numpy(features), torch.from_numpy(labels)
            net.train()
            optimizer.zero_grad()
            logits = net(features)
            loss = loss_func(logits, labels)
            loss.backward()
            optimizer.step()
            return loss, ((logits > 0).float() == labels).float().mean()

        @torch.no_grad()
        def valid_step(features, labels):
            features, labels = torch.from_numpy(features), torch.from_numpy(labels)
            net.eval()
            logits = net(features)
            return loss_func(logits, labels), ((logits > 0).float() == labels).float().mean()
    else:
        import keras
        import tensorflow as tf

        optimizer = keras.optimizers.SGD(learning_rate=LR)
        loss_func = keras.losses.BinaryCrossentropy(from_logits=True)

        @tf.function
        def train_step(features, labels):
            with tf.GradientTape() as tape:
                logits = net(features, training=True)
                loss = loss_func(labels, logits)
            gradients = tape.gradient(loss, net.trainable_variables)
            optimizer.apply_gradients(zip(gradients, net.trainable_variables, strict=True))
            return loss, keras.metrics.binary_accuracy(labels, logits, threshold=0.0)

        @tf.function
        def valid_step(features, labels):
            logits = net(features, training=False)
            return (
                loss_func(labels, logits),
                keras.metrics.binary_accuracy(labels, logits, threshold=0.0),
            )

    for epoch in range(epochs):
        train_logs.reset()
        for features, labels in batches(x_train, y_train):
            loss, accuracy = train_step(features, labels)
            train_logs.update(len(labels), loss=loss, accuracy=accuracy)
        valid_logs.reset()
        for features, labels in batches(x_valid, y_valid):
            loss, accuracy = valid_step(features, labels)
            valid_logs.update(len(labels), loss=loss, accuracy=accuracy)
        logs = {**train_logs.result(), **valid_logs.result()}
        print_epoch(epoch, logs)
        history.append(epoch, logs)
    return history.df


# --------------------------------------------------------------------------- 2. function
def function_style(net, data, epochs):
    """The network carries its optimizer, loss and metric; train_model runs the epochs."""
    x_train, y_train, x_valid, y_valid = data
    if fitkit.backend() == "torch":
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from fitkit.torch.loops import train_model

        net.optimizer = torch.optim.SGD(net.parameters(), lr=LR)
        # A function, not an nn.Module: a module set on an nn.Sequential would become a layer.
        net.loss_func = torch.nn.functional.binary_cross_entropy_with_logits
        net.metric_func = lambda y_pred, y_true: ((y_pred > 0).float() == y_true).float().mean()
        dl_train = DataLoader(
            TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
            batch_size=BATCH,
            shuffle=False,
        )
        dl_valid = DataLoader(
            TensorDataset(torch.from_numpy(x_valid), torch.from_numpy(y_valid)), batch_size=BATCH
        )
    else:
        import keras
        import tensorflow as tf

        from fitkit.tf.loops import train_model

        net.optimizer = keras.optimizers.SGD(learning_rate=LR)
        net.loss_func = keras.losses.BinaryCrossentropy(from_logits=True)
        net.metric_func = lambda y_true, y_pred: keras.metrics.binary_accuracy(
            y_true, y_pred, threshold=0.0
        )  # Keras's order: (y_true, y_pred)
        dl_train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(BATCH)
        dl_valid = tf.data.Dataset.from_tensor_slices((x_valid, y_valid)).batch(BATCH)
    net.metric_name = "accuracy"
    return train_model(
        net, epochs=epochs, dl_train=dl_train, dl_valid=dl_valid, log_step_freq=10**6
    )  # no step lines, the epoch lines only


# --------------------------------------------------------------------- 3. train_on_batch
def train_on_batch_style(net, data, epochs):
    """Your own epoch loop around fitkit's compiled steps; the same code on both backends."""
    x_train, y_train, x_valid, y_valid = data
    model = fitkit.Model(net)
    model.compile("sgd", "bce_with_logits", metrics=["accuracy"], lr=LR)
    history = fitkit.History()
    for epoch in range(epochs):
        model.reset_metrics()  # running logs start afresh each epoch
        for features, labels in batches(x_train, y_train):
            train = model.train_on_batch(features, labels, reset_metrics=False, return_dict=True)
        for features, labels in batches(x_valid, y_valid):
            valid = model.test_on_batch(features, labels, reset_metrics=False, return_dict=True)
        logs = {**train, **{f"val_{name}": value for name, value in valid.items()}}
        print(f"epoch {epoch + 1}: " + ", ".join(f"{k} = {v:.4f}" for k, v in logs.items()))
        history.append(epoch, logs)
    return history.df


# -------------------------------------------------------------------------------- 4. fit
def fit_style(net, data, epochs):
    """Model.fit: the loop, validation and history in one call (returns a fitkit.History)."""
    x_train, y_train, x_valid, y_valid = data
    model = fitkit.Model(net)
    model.compile("sgd", "bce_with_logits", metrics=["accuracy"], lr=LR)
    return model.fit(
        x_train,
        y_train,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        validation_data=(x_valid, y_valid),
        verbose=2,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--out", default=".", help="folder for the PNG (default: here)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # write PNGs; no window, no display needed
    fitkit.set_seed(0)
    n, epochs = (640, 3) if args.quick else (4000, 10)
    x, y = make_data(n)
    split = int(0.8 * n)
    data = (x[:split], y[:split], x[split:], y[split:])

    template = make_net(fitkit.backend())  # the one set of initial weights
    styles = {
        "script": script_style,
        "function": function_style,
        "train_on_batch": train_on_batch_style,
        "fit": fit_style,
    }
    results, seconds = {}, {}
    for name, train in styles.items():
        print(f"\n===== {name} style ({fitkit.backend()}) =====")
        start = time.perf_counter()
        results[name] = train(copy_of(template), data, epochs)
        seconds[name] = time.perf_counter() - start
    history = results["fit"]  # fit's History: its .plot() below
    results["fit"] = history.df  # the others return DataFrames

    losses = pd.DataFrame({"epoch": results["fit"]["epoch"]})
    for name, frame in results.items():
        losses[name] = frame["loss"].to_numpy()
    pd.set_option("display.precision", 6)
    print(f"\ntraining loss per epoch, four styles ({fitkit.backend()}):")
    print(losses.to_string(index=False))
    print("seconds:", {name: round(value, 2) for name, value in seconds.items()})

    def spread(column):
        """The largest difference between any two styles, over all epochs."""
        table = np.stack([frame[column].to_numpy() for frame in results.values()])
        return float((table.max(axis=0) - table.min(axis=0)).max())

    loss_diff, val_diff, acc_diff = spread("loss"), spread("val_loss"), spread("val_accuracy")
    print(
        f"max difference between styles: loss {loss_diff:.2e}, val_loss {val_diff:.2e}, "
        f"val_accuracy {acc_diff:.2e}"
    )

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = out / "four_ways_history.png"
    history.plot().savefig(curves)
    print(f"saved {curves}")
    print(
        f"RESULT max_diff={max(loss_diff, val_diff):.3e} final_loss={losses['fit'].iloc[-1]:.4f} "
        f"val_accuracy={results['fit']['val_accuracy'].iloc[-1]:.4f}"
    )
