"""String metrics and losses: the same number on both backends, and the right number.

A bias-free identity layer makes the network's output equal the inputs, so each case
feeds fixed predictions through the real validate path of each backend. Sample-weighted
metrics are fed to the metric objects directly and compared with keras.metrics.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

import fitkit
import fitkit.metrics as fm
from fitkit import specs
from fitkit.errors import FitkitValueError
from fitkit.targets import TargetMode

RNG = np.random.default_rng(42)
BACKENDS = ("torch", "tensorflow")
N = 203  # not a multiple of the batch size: the partial batch must count by its size


def identity_net(backend: str, width: int):
    if backend == "torch":
        import torch

        net = torch.nn.Linear(width, width, bias=False)
        with torch.no_grad():
            net.weight.copy_(torch.eye(width))
        return net
    import keras

    return keras.Sequential(
        [
            keras.Input((width,)),
            keras.layers.Dense(width, use_bias=False, kernel_initializer="identity"),
        ]
    )


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
        denom = {
            "precision": np.sum(pred == c),
            "recall": np.sum(true == c),
            "f1": np.sum(pred == c) + np.sum(true == c),
        }[kind]
        if denom:
            values.append((2 * tp if kind == "f1" else tp) / denom)
    return float(np.mean(values))


def r2(pred, true):
    """sklearn.metrics.r2_score's formula, averaged uniformly over columns."""
    residual = ((true - pred) ** 2).sum(0)
    total = ((true - true.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - residual / total))


def _logits(width):
    return RNG.standard_normal((N, width)).astype("float32") * 2


CASES = {}

z = _logits(1)
yb = (sigmoid(z[:, 0] + RNG.standard_normal(N)) > 0.5).astype("float32")[:, None]
CASES["binary_logits"] = (
    z,
    yb,
    "bce_with_logits",
    {
        "accuracy": np.mean((z > 0) == (yb > 0.5)),
        "precision": np.sum((z > 0) & (yb > 0.5)) / np.sum(z > 0),
        "recall": np.sum((z > 0) & (yb > 0.5)) / np.sum(yb > 0.5),
        "auc": auc_exact(sigmoid(z[:, 0]), yb[:, 0]),
        "f1_score": 2 * np.sum((z > 0) & (yb > 0.5)) / (np.sum(z > 0) + np.sum(yb > 0.5)),
        "loss": np.mean(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - z * yb),
    },
)

p = sigmoid(_logits(1))
CASES["binary_probabilities"] = (
    p,
    yb,
    "bce",
    {
        "accuracy": np.mean((p > 0.5) == (yb > 0.5)),
        "auc": auc_exact(p[:, 0], yb[:, 0]),
        "loss": -np.mean(yb * np.log(p) + (1 - yb) * np.log(1 - p)),
    },
)

z8 = _logits(8)
ys = RNG.integers(0, 8, N).astype("int64")
top5 = np.argsort(-z8, axis=1)[:, :5]
CASES["sparse_logits"] = (
    z8,
    ys,
    "cross_entropy",
    {
        "accuracy": np.mean(z8.argmax(1) == ys),
        "top_k_accuracy": np.mean((top5 == ys[:, None]).any(1)),
        "sparse_top_k_categorical_accuracy": np.mean((top5 == ys[:, None]).any(1)),
        "f1_score": macro(z8.argmax(1), ys, 8, "f1"),
        "precision": macro(z8.argmax(1), ys, 8, "precision"),
        "recall": macro(z8.argmax(1), ys, 8, "recall"),
        "loss": -np.mean(np.log(softmax(z8)[np.arange(N), ys])),
    },
)

p8 = softmax(z8).astype("float32")
onehot = np.eye(8, dtype="float32")[ys]
CASES["one_hot_probabilities"] = (
    p8,
    onehot,
    "categorical_crossentropy",
    {
        "accuracy": np.mean(p8.argmax(1) == ys),
        "top_k_categorical_accuracy": np.mean((top5 == ys[:, None]).any(1)),
        "f1_score": macro(p8.argmax(1), ys, 8, "f1"),
        "loss": -np.mean(np.log(p8[np.arange(N), ys])),
    },
)
CASES["sparse_probabilities"] = (
    p8,
    ys,
    "sparse_categorical_crossentropy",
    {
        "accuracy": np.mean(p8.argmax(1) == ys),
        "loss": -np.mean(np.log(p8[np.arange(N), ys])),
    },
)

