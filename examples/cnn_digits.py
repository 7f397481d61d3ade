"""Image classification with the tutorial's CNN, on scikit-learn's bundled digits.

The 8x8 digits (1797 images, 10 classes, no download) are upscaled to 28x28 like MNIST, then
split into train / validation / test. The network is the tutorial's: Conv 32 (3x3) - MaxPool -
Conv 64 (5x5) - MaxPool - Dropout - global max pool - Dense 32 - Dense 10, written natively
(torch.nn on torch, Keras layers on TensorFlow). The data goes in the way each framework
feeds it: a torch DataLoader on torch, a tf.data.Dataset on TensorFlow. EarlyStopping
(keeping the best weights) and ReduceLROnPlateau watch the validation loss.

Run:  python examples/cnn_digits.py                    (torch if installed)
      FITKIT_BACKEND=tensorflow python examples/cnn_digits.py
      python examples/cnn_digits.py --quick --out /tmp   (small and fast, for the tests)
"""

import argparse
import pathlib

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fitkit
from fitkit.callbacks import EarlyStopping, ReduceLROnPlateau

BATCH_SIZE = 32


def load_images():
    """Digits as (N, 28, 28) float32 in [0, 1] and int64 labels. Each pixel becomes a 3x3
    block (24x24) inside a 2-pixel border: MNIST also frames its digits with empty margins."""
    digits = load_digits()
    images = np.kron(digits.images, np.ones((3, 3))) / 16.0
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return images.astype("float32"), digits.target.astype("int64")


def make_net(backend):
    if backend == "torch":
        import torch.nn as nn

        return nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Dropout(0.1),
            nn.AdaptiveMaxPool2d((1, 1)),
            nn.Flatten(),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )  # logits: "cross_entropy" applies the softmax
    import keras

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, kernel_size=3),
            keras.layers.MaxPool2D(2),
            keras.layers.Conv2D(64, kernel_size=5),
            keras.layers.MaxPool2D(2),
            keras.layers.Dropout(0.1),
            keras.layers.GlobalMaxPool2D(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def make_input(backend, images, labels, shuffle):
    """Batches in each framework's own pipeline and image layout: a DataLoader of
    (N, 1, 28, 28) tensors on torch, a tf.data.Dataset of (N, 28, 28, 1) on TensorFlow."""
    if backend == "torch":
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        dataset = TensorDataset(torch.from_numpy(images[:, None]), torch.from_numpy(labels))
        return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=shuffle)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images[..., None], labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=0)
    return dataset.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--out", default=".", help="folder for the PNG (default: here)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # write PNGs; no window, no display needed
    fitkit.set_seed(0)
    backend = fitkit.backend()
    images, labels = load_images()
    # Stratified splits keep all ten digits in every part: 60% train, 20% validation, 20% test.
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=0.25, stratify=y_train, random_state=0
    )
    epochs = 15
    if args.quick:
        x_train, y_train, epochs = x_train[:600], y_train[:600], 4
    print(f"train {len(x_train)}, validation {len(x_val)}, test {len(x_test)} images of 28x28")

    train_data = make_input(backend, x_train, y_train, shuffle=True)
    val_data = make_input(backend, x_val, y_val, shuffle=False)
    test_data = make_input(backend, x_test, y_test, shuffle=False)

    model = fitkit.Model(make_net(backend))
    model.summary(input_shape=(1, 28, 28) if backend == "torch" else (28, 28, 1))
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"], lr=2e-3)
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        verbose=2,
        callbacks=[
            # The last epochs may be past the best one: keep the best weights.
            EarlyStopping("val_loss", patience=4, restore_best_weights=True, verbose=1),
            ReduceLROnPlateau("val_loss", factor=0.5, patience=2),
        ],
    )
    test = model.validate(test_data)
    print("test:", {name: round(value, 4) for name, value in test.items()})

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = out / "cnn_digits_history.png"
    history.plot().savefig(curves)
    print(f"saved {curves}")
    print(f"RESULT accuracy={test['accuracy']:.4f}")
