"""Training controls on both backends: gradient clipping, gradient accumulation, fp16 mixed
precision, jit compilation, and the batch scheduler's place after each real update."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_regression

import fitkit


def linear(kit, n_in: int = 3, n_out: int = 1):
    """One dense layer, no activation: its gradients have a closed form."""
    if kit.name == "torch":
        return kit.torch.nn.Linear(n_in, n_out)
    return kit.keras.Sequential([kit.keras.Input((n_in,)), kit.keras.layers.Dense(n_out)])


def kernel_and_bias(kit, net) -> tuple[np.ndarray, np.ndarray]:
    """(W of shape (in, out), b) of a ``linear`` network, as numpy."""
    w, b = kit.weights(net)
    return (w.T if kit.name == "torch" else w), b


def update_count(model) -> int:
    """Real optimizer updates so far (torch: Adam's step; TensorFlow: iterations)."""
    optimizer = model.optimizer
    if model.backend == "torch":
        return int(next(iter(optimizer.state.values()))["step"])
    return int(optimizer.iterations)


def mse_gradients(x, y, w, b) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of mean((x @ w + b - y) ** 2) (Keras's sum-over-batch-size mean)."""
    err = x @ w + b - y
    scale = 2.0 / err.size
    return scale * x.T @ err, scale * err.sum(0)


def _data(n: int = 8, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype("float32")
    y = (10.0 + 5.0 * rng.standard_normal((n, 1))).astype("float32")  # large gradients
    return x, y


@pytest.mark.parametrize(
    "kind, value", [("clipnorm", 0.5), ("global_clipnorm", 0.5), ("clipvalue", 0.05)]
)
def test_clipping_changes_weights_by_exactly_the_clipped_gradient(kit, kind, value):
    x, y = _data()
    net = linear(kit)
    model = fitkit.Model(net)
    model.compile("sgd", "mse", lr=1.0, **{kind: value})
    w0, b0 = kernel_and_bias(kit, net)
    gw, gb = mse_gradients(x, y, w0, b0)
    if kind == "clipnorm":  # each gradient separately: g * c / max(|g|, c)
        assert np.linalg.norm(gw) > value and np.linalg.norm(gb) > value
        gw, gb = (g * value / max(np.linalg.norm(g), value) for g in (gw, gb))
    elif kind == "global_clipnorm":  # all together
        total = np.sqrt(np.sum(gw**2) + np.sum(gb**2))
        assert total > value
        gw, gb = gw * value / total, gb * value / total
    else:
        assert np.abs(gw).max() > value
        gw, gb = np.clip(gw, -value, value), np.clip(gb, -value, value)
    model.train_on_batch(x, y)
    w1, b1 = kernel_and_bias(kit, net)
    np.testing.assert_allclose(w0 - w1, gw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b0 - b1, gb, rtol=1e-4, atol=1e-6)


def test_clipnorm_then_clipvalue_both_apply(kit):
    x, y = _data()
    net = linear(kit)
    model = fitkit.Model(net)
    model.compile("sgd", "mse", lr=1.0, clipnorm=1.0, clipvalue=0.3)
    w0, b0 = kernel_and_bias(kit, net)
    gw, gb = mse_gradients(x, y, w0, b0)
    gw, gb = (np.clip(g / max(np.linalg.norm(g), 1.0), -0.3, 0.3) for g in (gw, gb))
    model.train_on_batch(x, y)
    w1, b1 = kernel_and_bias(kit, net)
    np.testing.assert_allclose(w0 - w1, gw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b0 - b1, gb, rtol=1e-4, atol=1e-6)


def _trained(
    kit, steps: int, batch_size: int, x, y, *, epochs: int = 2, by_batch=False, **fit_kwargs
):
    fitkit.set_seed(5)
    net = linear(kit)
    model = fitkit.Model(net)
    model.compile("adam", "mse", lr=0.05, gradient_accumulation_steps=steps)
    if by_batch:  # the fit loop's order, by hand: batches, then the epoch's end
        for _ in range(epochs):
            for i in range(0, len(x), batch_size):
                model.train_on_batch(x[i : i + batch_size], y[i : i + batch_size])
            model.runtime.adapter.finish_epoch()
    else:
        model.fit(
            x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, **fit_kwargs
        )
    return model, kit.weights(net)


def test_accumulation_with_uneven_last_window_equals_a_larger_batch(kit):
    x, y = _data(22)  # batches of 4: 4 4 4 | 4 4 2 -> windows of 12 and 10 rows
    accumulated, w_acc = _trained(kit, 3, 4, x, y, by_batch=True)
    large, w_large = _trained(kit, 1, 12, x, y, by_batch=True)  # batches of 12 and 10
    for a, b in zip(w_acc, w_large, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert update_count(accumulated) == update_count(large) == 4


def test_fit_with_accumulation_equals_a_larger_batch(kit):
    """Needs the fit loop to call adapter.finish_epoch() at each epoch end."""
    x, y = _data(26)  # batches of 3: 3 3 3 3 | 3 3 3 3 | 2 -> 12, 12 and 2 rows
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(x)).astype("float32")
    accumulated, w_acc = _trained(kit, 4, 3, x, y, epochs=3, sample_weight=w)
    large, w_large = _trained(kit, 1, 12, x, y, epochs=3, sample_weight=w)
    for a, b in zip(w_acc, w_large, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert update_count(accumulated) == update_count(large) == 9
    assert accumulated.history.history["loss"] == pytest.approx(
        large.history.history["loss"], rel=1e-5
    )  # the same weights at each step: same losses


def test_accumulation_with_clipping_clips_the_window_mean(kit):
    x, y = _data(8)
    net = linear(kit)
    model = fitkit.Model(net)
    model.compile("sgd", "mse", lr=1.0, gradient_accumulation_steps=2, global_clipnorm=0.5)
    w0, b0 = kernel_and_bias(kit, net)
    gw, gb = mse_gradients(x, y, w0, b0)  # the whole window's mean gradient
    total = np.sqrt(np.sum(gw**2) + np.sum(gb**2))
    model.train_on_batch(x[:5], y[:5])
    np.testing.assert_array_equal(kernel_and_bias(kit, net)[0], w0)  # nothing applied yet
    model.train_on_batch(x[5:], y[5:])
    w1, b1 = kernel_and_bias(kit, net)
    np.testing.assert_allclose(w0 - w1, gw * 0.5 / total, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b0 - b1, gb * 0.5 / total, rtol=1e-4, atol=1e-6)


def test_accumulation_state_saves_and_loads_a_pending_window(kit):
    x, y = _data(8)
    model, _ = _trained(kit, 3, 4, x[:4], y[:4], epochs=0)
    model.train_on_batch(x[:4], y[:4])  # one batch of a window of three is pending
    saved = model.runtime.adapter.accumulation.state()
    assert int(saved["count"]) == 1 and int(saved["rows"]) == 4
    model.train_on_batch(x[4:], y[4:])
    model.runtime.adapter.accumulation.load(saved)
    assert int(model.runtime.adapter.accumulation.state()["count"]) == 1
    plain = fitkit.Model(linear(kit))
    plain.compile("sgd", "mse")
    assert plain.runtime.adapter.accumulation is None


def test_fp16_on_torch_cpu_trains_with_finite_losses(torch_kit):
    x, y = make_regression(256)
    model = fitkit.Model(torch_kit.mlp(4, 1), device="cpu")
    model.compile(
        "adam", "mse", lr=1e-2, precision="fp16", clipnorm=1.0, gradient_accumulation_steps=2
    )
    history = model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
    assert model.runtime.adapter.accumulation.scaler is not None
    with model.autocast():
        out = model.net(torch_kit.tensor(x[:2]))
    assert out.dtype == torch_kit.torch.float16


def test_fp16_on_tensorflow_needs_the_mixed_float16_policy(tf_kit):
    model = fitkit.Model(tf_kit.mlp(4, 1))
    with pytest.raises(
        fitkit.errors.FitkitValueError, match=r"set_global_policy\('mixed_float16'\)"
    ):
        model.compile("adam", "mse", precision="fp16")


def test_fp16_on_tensorflow_trains_with_a_loss_scale_and_unscaled_losses(tf_kit):
    x, y = make_regression(256)
    keras = tf_kit.keras
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = tf_kit.mlp(4, 1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model = fitkit.Model(net)
    model.compile(
        "adam", "mse", lr=1e-2, precision="fp16", clipnorm=1.0, gradient_accumulation_steps=2
    )
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
    assert losses[0] < 100  # the logged loss is not multiplied by the loss scale
    skipped = 16 - int(model.optimizer.iterations)  # 8 windows a epoch; an overflow skips one
    assert 0 <= skipped <= 2 and float(model.optimizer.dynamic_scale) == 32768 / 2**skipped


def _fit_weights(kit, x, y, **compile_kwargs):
    fitkit.set_seed(2)
    net = kit.mlp(4, 1)
    model = fitkit.Model(net)
    model.compile("adam", "mse", metrics=["mae"], lr=1e-2, **compile_kwargs)
    history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    return kit.weights(net), history.history, model.predict(x[:8])


def test_jit_compile_matches_eager(kit):
    x, y = make_regression(96)
    eager = _fit_weights(kit, x, y)
    jit = _fit_weights(kit, x, y, jit_compile=True)
    for a, b in zip(eager[0], jit[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for key in eager[1]:
        assert jit[1][key] == pytest.approx(eager[1][key], rel=1e-4)
    np.testing.assert_allclose(eager[2], jit[2], rtol=1e-4, atol=1e-6)


def test_batch_scheduler_steps_after_each_real_update(torch_kit):
    torch = torch_kit.torch
    x, y = _data(16)
    model = fitkit.Model(torch.nn.Linear(3, 1))
    model.compile(
        "sgd",
        "mse",
        lr=1.0,
        gradient_accumulation_steps=2,
        lr_schedule_every="batch",
        lr_schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
    )
    for i in range(0, 16, 4):  # four batches, two updates
        model.train_on_batch(x[i : i + 4], y[i : i + 4])
    assert model.learning_rate == pytest.approx(0.25)


def test_a_loss_scale_optimizer_passed_in_full_precision_still_takes_true_steps(tf_kit):
    x, y = _data()
    net = linear(tf_kit)
    model = fitkit.Model(net)
    model.compile(
        tf_kit.keras.optimizers.LossScaleOptimizer(tf_kit.keras.optimizers.SGD(1.0)), "mse"
    )
    w0, b0 = kernel_and_bias(tf_kit, net)
    gw, gb = mse_gradients(x, y, w0, b0)
    model.train_on_batch(x, y)
    w1, b1 = kernel_and_bias(tf_kit, net)
    np.testing.assert_allclose(w0 - w1, gw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b0 - b1, gb, rtol=1e-4, atol=1e-5)


def test_jit_compile_without_torch_compile_is_a_clear_error(torch_kit, monkeypatch):
    monkeypatch.setattr(torch_kit.torch._dynamo, "is_dynamo_supported", lambda: False)
    x, y = _data()
    model = fitkit.Model(linear(torch_kit))
    model.compile("sgd", "mse", jit_compile=True)
    with pytest.raises(fitkit.errors.FitkitError, match="jit_compile=False"):
        model.fit(x, y, verbose=0)
