"""Class style: override train_step with backend-native code; fit, history and display stay.

Run:  python examples/class_style.py   (FITKIT_BACKEND=tensorflow for the Keras version)
"""

import numpy as np

import fitkit


def torch_model():
    import torch
    import torch.nn as nn

    class ClippedModel(fitkit.Model):
        """Clips gradients, which the default step does not do."""

        def train_step(self, batch):
            x, y = batch
            y_pred = self.net(x)
            loss = self.compute_loss(x, y, y_pred)
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm=1.0)
            self.optimizer.step()
            self.update_metrics(y, y_pred.detach())
            return {"loss": loss}

    return ClippedModel(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1)))


def tensorflow_model():
    import keras
    import tensorflow as tf

    class ClippedModel(fitkit.Model):
        def train_step(self, batch):
            x, y = batch
            with tf.GradientTape() as tape:
                y_pred = self.net(x, training=True)
                loss = self.compute_loss(x, y, y_pred)
            variables = self.net.trainable_variables
            grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), 1.0)
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            self.update_metrics(y, y_pred)
            return {"loss": loss}

    return ClippedModel(
        keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)]
        )
    )


if __name__ == "__main__":
    fitkit.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 8)).astype("float32")
    y = (x[:, :4].sum(1, keepdims=True) - x[:, 4:].prod(1, keepdims=True)).astype("float32")
    model = torch_model() if fitkit.backend() == "torch" else tensorflow_model()
    model.compile("adam", "mse", metrics=["mae"], lr=3e-3)
    model.fit(x, y, epochs=4, batch_size=32, validation_split=0.2, verbose=2)