r = _logits(2)
yr = (r + RNG.standard_normal((N, 2))).astype("float32")
CASES["regression"] = (
    r,
    yr,
    "mse",
    {
        "mae": np.mean(np.abs(r - yr)),
        "mse": np.mean((r - yr) ** 2),
        "rmse": np.sqrt(np.mean((r - yr) ** 2)),
        "r2_score": r2(r, yr),
        "loss": np.mean((r - yr) ** 2),
    },
)
CASES["huber"] = (
    r,
    yr,
    "huber",
    {
        "loss": np.mean(np.where(np.abs(r - yr) <= 1, 0.5 * (r - yr) ** 2, np.abs(r - yr) - 0.5)),
    },
)


@pytest.mark.parametrize("case", sorted(CASES))
def test_metric_and_loss_values_match_reference_on_both_backends(case, monkeypatch):
    preds, y, loss, expected = CASES[case]
    names = [k for k in expected if k != "loss"]
    results = {b: evaluate(b, monkeypatch, preds, y, loss, names) for b in ("torch", "tensorflow")}
    for name, value in expected.items():
        tol = 2e-3 if name == "auc" else 1e-5  # AUC is computed from 1000 score bins
        assert results["torch"][name] == pytest.approx(value, rel=tol, abs=tol), name
        assert results["tensorflow"][name] == pytest.approx(
            results["torch"][name], rel=1e-5, abs=1e-6
        ), name


def test_accuracy_thresholds_probabilities_for_unknown_losses(monkeypatch):
    """A custom loss gives no hint: a single output is read as a probability (threshold 0.5)."""
    p = np.array([[0.2], [0.7], [0.4], [0.9]], "float32")
    y = np.array([[0.0], [1.0], [1.0], [1.0]], "float32")
    logs = evaluate(
        "torch", monkeypatch, p, y, lambda pred, t: ((pred - t) ** 2).mean(), ["accuracy"]
    )
    assert logs["accuracy"] == pytest.approx(0.75)


# ---------------------------------------------------------------- sample-weighted metrics
W = RNG.uniform(0.0, 2.0, N).astype("float32")
W[::7] = 0.0  # weight 0 masks a sample
SPLITS = (0, 64, 128, N)  # three batches, the last one partial


def batches(preds, y, w):
    return [
        (preds[a:b], y[a:b], None if w is None else w[a:b]) for a, b in itertools.pairwise(SPLITS)
    ]


def _module(backend):
    if backend == "torch":
        from fitkit.torch import metrics
    else:
        from fitkit.tf import metrics
    return metrics


def fitkit_value(backend, spec, task, width, data):
    """One metric built from ``spec`` on a backend, fed (pred, y, w) batches as the adapters do."""
    [metric] = specs.build_metrics([spec], _module(backend))
    if backend == "torch":
        import torch

        metric.build(TargetMode(*task), width, torch.device("cpu"))
        for p, t, w in data:
            metric.update(
                torch.as_tensor(p), torch.as_tensor(t), None if w is None else torch.as_tensor(w)
            )
        return float(metric.result())
    import tensorflow as tf

    metric.build(TargetMode(*task), width)
    update = tf.function(metric.update, reduce_retracing=True)  # as inside compiled steps
    for p, t, w in data:
        update(tf.constant(t), tf.constant(p), None if w is None else tf.constant(w))
    return float(metric.result())


def keras_value(reference, data):
    import keras

    name, kwargs = reference
    metric = getattr(keras.metrics, name)(**kwargs)
    for p, t, w in data:
        metric.update_state(t, p, sample_weight=w)
    return float(np.asarray(metric.result()))


