"""A training run with BackupAndRestore that can SIGKILL itself mid-epoch (for resume tests).

usage: train_with_backup.py BACKEND BACKUP_DIR OUT.npz [KILL_EPOCH KILL_STEP] [--loader|--arrays] [--epoch-saves]
Shuffling and dropout are on; the final weights and history go to OUT.npz.
"""
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
backend, backup_dir, out = sys.argv[1:4]
numbers = [int(v) for v in sys.argv[4:] if v.isdigit()]
kill = tuple(numbers[:2]) if numbers else None
os.environ["FITKIT_BACKEND"] = backend

import numpy as np  # noqa: E402

import fitkit  # noqa: E402

fitkit.set_seed(7)
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 6)).astype("float32")
y = (x[:, :3].sum(1) > 0).astype("int64")

if backend == "torch":
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(16, 2))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.from_numpy(x), torch.from_numpy(y)), batch_size=16, shuffle=True)
else:
    import keras

    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dropout(0.3), keras.layers.Dense(2)])
    data = None


class KillAt(fitkit.callbacks.Callback):
    """SIGKILL this process at (epoch, step): no cleanup, no flush, as a real kill."""

    def on_train_batch_end(self, batch, logs=None):
        if kill and (self.model._fit_state.epoch, batch + 1) == kill:
            os.kill(os.getpid(), signal.SIGKILL)


model = fitkit.Model(net)
model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01)
callbacks = [KillAt(), fitkit.callbacks.EarlyStopping("val_loss", patience=10),
             fitkit.callbacks.BackupAndRestore(
                 backup_dir, save_freq="epoch" if "--epoch-saves" in sys.argv else 3, verbose=0)]
if "--loader" in sys.argv and data is not None:
    history = model.fit(data, epochs=4, validation_data=(x[:50], y[:50]), callbacks=callbacks,
                        verbose=0)
else:
    history = model.fit(x, y, batch_size=16, epochs=4, validation_data=(x[:50], y[:50]),
                        callbacks=callbacks, verbose=0)
np.savez(out, *model.get_weights(), history=np.frombuffer(
    json.dumps(history.history).encode(), dtype=np.uint8))
