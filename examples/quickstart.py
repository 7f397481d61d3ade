"""Train a small classifier on the default backend and print the per-epoch table.

Run:  python examples/quickstart.py            (torch if installed, else TensorFlow)
      FITKIT_BACKEND=tensorflow python examples/quickstart.py
      python examples/quickstart.py --quick --out /tmp   (2 epochs; curves saved in /tmp)
"""

import argparse
import importlib.util
import os

import numpy as np

import fitkit


def make_data(n=2000, seed=0):
    """Two interleaved half-moons with noise: a small non-linear binary problem."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.stack([np.cos(angle) + label, np.sin(angle) * (1 - 2 * label) + 0.5 * label], 1)
    x += 0.15 * rng.standard_normal((n, 2))
    return x.astype("float32"), label.astype("float32")[:, None]


def make_net(backend):
    if backend == "torch":
        import torch.nn as nn

        return nn.Sequential(
            nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
        )
    import keras

    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, for the tests")
    parser.add_argument("--out", default=".", help="folder for the curves' PNG")
    args = parser.parse_args()
    fitkit.set_seed(0)
    x, y = make_data()
    model = fitkit.Model(make_net(fitkit.backend()))
    model.summary(input_shape=(2,))
    model.compile(optimizer="adam", loss="bce_with_logits", metrics=["accuracy", "auc"], lr=1e-2)
    history = model.fit(x, y, batch_size=64, epochs=2 if args.quick else 5, validation_split=0.2)
    print(history.df.round(4).to_string(index=False))
    print("validate:", {k: round(v, 4) for k, v in model.validate(x[-400:], y[-400:]).items()})
    if importlib.util.find_spec("matplotlib") is None:  # plotting is an optional extra
        print('curves not saved: pip install "fitkit[plot]" to get matplotlib')
    else:
        import matplotlib

        matplotlib.use("Agg")  # files only: no window needed
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "quickstart_history.png")
        history.plot().savefig(path)
        print(f"saved {path}")
