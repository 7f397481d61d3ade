"""Training cases run under DDP (2 CPU processes, gloo) and, for reference, in one process.

usage (under a launcher): ddp_train.py OUT_DIR CASE [CASE ...] | ddp_train.py OUT_DIR --crash
Each process writes OUT_DIR/<case>.rank<r>.npz: final weights, history, validate logs and
predictions. tests/torch/test_distribute_torch.py imports ``run`` for the one-process side.
"""

import json
import os
import sys

import numpy as np
import torch

import fitkit

CASES = (
    "arrays",
    "shuffle",
    "loader",
    "accumulation",
    "empty_share",
    "custom_step",
    "regression",
    "on_batch",
    "callbacks",
)


def data(n: int, task: str = "classes"):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 5)).astype("float32")
    if task == "classes":
        return x, np.argmax(x @ rng.standard_normal((5, 3)), axis=1).astype("int64")
    return x, (x @ rng.standard_normal((5, 2)) + 3.0).astype("float32")  # r2's shift matters


def mean_logit(y_pred, y):
    """A callable metric (averaged per batch, then over samples)."""
    return y_pred.mean()


class CustomStep(fitkit.Model):
    """A class-style step that calls the user's net directly (not DDP's forward)."""

    def train_step(self, batch):
        x, y, _ = self.unpack_batch(batch)
        y_pred = self.net(x)
        loss = torch.nn.functional.cross_entropy(y_pred, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.update_metrics(y, y_pred)
        return {"loss": loss}


def run(case: str, out_dir: str | None = None) -> dict:
    """Train ``case`` (inside a strategy or not); returns what the test compares. The
    "callbacks" case writes its files under ``out_dir``/r<rank>/."""
    return train(case, *build(case), out_dir)


def build(case: str) -> tuple:
    """The compiled model of ``case``, its net and data."""
    fitkit.set_seed(0)
    task = "regression" if case == "regression" else "classes"
    n = {"empty_share": 97, "accumulation": 97}.get(case, 100)
    x, y = data(n, task)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 2 if task == "regression" else 3),
    )
    model = (CustomStep if case == "custom_step" else fitkit.Model)(net)
    if task == "regression":
        model.compile("adam", "mse", metrics=["mae", "r2_score"], lr=0.01)
    else:
        model.compile(
            "adam",
            "cross_entropy",
            lr=0.01,
            metrics=["accuracy", "f1_score", "auc", mean_logit],
            gradient_accumulation_steps=3 if case == "accumulation" else 1,
        )
    return model, net, x, y


def train(case: str, model, net, x, y, out_dir: str | None = None) -> dict:
    """Fit, validate and predict ``model`` as ``case`` says."""
    if case == "shuffle":  # each process its own RNG: the order comes from rank 0
        torch.manual_seed(100 + fitkit.distribute.rank())
    out = {}
    if case == "on_batch":
        logs = [
            model.train_on_batch(x[:9], y[:9], return_dict=True) for _ in range(3)
        ]  # 9: shares differ
        out["history"] = {k: [log[k] for log in logs] for k in logs[0]}
        out["predict"] = model.predict_on_batch(x[:9])
    else:
        fit_x = x
        if case == "loader":
            fit_x = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                batch_size=32,
            )
        callbacks = []
        if case == "callbacks":  # stops at epoch 2 (no val_loss drop of 10), files by rank 0
            import tempfile

            files = os.path.join(out_dir or tempfile.mkdtemp(), f"r{fitkit.distribute.rank()}")
            callbacks = [
                fitkit.callbacks.EarlyStopping("val_loss", min_delta=10),
                fitkit.callbacks.ModelCheckpoint(os.path.join(files, "w{epoch}.pt")),
                fitkit.callbacks.CSVLogger(os.path.join(files, "log.csv")),
            ]
        history = model.fit(
            fit_x,
            None if case == "loader" else y,
            epochs=3,
            batch_size=None if case == "loader" else 32,  # a loader's own
            shuffle=case == "shuffle",
            validation_data=(x[:30], y[:30]),
            verbose=0,
            callbacks=callbacks,
        )
        out["history"] = history.history
        out["local_rows"] = model.runtime.adapter._trackers["train"].count  # this process's share
        out["predict"] = model.predict(x, batch_size=16)
        out["validate"] = model.validate(x[5:], y[5:], batch_size=8)
        if case == "loader":  # a Dataset, batched by predict (global batch 16)
            out["predict_dataset"] = model.predict(
                torch.utils.data.TensorDataset(torch.from_numpy(x)), batch_size=16
            )
    out["weights"] = model.get_weights()
    out["keys"] = list(net.state_dict())
    return out


def save(path: str, out: dict) -> None:
    arrays = {f"w{i}": w for i, w in enumerate(out["weights"])}
    arrays.update({k: v for k, v in out.items() if k.startswith("predict")})
    meta = {k: out[k] for k in ("history", "validate", "keys", "local_rows") if k in out}
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


class CrashAt(fitkit.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if fitkit.distribute.rank() == 1 and batch == 1:
            raise RuntimeError("rank 1 fails at step 2")


if __name__ == "__main__":
    out_dir, cases = sys.argv[1], sys.argv[2:]
    if cases == ["--after-scope"]:  # Keras's pattern: build and compile inside, train after
        with fitkit.distribute.strategy("ddp") as strategy:
            built = build("arrays")
        save(os.path.join(out_dir, f"after_scope.rank{strategy.rank}.npz"), train("arrays", *built))
        sys.exit(0)
    with fitkit.distribute.strategy("ddp") as strategy:
        rank = strategy.rank
        if cases == ["--crash"]:
            x, y = data(400)
            model = fitkit.Model(torch.nn.Linear(5, 3))
            model.compile("sgd", "cross_entropy")
            model.fit(x, y, batch_size=8, epochs=50, callbacks=[CrashAt()], verbose=0)
        for case in cases:
            save(os.path.join(out_dir, f"{case}.rank{rank}.npz"), run(case, out_dir))
        strategy.barrier()
