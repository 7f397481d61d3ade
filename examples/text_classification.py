"""Text classification like the tutorial's news model: Embedding + Conv1D + pooling + Dense.

The corpus is generated here (nothing to download): sentences about 4 topics, each word drawn
from the sentence's topic vocabulary, from another topic's vocabulary (to make some sentences
ambiguous) or from filler words shared by all topics. Sentences have 8 to 60 words and each
batch is padded only to its own longest sentence, so batch widths vary from step to step:
a torch DataLoader with a padding collate_fn on torch, tf.data's padded_batch on TensorFlow.
The network ends in a global max pool, which takes any sentence length. Accuracy and top-2
accuracy (fitkit.metrics.TopKAccuracy) are reported on a held-out test corpus.

Run:  python examples/text_classification.py                    (torch if installed)
      FITKIT_BACKEND=tensorflow python examples/text_classification.py
      python examples/text_classification.py --quick --out /tmp   (small and fast, for the tests)
"""

import argparse
import itertools
import pathlib

import numpy as np

import fitkit

TOPICS = {
    "sports": "game team score coach player league season goal match win stadium fans "
    "referee tournament champion".split(),
    "science": "atom cell energy experiment theory molecule physics biology laboratory data "
    "hypothesis telescope gene quantum research".split(),
    "business": "market stock profit company investor revenue bank trade price growth shares "
    "economy merger startup budget".split(),
    "politics": "election vote senate policy minister parliament law campaign party debate "
    "governor reform president congress treaty".split(),
}
FILLER = (
    "the a of and to in is that for on with as was at by it from this be are have has "
    "said new more after over about"
).split()
VOCABULARY = ["<pad>"] + FILLER + [word for words in TOPICS.values() for word in words]
WORD_ID = {word: i for i, word in enumerate(VOCABULARY)}  # id 0 is the padding
MIN_WORDS, MAX_WORDS = 8, 60  # 8 words are the least the two convolutions need
BATCH_SIZE = 32


def make_corpus(n, seed):
    """n sentences as lists of words, and their topic numbers."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    sentences, labels = [], []
    for _ in range(n):
        topic = int(rng.integers(len(names)))
        words = []
        # Mostly short sentences and a few long ones, as in real text: batch widths vary.
        length = min(MIN_WORDS + int(rng.exponential(8)), MAX_WORDS)
        for _ in range(length):
            draw = rng.random()
            if draw < 0.3:  # a word of the sentence's own topic
                words.append(rng.choice(TOPICS[names[topic]]))
            elif draw < 0.35:  # a word of some other topic: short sentences get ambiguous
                other = names[(topic + rng.integers(1, len(names))) % len(names)]
                words.append(rng.choice(TOPICS[other]))
            else:
                words.append(rng.choice(FILLER))
        sentences.append(words)
        labels.append(topic)
    return sentences, np.array(labels, dtype="int64")


def encode(sentences):
    """Word lists as int64 id arrays of their own lengths (no padding yet)."""
    return [np.array([WORD_ID[word] for word in words], dtype="int64") for words in sentences]


def make_net(backend, vocab_size, n_classes):
    if backend == "torch":
        import torch
        import torch.nn as nn

        class TextCNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(vocab_size, 16, padding_idx=0)
                self.conv1 = nn.Conv1d(16, 32, kernel_size=5)
                self.pool = nn.MaxPool1d(2)
                self.conv2 = nn.Conv1d(32, 64, kernel_size=2)
                self.out = nn.Linear(64, n_classes)

            def forward(self, ids):
                x = self.embedding(ids).transpose(1, 2)  # Conv1d wants (batch, channels, length)
                x = self.pool(torch.relu(self.conv1(x)))
                x = torch.relu(self.conv2(x))
                x = x.amax(dim=2)  # global max over positions: any length gives 64 features
                return self.out(x)  # logits

        return TextCNN()
    import keras

    return keras.Sequential(
        [
            keras.Input((None,), dtype="int64"),  # None: sentences of any length
            keras.layers.Embedding(vocab_size, 16),
            keras.layers.Conv1D(32, kernel_size=5, activation="relu"),
            keras.layers.MaxPool1D(2),
            keras.layers.Conv1D(64, kernel_size=2, activation="relu"),
            keras.layers.GlobalMaxPool1D(),
            keras.layers.Dense(n_classes),
        ]
    )  # logits


def make_input(backend, sequences, labels, shuffle):
    """Batches padded with id 0 to the longest sentence of each batch."""
    if backend == "torch":
        import torch
        from torch.nn.utils.rnn import pad_sequence
        from torch.utils.data import DataLoader

        def pad_batch(samples):
            ids, topics = zip(*samples, strict=True)
            return (
                pad_sequence([torch.from_numpy(s) for s in ids], batch_first=True),
                torch.tensor(topics),
            )

        return DataLoader(
            list(zip(sequences, labels, strict=True)),
            batch_size=BATCH_SIZE,
            shuffle=shuffle,
            collate_fn=pad_batch,
        )
    import tensorflow as tf

    dataset = tf.data.Dataset.from_generator(
        lambda: zip(sequences, labels, strict=True),
        output_signature=(tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int64)),
    )
    if shuffle:
        dataset = dataset.shuffle(len(sequences), seed=0)
    return dataset.padded_batch(BATCH_SIZE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--out", default=".", help="folder for the PNG (default: here)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # write PNGs; no window, no display needed
    fitkit.set_seed(0)
    backend = fitkit.backend()
    n_train, epochs = (1000, 4) if args.quick else (8000, 10)
    n_test = n_train // 4
    train_text, train_labels = make_corpus(n_train, seed=0)
    val_text, val_labels = make_corpus(n_test, seed=1)
    test_text, test_labels = make_corpus(n_test, seed=2)
    print(
        f"{len(VOCABULARY)} words; e.g. [{list(TOPICS)[train_labels[0]]}] {' '.join(train_text[0])}"
    )

    train_data = make_input(backend, encode(train_text), train_labels, shuffle=True)
    val_data = make_input(backend, encode(val_text), val_labels, shuffle=False)
    test_data = make_input(backend, encode(test_text), test_labels, shuffle=False)
    widths = [int(ids.shape[1]) for ids, _ in itertools.islice(iter(train_data), 5)]
    print(f"padded widths of the first batches: {widths}")

    model = fitkit.Model(make_net(backend, len(VOCABULARY), len(TOPICS)))
    model.compile(
        optimizer="adam",
        loss="cross_entropy",
        lr=3e-3,
        metrics=["accuracy", fitkit.metrics.TopKAccuracy(k=2)],
    )
    # A small corpus is soon learnt by heart: stop when the validation loss stops improving.
    stop = fitkit.callbacks.EarlyStopping(
        "val_loss", patience=2, restore_best_weights=True, verbose=1
    )
    history = model.fit(
        train_data, validation_data=val_data, epochs=epochs, verbose=2, callbacks=[stop]
    )
    model.summary()  # after fit: the summary uses the last batch fitkit saw
    test = model.validate(test_data)
    print("test:", {name: round(value, 4) for name, value in test.items()})

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = out / "text_classification_history.png"
    history.plot().savefig(curves)
    print(f"saved {curves}")
    print(f"RESULT accuracy={test['accuracy']:.4f} top2={test['top_2_accuracy']:.4f}")