def auc_weighted(scores, target, w):
    pos, neg = target == 1, target == 0
    wp, wn, sp, sn = w[pos], w[neg], scores[pos], scores[neg]
    wins = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
    return (wp[:, None] * wn[None, :] * wins).sum() / (wp.sum() * wn.sum())


z_seq = RNG.standard_normal((N, 3, 4)).astype("float32")  # (N, T, C) sequence logits
y_seq = RNG.integers(0, 4, (N, 3)).astype("int64")
r_seq = RNG.standard_normal((N, 3, 2)).astype("float32")
y_rseq = (r_seq + RNG.standard_normal((N, 3, 2))).astype("float32")
SPARSE, ONE_HOT, BINARY, LOGITS, REGRESSION = (
    ("sparse", True),
    ("categorical", False),
    ("binary", False),
    ("binary", True),
    ("regression", False),
)

# id: (fitkit metric, preds, y, (task, from_logits), keras.metrics reference[, keras preds])
WEIGHTED = {
    "sparse_accuracy": ("accuracy", z8, ys, SPARSE, ("SparseCategoricalAccuracy", {})),
    "sparse_categorical_accuracy": (
        "sparse_categorical_accuracy",
        z8,
        ys,
        SPARSE,
        ("SparseCategoricalAccuracy", {}),
    ),
    "categorical_accuracy": (
        "categorical_accuracy",
        p8,
        onehot,
        ONE_HOT,
        ("CategoricalAccuracy", {}),
    ),
    "binary_accuracy": ("binary_accuracy", p, yb, BINARY, ("BinaryAccuracy", {})),
    "accuracy_threshold": (fm.Accuracy(0.3), p, yb, BINARY, ("BinaryAccuracy", {"threshold": 0.3})),
    "accuracy_threshold_logits": (
        fm.Accuracy(0.3),
        z,
        yb,
        LOGITS,
        ("BinaryAccuracy", {"threshold": 0.3}),
        sigmoid(z),
    ),
    "sequence_accuracy": ("accuracy", z_seq, y_seq, SPARSE, ("SparseCategoricalAccuracy", {})),
    "mae": ("mae", r, yr, REGRESSION, ("MeanAbsoluteError", {})),
    "mse": ("mse", r, yr, REGRESSION, ("MeanSquaredError", {})),
    "rmse": ("rmse", r, yr, REGRESSION, ("RootMeanSquaredError", {})),
    "sequence_mae": ("mae", r_seq, y_rseq, REGRESSION, ("MeanAbsoluteError", {})),
    "sparse_top_k": (
        "sparse_top_k_categorical_accuracy",
        z8,
        ys,
        SPARSE,
        ("SparseTopKCategoricalAccuracy", {"k": 5}),
    ),
    "top_3": (fm.TopKAccuracy(k=3), z8, ys, SPARSE, ("SparseTopKCategoricalAccuracy", {"k": 3})),
    "top_k_categorical": (
        "top_k_categorical_accuracy",
        p8,
        onehot,
        ONE_HOT,
        ("TopKCategoricalAccuracy", {"k": 5}),
    ),
    "precision": ("precision", p, yb, BINARY, ("Precision", {})),
    "recall": ("recall", p, yb, BINARY, ("Recall", {})),
    "precision_logits": (
        fm.Precision(0.3),
        z,
        yb,
        LOGITS,
        ("Precision", {"thresholds": 0.3}),
        sigmoid(z),
    ),
    "recall_logits": (fm.Recall(0.3), z, yb, LOGITS, ("Recall", {"thresholds": 0.3}), sigmoid(z)),
    "f1_binary": ("f1_score", p, yb, BINARY, ("F1Score", {"average": "micro", "threshold": 0.5})),
    "f1_threshold": (
        fm.F1Score(0.3),
        p,
        yb,
        BINARY,
        ("F1Score", {"average": "micro", "threshold": 0.3}),
    ),
    "f1_macro": ("f1_score", p8, onehot, ONE_HOT, ("F1Score", {"average": "macro"})),
    "r2_score": ("r2_score", r, yr, REGRESSION, ("R2Score", {})),
}


