"""String metrics and losses: the same number on both backends, and the right number.

A bias-free identity layer makes the network's output equal the inputs, so each case
feeds fixed predictions through the real validate path of each backend.
"""
from __future__ import annotations

import numpy as np
import pytest

import fitkit

RNG = np.random.default_rng(42)
N = 203  # not a multiple of the batch size: the partial batch must count by its size


def identity_net(backend: str, width: int):
    if backend == "torch":
        import torch

        net = torch.nn.Linear(width, width, bias=False)
        with torch.no_grad():
            net.weight.copy_(torch.eye(width))
        return net
    import keras

    return keras.Sequential([keras.Input((width,)),
                             keras.layers.Dense(width, use_bias=False, kernel_initializer="identity")])


def evaluate(backend: str, monkeypatch, preds, y, loss, metrics):
    monkeypatch.setenv("FITKIT_BACKEND", backend)
    model = fitkit.Model(identity_net(backend, preds.shape[1]))
    model.compile("sgd", loss, metrics=metrics)
    return model.validate(preds, y, batch_size=32)


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def auc_exact(scores, target):
    pos, neg = scores[target == 1], scores[target == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return greater / (len(pos) * len(neg))


def macro(pred, true, classes, kind):
    values = []
    for c in range(classes):
        tp = np.sum((pred == c) & (true == c))
        denom = np.sum(pred == c) if kind == "precision" else np.sum(true == c)
        if denom:
            values.append(tp / denom)
    return float(np.mean(values))


def _logits(width):
    return RNG.standard_normal((N, width)).astype("float32") * 2


CASES = {}

z = _logits(1)
yb = (sigmoid(z[:, 0] + RNG.standard_normal(N)) > 0.5).astype("float32")[:, None]
CASES["binary_logits"] = (z, yb, "bce_with_logits", {
    "accuracy": np.mean((z > 0) == (yb > 0.5)),
    "precision": np.sum((z > 0) & (yb > 0.5)) / np.sum(z > 0),
    "recall": np.sum((z > 0) & (yb > 0.5)) / np.sum(yb > 0.5),
    "auc": auc_exact(sigmoid(z[:, 0]), yb[:, 0]),
    "loss": np.mean(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - z * yb),
})

p = sigmoid(_logits(1))
CASES["binary_probabilities"] = (p, yb, "bce", {
    "accuracy": np.mean((p > 0.5) == (yb > 0.5)),
    "auc": auc_exact(p[:, 0], yb[:, 0]),
    "loss": -np.mean(yb * np.log(p) + (1 - yb) * np.log(1 - p)),
})

z8 = _logits(8)
ys = RNG.integers(0, 8, N).astype("int64")
top5 = np.argsort(-z8, axis=1)[:, :5]
CASES["sparse_logits"] = (z8, ys, "cross_entropy", {
    "accuracy": np.mean(z8.argmax(1) == ys),
    "top_k_accuracy": np.mean((top5 == ys[:, None]).any(1)),
    "precision": macro(z8.argmax(1), ys, 8, "precision"),
    "recall": macro(z8.argmax(1), ys, 8, "recall"),
    "loss": -np.mean(np.log(softmax(z8)[np.arange(N), ys])),
})

p8 = softmax(z8).astype("float32")
onehot = np.eye(8, dtype="float32")[ys]
CASES["one_hot_probabilities"] = (p8, onehot, "categorical_crossentropy", {
    "accuracy": np.mean(p8.argmax(1) == ys),
    "loss": -np.mean(np.log(p8[np.arange(N), ys])),
})
CASES["sparse_probabilities"] = (p8, ys, "sparse_categorical_crossentropy", {
    "accuracy": np.mean(p8.argmax(1) == ys),
    "loss": -np.mean(np.log(p8[np.arange(N), ys])),
})

r = _logits(2)
yr = (r + RNG.standard_normal((N, 2))).astype("float32")
CASES["regression"] = (r, yr, "mse", {
    "mae": np.mean(np.abs(r - yr)), "mse": np.mean((r - yr) ** 2),
    "rmse": np.sqrt(np.mean((r - yr) ** 2)), "loss": np.mean((r - yr) ** 2),
})
CASES["huber"] = (r, yr, "huber", {
    "loss": np.mean(np.where(np.abs(r - yr) <= 1, 0.5 * (r - yr) ** 2, np.abs(r - yr) - 0.5)),
})


@pytest.mark.parametrize("case", sorted(CASES))
def test_metric_and_loss_values_match_reference_on_both_backends(case, monkeypatch):
    preds, y, loss, expected = CASES[case]
    names = [k for k in expected if k != "loss"]
    results = {b: evaluate(b, monkeypatch, preds, y, loss, names)
               for b in ("torch", "tensorflow")}
    for name, value in expected.items():
        tol = 2e-3 if name == "auc" else 1e-5  # AUC is computed from 1000 score bins
        assert results["torch"][name] == pytest.approx(value, rel=tol, abs=tol), name
        assert results["tensorflow"][name] == pytest.approx(results["torch"][name],
                                                            rel=1e-5, abs=1e-6), name


def test_accuracy_thresholds_probabilities_for_unknown_losses(monkeypatch):
    """A custom loss gives no hint: a single output is read as a probability (threshold 0.5)."""
    p = np.array([[0.2], [0.7], [0.4], [0.9]], "float32")
    y = np.array([[0.0], [1.0], [1.0], [1.0]], "float32")
    logs = evaluate("torch", monkeypatch, p, y, lambda pred, t: ((pred - t) ** 2).mean(),
                    ["accuracy"])
    assert logs["accuracy"] == pytest.approx(0.75)
