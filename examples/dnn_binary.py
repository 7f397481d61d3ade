"""A small DNN for binary classification on the tutorial's two rings, with its decision boundary.

Positive samples lie on a ring of radius about 5, negative ones on a ring of radius about 8
(both with noise), in 2-D: no straight line separates them, a few ReLU layers do. The example
trains with fitkit.Model.fit, prints the test accuracy, and saves two PNGs: the training
curves and the decision boundary (the predicted probability over a grid, with the points).

Run:  python examples/dnn_binary.py                    (torch if installed)
      FITKIT_BACKEND=tensorflow python examples/dnn_binary.py
      python examples/dnn_binary.py --quick --out /tmp   (small and fast, for the tests)
"""

import argparse
import pathlib

import numpy as np

import fitkit


def make_rings(n_per_class, seed=0):
    """The tutorial's data: radius 5 (label 1) and radius 8 (label 0), radial noise of 1."""
    rng = np.random.default_rng(seed)

    def ring(radius):
        r = radius + rng.normal(0.0, 1.0, n_per_class)
        theta = rng.uniform(0.0, 2 * np.pi, n_per_class)
        return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)

    x = np.concatenate([ring(5.0), ring(8.0)]).astype("float32")
    y = np.concatenate([np.ones(n_per_class), np.zeros(n_per_class)]).astype("float32")[:, None]
    order = rng.permutation(len(x))
    return x[order], y[order]


def make_net(backend):
    """The tutorial's DNN, a little wider (16-8 instead of 4-8) so that it does not hinge on a
    lucky initialisation; a sigmoid output, so predictions are probabilities."""
    if backend == "torch":
        import torch.nn as nn

        return nn.Sequential(
            nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid()
        )
    import keras

    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def plot_boundary(model, x, y, path):
    """Contours of P(positive) over a grid, the 0.5 line in black, and the points."""
    import matplotlib.pyplot as plt

    grid = np.linspace(-12, 12, 200, dtype="float32")
    gx, gy = np.meshgrid(grid, grid)
    probability = model.predict(np.c_[gx.ravel(), gy.ravel()], batch_size=4096)
    probability = probability.reshape(gx.shape)

    fig, ax = plt.subplots(figsize=(6, 6))
    filled = ax.contourf(
        gx, gy, probability, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6
    )
    ax.contour(gx, gy, probability, levels=[0.5], colors="black", linewidths=2)
    positive = y[:, 0] == 1
    ax.scatter(x[positive, 0], x[positive, 1], s=4, c="darkred", label="positive (r ~ 5)")
    ax.scatter(x[~positive, 0], x[~positive, 1], s=4, c="navy", label="negative (r ~ 8)")
    fig.colorbar(filled, ax=ax, label="predicted P(positive)")
    ax.set_aspect("equal")
    ax.set_title("decision boundary (black: P = 0.5)")
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--out", default=".", help="folder for the PNGs (default: here)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # write PNGs; no window, no display needed
    fitkit.set_seed(0)
    n_per_class, epochs = (500, 8) if args.quick else (2000, 30)
    x, y = make_rings(n_per_class)
    split = int(0.75 * len(x))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]

    model = fitkit.Model(make_net(fitkit.backend()))
    model.summary(input_shape=(2,))
    # "bce" takes probabilities (the sigmoid's output), as Keras's binary_crossentropy does.
    model.compile(optimizer="adam", loss="bce", metrics=["accuracy", "auc"], lr=0.01)
    history = model.fit(
        x_train, y_train, batch_size=32, epochs=epochs, validation_split=0.2, verbose=2
    )
    test = model.validate(x_test, y_test)
    print("test:", {name: round(value, 4) for name, value in test.items()})

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves, boundary = out / "dnn_binary_history.png", out / "dnn_binary_boundary.png"
    history.plot().savefig(curves)
    plot_boundary(model, x_test, y_test, boundary)
    print(f"saved {curves}")
    print(f"saved {boundary}")
    print(f"RESULT accuracy={test['accuracy']:.4f} auc={test['auc']:.4f}")