@pytest.mark.parametrize("case", sorted(WEIGHTED))
def test_weighted_metrics_match_keras_metrics_on_both_backends(case):
    spec, preds, y, task, reference, *keras_preds = WEIGHTED[case]
    keras_preds = keras_preds[0] if keras_preds else preds
    width = preds.shape[-1]
    values = {b: fitkit_value(b, spec, task, width, batches(preds, y, W)) for b in BACKENDS}
    expected = keras_value(reference, batches(keras_preds, y, W))
    assert values["torch"] == pytest.approx(expected, rel=2e-5, abs=1e-6)
    assert values["tensorflow"] == pytest.approx(values["torch"], rel=1e-9, abs=1e-12)
    # the weights change the value here; unweighted, fitkit still gives Keras's number
    unweighted = keras_value(reference, batches(keras_preds, y, None))
    assert expected != pytest.approx(unweighted, rel=1e-3, abs=1e-3)
    for backend in BACKENDS:
        assert fitkit_value(backend, spec, task, width, batches(preds, y, None)) == pytest.approx(
            unweighted, rel=2e-5, abs=1e-6
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_weighted_metrics_through_validate(backend, monkeypatch):
    """The real path: validate(sample_weight=...) weights every weighted_metrics entry as Keras
    does (and leaves metrics= unweighted)."""
    monkeypatch.setenv("FITKIT_BACKEND", backend)
    for preds, y, loss, metrics, references in (
        (
            r,
            yr,
            "mse",
            ["mae", "rmse", "r2_score"],
            [("MeanAbsoluteError", {}), ("RootMeanSquaredError", {}), ("R2Score", {})],
        ),
        (
            z8,
            ys,
            "cross_entropy",
            ["accuracy", "sparse_top_k_categorical_accuracy"],
            [("SparseCategoricalAccuracy", {}), ("SparseTopKCategoricalAccuracy", {"k": 5})],
        ),
    ):
        model = fitkit.Model(identity_net(backend, preds.shape[1]))
        model.compile("sgd", loss, metrics=metrics, weighted_metrics=metrics)
        logs = model.validate(preds, y, sample_weight=W, batch_size=64)
        for name, reference in zip(metrics, references, strict=True):
            expected = keras_value(reference, batches(preds, y, W))
            assert logs[f"weighted_{name}"] == pytest.approx(expected, rel=2e-5, abs=1e-6), name
            plain = keras_value(reference, batches(preds, y, None))
            assert logs[name] == pytest.approx(plain, rel=2e-5, abs=1e-6), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_weighted_auc_and_user_callables(backend):
    got = fitkit_value(backend, "auc", LOGITS, 1, batches(z, yb, W))
    assert got == pytest.approx(auc_weighted(sigmoid(z[:, 0]), yb[:, 0], W), abs=2e-3)
    got = fitkit_value(backend, "auc", SPARSE, 8, batches(z8, ys, W))
    one_vs_rest = auc_weighted(softmax(z8).ravel(), np.eye(8)[ys].ravel(), np.repeat(W, 8))
    assert got == pytest.approx(one_vs_rest, abs=2e-3)
    assert got != pytest.approx(
        fitkit_value(backend, "auc", SPARSE, 8, batches(z8, ys, None)), abs=1e-3
    )

    # a user callable: each batch's value counts for the batch's total weight
    def mean_pred(*args):  # torch order (pred, y); Keras order (y, pred), reduced by fitkit
        return args[0].mean() if backend == "torch" else args[1]

    got = fitkit_value(backend, mean_pred, REGRESSION, 2, batches(r, yr, W))
    parts = batches(r, yr, W)
    assert got == pytest.approx(sum(b.mean() * w.sum() for b, _, w in parts) / W.sum(), rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_r2_score_is_exact_for_constant_and_offset_columns(backend):
    """sklearn's r2 (constant column: 1 if predicted exactly, else 0), no cancellation."""
    true = np.stack([np.full(N, 0.1), 1e4 + RNG.standard_normal(N), np.full(N, 3.0)], 1)
    pred = true + np.stack([0.1 * RNG.standard_normal(N), RNG.standard_normal(N), np.zeros(N)], 1)
    true, pred = true.astype("float32"), pred.astype("float32")
    t64, p64 = true.astype("float64"), pred.astype("float64")
    middle = 1 - ((t64[:, 1] - p64[:, 1]) ** 2).sum() / ((t64[:, 1] - t64[:, 1].mean()) ** 2).sum()
    got = fitkit_value(backend, "r2_score", REGRESSION, 3, batches(pred, true, None))
    assert got == pytest.approx((0.0 + middle + 1.0) / 3, rel=1e-9)
    w = W.astype("float64")
    mean = (w * t64[:, 1]).sum() / w.sum()
    middle = 1 - (w * (t64[:, 1] - p64[:, 1]) ** 2).sum() / (w * (t64[:, 1] - mean) ** 2).sum()
    got = fitkit_value(backend, fm.R2Score(), REGRESSION, 3, batches(pred, true, W))
    assert got == pytest.approx((0.0 + middle + 1.0) / 3, rel=1e-9)


def test_keras_native_metrics_get_the_weights():
    import keras

    native = keras.metrics.SparseCategoricalAccuracy(name="keras_acc")
    got = fitkit_value("tensorflow", native, SPARSE, 8, batches(z8, ys, W))
    assert got == pytest.approx(
        keras_value(("SparseCategoricalAccuracy", {}), batches(z8, ys, W)), rel=1e-6
    )


def test_torchmetrics_native_metrics_refuse_weights():
    def fake_torchmetric():  # torchmetrics' interface: fitkit recognises it by its methods
        calls = []
        return SimpleNamespace(
            update=lambda pred, target: calls.append(1),
            reset=calls.clear,
            compute=lambda: len(calls),
            to=lambda device: None,
        )

    assert fitkit_value("torch", fake_torchmetric(), SPARSE, 8, batches(z8, ys, None)) == 3
    with pytest.raises(FitkitValueError, match="takes no sample weights"):
        fitkit_value("torch", fake_torchmetric(), SPARSE, 8, batches(z8, ys, W))


class NoHostSync:
    """Fails on any torch op that reads a device value on the host (item, bool, nonzero…)."""

    SYNCS = (
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::is_nonzero",
        "aten::equal",
        "aten::masked_select",
        "aten::unique",
        "aten::_unique2",
    )

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                assert func._schema.name not in cls.SYNCS, f"host sync: {func._schema.name}"
                return func(*args, **(kwargs or {}))

        return Mode()


SYNC_CASES = (
    (
        [
            "accuracy",
            "sparse_categorical_accuracy",
            "top_k_accuracy",
            "auc",
            "precision",
            "recall",
            "f1_score",
            "sparse_top_k_categorical_accuracy",
        ],
        z8,
        ys,
        SPARSE,
    ),
    (
        ["categorical_accuracy", "top_k_categorical_accuracy", "auc", "f1_score"],
        p8,
        onehot,
        ONE_HOT,
    ),
    (["binary_accuracy", "auc", "precision", "recall", "f1_score"], z, yb, LOGITS),
    (["mae", "mse", "rmse", "r2_score"], r, yr, REGRESSION),
)


@pytest.mark.parametrize("weighted", [False, True])
def test_torch_metric_updates_and_results_never_sync(weighted):
    import torch

    from fitkit.torch import metrics as module

    covered = set()
    for names, preds, y, task in SYNC_CASES:
        p, t = torch.as_tensor(preds[:64]), torch.as_tensor(y[:64])
        w = torch.as_tensor(W[:64]) if weighted else None
        for metric in specs.build_metrics([*names, lambda pred, _: pred.mean()], module):
            metric.build(TargetMode(*task), preds.shape[-1], torch.device("cpu"))
            with NoHostSync():
                metric.update(p, t, w)
                metric.update(p, t, w)
                metric.result()
            if hasattr(metric, "count"):  # unweighted counts stay Python ints
                assert isinstance(metric.count, int) != weighted, metric.name
        covered.update(names)
    assert covered == set(specs.METRICS)
