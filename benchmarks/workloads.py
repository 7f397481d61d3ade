"""Benchmark workloads W1 (tiny MLP) and W2 (the tutorial's small CNN): data and weights.

Owns data generation and initial weights as numpy, so every implementation trains on the
identical data from the identical starting point; frameworks are imported by the runners.
"""

from __future__ import annotations

import itertools

import numpy as np

SEED = 0


def w1_data():
    """X (20000, 32) ~ N(0, 1); y = argmax(X·W + 0.5·noise) over 10 classes; 4000 val rows."""
    rng = np.random.default_rng(SEED)
    n, n_val, d, c = 20000, 4000, 32, 10
    x = rng.standard_normal((n + n_val, d)).astype("float32")
    w = rng.standard_normal((d, c)).astype("float32")
    y = np.argmax(x @ w + 0.5 * rng.standard_normal((n + n_val, c)), axis=1).astype("int64")
    return x[:n], y[:n], x[n:], y[n:]


def w2_data():
    """(4096, 1, 28, 28) ~ N(0, 1) plus a class-specific 5×5 ±1 template ×2 at a random place."""
    rng = np.random.default_rng(SEED)
    n, n_val, c = 4096, 1024, 10
    templates = rng.choice([-1.0, 1.0], size=(c, 5, 5)).astype("float32")
    x = rng.standard_normal((n + n_val, 1, 28, 28)).astype("float32")
    y = rng.integers(0, c, n + n_val).astype("int64")
    rows, cols = rng.integers(0, 24, n + n_val), rng.integers(0, 24, n + n_val)
    for i in range(n + n_val):
        x[i, 0, rows[i] : rows[i] + 5, cols[i] : cols[i] + 5] += 2.0 * templates[y[i]]
    return x[:n], y[:n], x[n:], y[n:]


def _uniform(rng, fan_in, shape):
    bound = 1.0 / np.sqrt(fan_in)  # torch's default bound for Linear / Conv2d
    return rng.uniform(-bound, bound, size=shape).astype("float32")


def w1_weights():
    """[(W, b)] for Linear 32-64, 64-64, 64-10, in torch layout (out, in)."""
    rng = np.random.default_rng(SEED + 1)
    sizes = [(32, 64), (64, 64), (64, 10)]
    return [(_uniform(rng, i, (o, i)), _uniform(rng, i, (o,))) for i, o in sizes]


def w2_weights():
    """conv1 (32,1,3,3), conv2 (64,32,5,5), fc1 (32,64), fc2 (10,32), torch layout, with biases."""
    rng = np.random.default_rng(SEED + 2)
    shapes = [((32, 1, 3, 3), 9), ((64, 32, 5, 5), 32 * 25), ((32, 64), 64), ((10, 32), 32)]
    return [(_uniform(rng, fan, shape), _uniform(rng, fan, shape[:1])) for shape, fan in shapes]


WORKLOADS = {
    "W1": {"data": w1_data, "weights": w1_weights, "batch_size": 64, "epochs": 3, "lr": 1e-3},
    "W2": {"data": w2_data, "weights": w2_weights, "batch_size": 128, "epochs": 2, "lr": 1e-3},
}


def torch_net(name: str):
    import torch
    import torch.nn as nn

    if name == "W1":
        net = nn.Sequential(
            nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
        )
        layers = [net[0], net[2], net[4]]
    else:
        net = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5),
            nn.MaxPool2d(2),
            nn.Dropout2d(0.1),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )
        layers = [net[0], net[2], net[7], net[9]]
    with torch.no_grad():
        for layer, (w, b) in zip(layers, WORKLOADS[name]["weights"](), strict=True):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    return net


def keras_net(name: str):
    import keras

    L = keras.layers
    if name == "W1":
        net = keras.Sequential(
            [
                keras.Input((32,)),
                L.Dense(64, activation="relu"),
                L.Dense(64, activation="relu"),
                L.Dense(10),
            ]
        )
        dense = net.layers
        values = [(w.T, b) for w, b in WORKLOADS[name]["weights"]()]
    else:
        net = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                L.Conv2D(32, 3),
                L.MaxPooling2D(2),
                L.Conv2D(64, 5),
                L.MaxPooling2D(2),
                L.SpatialDropout2D(0.1),
                L.GlobalMaxPooling2D(),
                L.Dense(32, activation="relu"),
                L.Dense(10),
            ]
        )
        dense = [net.layers[0], net.layers[2], net.layers[6], net.layers[7]]
        (c1, b1), (c2, b2), (f1, fb1), (f2, fb2) = WORKLOADS[name]["weights"]()
        values = [
            (c1.transpose(2, 3, 1, 0), b1),
            (c2.transpose(2, 3, 1, 0), b2),
            (f1.T, fb1),
            (f2.T, fb2),
        ]
    for layer, (w, b) in zip(dense, values, strict=True):
        layer.set_weights([w, b])
    return net


def channels_last(x: np.ndarray) -> np.ndarray:
    """Keras convolutions take (N, H, W, C)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


# ----------------------------------------------------------------------------- data paths
# The MLP and the large data of the memory and memmap rows (benchmarks/data_paths.py).
MLP_SIZES = (64, 64, 10)  # 64 features -> 64 (ReLU) -> 10 classes


def mlp_weights(sizes=MLP_SIZES, seed=SEED + 3):
    """[(W, b)] per Linear layer in torch layout (out, in), torch's default init bounds."""
    rng = np.random.default_rng(seed)
    return [
        (_uniform(rng, i, (o, i)), _uniform(rng, i, (o,))) for i, o in itertools.pairwise(sizes)
    ]


def torch_mlp(sizes=MLP_SIZES):
    import torch
    import torch.nn as nn

    layers = []
    for i, o in itertools.pairwise(sizes):
        layers += [nn.Linear(i, o), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for layer, (w, b) in zip(net[::2], mlp_weights(sizes), strict=True):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    return net


def keras_mlp(sizes=MLP_SIZES):
    import keras

    dense = [keras.layers.Dense(o, activation="relu") for o in sizes[1:-1]]
    dense.append(keras.layers.Dense(sizes[-1]))
    net = keras.Sequential([keras.Input((sizes[0],)), *dense])
    for layer, (w, b) in zip(dense, mlp_weights(sizes), strict=True):
        layer.set_weights([w.T, b])
    return net


def fill_classification(x, y, seed=SEED, chunk=250_000):
    """Fill preallocated x (n, d) float32 ~ N(0, 1) and y = argmax(x·W + 0.5·noise) in place,
    a chunk at a time: no temporary larger than a chunk (x may be a writable memmap)."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    w = rng.standard_normal((d, 10)).astype("float32")
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32)
        noise = rng.standard_normal((stop - start, 10), dtype=np.float32)
        y[start:stop] = np.argmax(x[start:stop] @ w + 0.5 * noise, axis=1)
