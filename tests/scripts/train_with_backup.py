"""A training run with BackupAndRestore that can SIGKILL itself mid-epoch (for resume tests).

usage: train_with_backup.py BACKEND BACKUP_DIR OUT.npz [KILL_EPOCH KILL_STEP] [--loader]
       [--val-loader] [--workers=N] [--generator] [--epoch-saves]

Dropout is on and the training data is shuffled: in-memory arrays with fit(shuffle=True), or
with --loader a shuffled torch DataLoader (--workers=N worker processes, --generator: a
generator of its own) / a tf.data pipeline with shuffle(); --val-loader validates on a
shuffled DataLoader / tf.data pipeline too (a DataLoader draws from torch's RNG at every
pass, even unshuffled).
Five epochs, so two or more follow the resumed one. The final weights and history go to OUT.npz.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
backend, backup_dir, out = sys.argv[1:4]
numbers = [int(v) for v in sys.argv[4:] if v.isdigit()]
kill = tuple(numbers[:2]) if numbers else None
flags = set(v.split("=")[0] for v in sys.argv[4:] if v.startswith("--"))
workers = int(next((v.split("=")[1] for v in sys.argv if v.startswith("--workers=")), 0))
os.environ["FITKIT_BACKEND"] = backend

import numpy as np  # noqa: E402

import fitkit  # noqa: E402

fitkit.set_seed(7)
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 6)).astype("float32")
y = (x[:, :3].sum(1) > 0).astype("int64")

if backend == "torch":
    import torch

    net = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2)
    )

    def loader(n, shuffle):
        generator = torch.Generator().manual_seed(11) if "--generator" in flags else None
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x[:n]), torch.from_numpy(y[:n])),
            batch_size=16,
            shuffle=shuffle,
            num_workers=workers,
            generator=generator,
        )
else:
    import keras
    import tensorflow as tf

    net = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(2),
        ]
    )

    def loader(n, shuffle):
        data = tf.data.Dataset.from_tensor_slices((x[:n], y[:n]))
        return (data.shuffle(n) if shuffle else data).batch(16)


class KillAt(fitkit.callbacks.Callback):
    """SIGKILL this process at (epoch, step): no cleanup, no flush, as a real kill."""

    def on_train_batch_end(self, batch, logs=None):
        if kill and (self.model.runtime.fit.epoch, batch + 1) == kill:
            os.kill(os.getpid(), signal.SIGKILL)


model = fitkit.Model(net)
model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01)
callbacks = [
    KillAt(),
    fitkit.callbacks.EarlyStopping("val_loss", patience=10),
    fitkit.callbacks.BackupAndRestore(
        backup_dir, save_freq="epoch" if "--epoch-saves" in flags else 3, verbose=0
    ),
]
val = loader(50, shuffle=True) if "--val-loader" in flags else (x[:50], y[:50])
if "--loader" in flags:
    history = model.fit(
        loader(200, shuffle=True), epochs=5, validation_data=val, callbacks=callbacks, verbose=0
    )
else:
    history = model.fit(
        x, y, batch_size=16, epochs=5, validation_data=val, callbacks=callbacks, verbose=0
    )
np.savez(
    out,
    *model.get_weights(),
    history=np.frombuffer(json.dumps(history.history).encode(), dtype=np.uint8),
)
