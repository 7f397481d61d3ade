"""Linear regression at the tutorial's three levels, on the backend FITKIT_BACKEND selects.

The data is y = x @ [2, -3] + 3 + noise. The same fit is done three times:

- low level:  raw parameters, autograd (torch) or tf.GradientTape (TensorFlow), a hand loop;
- mid level:  a Linear / Dense layer and an optimizer, trained by the function style of
              fitkit.torch.loops / fitkit.tf.loops (train_model);
- high level: fitkit.Model(...).compile(...).fit(...).

Each prints its estimate of w and b; the least-squares solution is printed as the reference.

Run:  python examples/linear_regression.py                    (torch if installed)
      FITKIT_BACKEND=tensorflow python examples/linear_regression.py
      python examples/linear_regression.py --quick --out /tmp   (small and fast, for the tests)
"""

import argparse
import pathlib

import numpy as np

import fitkit

TRUE_W, TRUE_B = np.array([2.0, -3.0]), 3.0
LEARNING_RATE = 0.02  # small enough that SGD's last steps barely move the estimate
BATCH_SIZE = 32


def make_data(n, seed=0):
    """n noisy samples of the line. Features in [-3, 3] keep plain SGD well conditioned:
    the weights and the bias then converge at similar speeds with one learning rate."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, (n, 2))
    y = x @ TRUE_W + TRUE_B + rng.normal(0, 1.0, n)
    return x.astype("float32"), y.astype("float32")[:, None]


def minibatches(x, y, batch_size, rng):
    """The low level's data pipeline: shuffled slices of the arrays."""
    order = rng.permutation(len(x))
    for start in range(0, len(x), batch_size):
        rows = order[start : start + batch_size]
        yield x[rows], y[rows]


# ---------------------------------------------------------------- low level: a hand loop
def low_level_torch(x, y, epochs):
    import torch

    w = torch.randn(2, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for xb, yb in minibatches(x, y, BATCH_SIZE, rng):
            xb, yb = torch.from_numpy(xb), torch.from_numpy(yb)
            loss = ((xb @ w + b - yb) ** 2).mean()
            loss.backward()
            with torch.no_grad():  # the update itself must not be recorded by autograd
                w -= LEARNING_RATE * w.grad
                b -= LEARNING_RATE * b.grad
                w.grad.zero_()
                b.grad.zero_()
    return w.detach().cpu().numpy().ravel(), b.item()


def low_level_tensorflow(x, y, epochs):
    import tensorflow as tf

    w = tf.Variable(tf.random.normal((2, 1)))
    b = tf.Variable(tf.zeros(1))

    @tf.function  # one graph per batch shape instead of a slow eager step
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((xb @ w + b - yb) ** 2)
        dw, db = tape.gradient(loss, [w, b])
        w.assign_sub(LEARNING_RATE * dw)
        b.assign_sub(LEARNING_RATE * db)
        return loss

    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for xb, yb in minibatches(x, y, BATCH_SIZE, rng):
            train_step(tf.constant(xb), tf.constant(yb))
    return w.numpy().ravel(), float(b.numpy()[0])


# ------------------------------------------- mid level: a layer, an optimizer, function style
def mid_level_torch(x, y, epochs):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fitkit.torch.loops import train_model

    net = torch.nn.Linear(2, 1)
    net.optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    net.loss_func = torch.nn.MSELoss()
    net.metric_func = lambda y_pred, y_true: (y_pred - y_true).abs().mean()
    net.metric_name = "mae"
    dl_train = DataLoader(
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH_SIZE, shuffle=True
    )
    train_model(net, epochs=epochs, dl_train=dl_train, log_step_freq=None)
    return net.weight.detach().cpu().numpy().ravel(), net.bias.item()


def mid_level_tensorflow(x, y, epochs):
    import keras
    import tensorflow as tf

    from fitkit.tf.loops import train_model

    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    net.optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATE)
    net.loss_func = keras.losses.MeanSquaredError()
    net.metric_func = keras.metrics.mean_absolute_error
    net.metric_name = "mae"
    ds_train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0)
    train_model(net, epochs=epochs, dl_train=ds_train.batch(BATCH_SIZE), log_step_freq=None)
    kernel, bias = net.layers[-1].get_weights()
    return kernel.ravel(), float(bias[0])


# ------------------------------------------------------------- high level: fitkit.Model.fit
def make_linear_net(backend):
    if backend == "torch":
        import torch

        return torch.nn.Linear(2, 1)
    import keras

    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def read_linear_net(net, backend):
    """(w, b) of the network built by make_linear_net."""
    if backend == "torch":
        return net.weight.detach().cpu().numpy().ravel(), net.bias.item()
    kernel, bias = net.layers[-1].get_weights()
    return kernel.ravel(), float(bias[0])


def high_level(x, y, epochs, backend):
    model = fitkit.Model(make_linear_net(backend))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"], lr=LEARNING_RATE)
    history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, validation_split=0.2, verbose=0)
    print(history.df.round(4).tail(3).to_string(index=False))
    w, b = read_linear_net(model.net, backend)
    return w, b, history


def show(level, w, b):
    """Print one estimate; return its largest distance from the true w and b."""
    print(f"{level:<14} w = [{w[0]:.3f}, {w[1]:.3f}]  b = {b:.3f}")
    return float(max(np.abs(w - TRUE_W).max(), abs(b - TRUE_B)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--out", default=".", help="folder for the PNG (default: here)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # write PNGs; no window, no display needed
    fitkit.set_seed(0)
    backend = fitkit.backend()
    epochs = 20
    x, y = make_data(256 if args.quick else 1000)

    low, mid = (
        (low_level_torch, mid_level_torch)
        if backend == "torch"
        else (low_level_tensorflow, mid_level_tensorflow)
    )
    print(f"== low level: a hand loop over raw parameters ({epochs} epochs)")
    low_w, low_b = low(x, y, epochs)
    print("== mid level: a layer, an optimizer and train_model")
    mid_w, mid_b = mid(x, y, epochs)
    print("== high level: fitkit.Model.fit (last epochs of the history)")
    high_w, high_b, history = high_level(x, y, epochs, backend)

    # The best any of the three can do on this sample: ordinary least squares.
    solution = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y[:, 0], rcond=None)[0]
    print(f"\nbackend: {backend}; true w = [2, -3], b = 3")
    show("least squares", solution[:2], solution[2])
    errors = {
        "low_error": show("low level", low_w, low_b),
        "mid_error": show("mid level", mid_w, mid_b),
        "high_error": show("high level", high_w, high_b),
    }

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = out / "linear_regression_history.png"
    history.plot().savefig(curves)
    print(f"saved {curves}")
    print("RESULT " + " ".join(f"{name}={value:.4f}" for name, value in errors.items()))
