"""train_on_batch style, as in the tutorial: your own epoch loop, fitkit's steps and metrics.

Run:  python examples/train_on_batch.py   (FITKIT_BACKEND=tensorflow for Keras)
"""

import numpy as np
from quickstart import make_data, make_net

import fitkit

if __name__ == "__main__":
    fitkit.set_seed(0)
    x, y = make_data()
    x_train, y_train, x_val, y_val = x[:1600], y[:1600], x[1600:], y[1600:]
    model = fitkit.Model(make_net(fitkit.backend()))
    model.compile("adam", "bce_with_logits", metrics=["accuracy"], lr=1e-2)
    for epoch in range(1, 4):
        model.reset_metrics()
        order = np.random.permutation(len(x_train))
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            train_logs = model.train_on_batch(x_train[idx], y_train[idx], reset_metrics=False)
        val_logs = model.test_on_batch(x_val, y_val)
        # Keras's return: a list in metrics_names order (return_dict=True gives a dict)
        print(
            f"epoch {epoch}: train {dict(zip(model.metrics_names, train_logs, strict=True))}  "
            f"val {dict(zip(model.metrics_names, val_logs, strict=True))}"
        )
