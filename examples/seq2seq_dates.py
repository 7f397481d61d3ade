"""Seq2seq with Bahdanau (additive) attention and teacher forcing: spelled-out dates -> ISO.

The tutorial's translation model (a GRU encoder, additive attention, a GRU decoder) on a
translation task generated here, so nothing is downloaded: dates written the ways people
write them ("march 5, 1998", "5 march 1998", "thursday, 05 mar 1998", "05.03.1998",
"mar 5th 1998"...) become ISO dates ("1998-03-05"); a month and a year alone ("march 1998")
become "1998-03", so targets have two lengths and the loss is masked over the padding.
Both vocabularies are characters.

It shows the class style on both backends: a fitkit.Model subclass overrides train_step and
test_step with native code (torch autograd, tf.GradientTape) that decodes with teacher
forcing, masks the loss over padded targets and logs two exact accuracies (characters,
through the compiled metric weighted by the mask, and whole sequences, per row).
ModelCheckpoint(save_best_only=True) keeps the best epoch's weights, which are loaded back
before the held-out test. translate() decodes greedily, one character at a time, feeding
each prediction back in; the exact-match rate of those translations is the RESULT. The
attention weights of one example are drawn as a heatmap.

Run:  python examples/seq2seq_dates.py                      (torch if installed)
      FITKIT_BACKEND=tensorflow python examples/seq2seq_dates.py
      python examples/seq2seq_dates.py --quick --out /tmp     (small and fast, for the tests)

Full mode (8000 dates, 5 epochs) took 22-40 s on 2 shared CPU cores (either backend) and
translated 99 % of 1000 held-out dates exactly. On a busy shared machine, run it with
OMP_NUM_THREADS=1: torch's spinning OpenMP threads otherwise lose several times over.
"""

import argparse
import datetime
import pathlib
import time

import numpy as np

import fitkit

# ----------------------------------------------------------------------------- the data
MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def ordinal(day):
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


# Each format turns a date into text; the last two drop the day, and so does their target.
FORMATS = [
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",  # march 5, 1998
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",  # 5 march 1998
    lambda d: f"{WEEKDAYS[d.weekday()]}, {d.day:02d} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {ordinal(d.day)} {d.year}",  # mar 5th 1998
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",  # 05.03.1998
    lambda d: f"{WEEKDAYS[d.weekday()]} {MONTHS[d.month - 1]} {ordinal(d.day)}, {d.year}",
    lambda d: f"{d.year} {MONTHS[d.month - 1][:3]} {d.day}",  # 1998 mar 5
]
MONTH_ONLY = [
    lambda d: f"{MONTHS[d.month - 1]} {d.year}",  # march 1998
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.year}",  # mar 1998
]

SOURCE_CHARS = sorted(set(" ,.0123456789" + "".join(MONTHS + WEEKDAYS)))
SOURCE_ID = {c: i + 1 for i, c in enumerate(SOURCE_CHARS)}  # id 0 is the padding
PAD, START, END = 0, 1, 2  # target ids: padding, start of sequence, end of sequence
TARGET_CHARS = ["<pad>", "<start>", "<end>"] + list("0123456789-")
TARGET_ID = {c: i for i, c in enumerate(TARGET_CHARS)}
SOURCE_LEN = 32  # the longest text, "wednesday september 13th, 1950", has 30 characters
TARGET_LEN = 12  # <start> + 10 characters + <end>


def make_pairs(n, seed):
    """n (text, ISO date) pairs, dates between 1950 and 2049; one in eight is month-only."""
    rng = np.random.default_rng(seed)
    first = datetime.date(1950, 1, 1).toordinal()
    last = datetime.date(2049, 12, 31).toordinal()
    texts, isos = [], []
    for day in rng.integers(first, last + 1, n):
        date = datetime.date.fromordinal(int(day))
        if rng.random() < 0.125:
            texts.append(MONTH_ONLY[rng.integers(len(MONTH_ONLY))](date))
            isos.append(date.isoformat()[:7])
        else:
            texts.append(FORMATS[rng.integers(len(FORMATS))](date))
            isos.append(date.isoformat())
    return texts, isos


def encode_sources(texts):
    """Character ids, padded at the end with 0 to SOURCE_LEN: (n, SOURCE_LEN) int64."""
    ids = np.zeros((len(texts), SOURCE_LEN), dtype="int64")
    for row, text in enumerate(texts):
        ids[row, : len(text)] = [SOURCE_ID[c] for c in text]
    return ids


def encode_targets(isos):
    """<start> chars <end>, padded with 0: (n, TARGET_LEN) int64. The step shifts it: the
    decoder reads ids[:, :-1] (teacher forcing) and learns to predict ids[:, 1:]."""
    ids = np.zeros((len(isos), TARGET_LEN), dtype="int64")
    for row, iso in enumerate(isos):
        ids[row, : len(iso) + 2] = [START] + [TARGET_ID[c] for c in iso] + [END]
    return ids


def decode_targets(ids):
    """Predicted id rows back to strings, stopping at the first <end>."""
    texts = []
    for row in ids:
        chars = []
        for i in row:
            if i == END:
                break
            chars.append(TARGET_CHARS[i] if i > END else "")
        texts.append("".join(chars))
    return texts


# ----------------------------------------------------------------------------- the networks
EMBED, UNITS = 32, 64


def torch_model():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.source_embedding = nn.Embedding(len(SOURCE_CHARS) + 1, EMBED, padding_idx=0)
            self.encoder = nn.GRU(EMBED, UNITS, batch_first=True)
            self.target_embedding = nn.Embedding(len(TARGET_CHARS), EMBED)
            # Bahdanau: score(h, s_j) = v . tanh(W_query h + W_keys s_j)
            self.w_query = nn.Linear(UNITS, UNITS, bias=False)
            self.w_keys = nn.Linear(UNITS, UNITS)
            self.v = nn.Linear(UNITS, 1, bias=False)
            self.decoder = nn.GRUCell(EMBED + UNITS, UNITS)
            self.out = nn.Linear(2 * UNITS, len(TARGET_CHARS))

        def encode(self, source):
            outputs, state = self.encoder(self.source_embedding(source))
            # The keys do not change while decoding: project them once per sequence.
            return outputs, self.w_keys(outputs), source != 0, state[0]

        def decode_step(self, token, state, encoded):
            """One character: attend with the previous state, update it, predict."""
            outputs, keys, mask, _ = encoded
            scores = self.v(torch.tanh(self.w_query(state)[:, None] + keys))[..., 0]
            scores = scores.masked_fill(~mask, -1e9)  # padding gets no attention
            weights = torch.softmax(scores, dim=1)  # (batch, source positions)
            context = (weights[..., None] * outputs).sum(1)
            state = self.decoder(torch.cat([self.target_embedding(token), context], -1), state)
            return self.out(torch.cat([state, context], -1)), state, weights

        def forward(self, source, decoder_input):
            """Teacher forcing: the decoder reads the true previous character at each step."""
            encoded = self.encode(source)
            state, logits, attention = encoded[3], [], []
            for t in range(decoder_input.shape[1]):
                step_logits, state, weights = self.decode_step(decoder_input[:, t], state, encoded)
                logits.append(step_logits)
                attention.append(weights)
            return torch.stack(logits, 1), torch.stack(attention, 1)

    def masked_step(net, batch_y, batch_x):
        decoder_input, target = batch_y[:, :-1], batch_y[:, 1:]
        logits, _ = net(batch_x, decoder_input)
        mask = target != PAD
        # Mean over the real characters only: padding after <end> is neither loss nor credit.
        per_char = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        loss = (per_char * mask).sum() / mask.sum()
        # A sequence is right when every real character is; padding counts as right.
        exact = ((logits.argmax(-1) == target) | ~mask).all(1).float().mean()
        return loss, logits, target, mask, exact

    class DateTranslator(fitkit.Model):
        def train_step(self, batch):
            x, y, _ = self.unpack_batch(batch)
            loss, logits, target, mask, exact = masked_step(self.net, y, x)
            self.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), max_norm=1.0)  # RNNs can spike
            self.optimizer.step()
            # The compiled "accuracy" weighted by the mask: exact over the epoch's characters
            # (a mean of batch means would weight a batch of short targets too much).
            self.update_metrics(target, logits.detach(), sample_weight=mask.float())
            # Per row, so fitkit's mean over the epoch's rows is exact too.
            return {"loss": loss.detach(), "sequence_accuracy": exact}

        def test_step(self, batch):  # fitkit runs it under torch.no_grad()
            x, y, _ = self.unpack_batch(batch)
            loss, logits, target, mask, exact = masked_step(self.net, y, x)
            self.update_metrics(target, logits, sample_weight=mask.float())
            return {"loss": loss, "sequence_accuracy": exact}

    return DateTranslator(Seq2Seq())


def tensorflow_model():
    import keras
    import tensorflow as tf

    class Seq2Seq(keras.Model):
        def __init__(self):
            super().__init__()
            self.source_embedding = keras.layers.Embedding(len(SOURCE_CHARS) + 1, EMBED)
            self.encoder = keras.layers.GRU(UNITS, return_sequences=True, return_state=True)
            self.target_embedding = keras.layers.Embedding(len(TARGET_CHARS), EMBED)
            # Bahdanau: score(h, s_j) = v . tanh(W_query h + W_keys s_j)
            self.w_query = keras.layers.Dense(UNITS, use_bias=False)
            self.w_keys = keras.layers.Dense(UNITS)
            self.v = keras.layers.Dense(1, use_bias=False)
            self.decoder = keras.layers.GRUCell(UNITS)
            self.out = keras.layers.Dense(len(TARGET_CHARS))

        def encode(self, source):
            outputs, state = self.encoder(self.source_embedding(source))
            # The keys do not change while decoding: project them once per sequence.
            return outputs, self.w_keys(outputs), tf.not_equal(source, 0), state

        def decode_step(self, token, state, encoded):
            """One character: attend with the previous state, update it, predict."""
            outputs, keys, mask, _ = encoded
            scores = self.v(tf.tanh(self.w_query(state)[:, None] + keys))[..., 0]
            scores = tf.where(mask, scores, -1e9)  # padding gets no attention
            weights = tf.nn.softmax(scores, axis=1)  # (batch, source positions)
            context = tf.reduce_sum(weights[..., None] * outputs, 1)
            state, _ = self.decoder(tf.concat([self.target_embedding(token), context], -1), state)
            return self.out(tf.concat([state, context], -1)), state, weights

        def call(self, inputs):
            """Teacher forcing: the decoder reads the true previous character at each step.
            TARGET_LEN is fixed, so this Python loop unrolls once when fitkit traces it."""
            source, decoder_input = inputs
            encoded = self.encode(source)
            state, logits, attention = encoded[3], [], []
            for t in range(decoder_input.shape[1]):
                step_logits, state, weights = self.decode_step(decoder_input[:, t], state, encoded)
                logits.append(step_logits)
                attention.append(weights)
            return tf.stack(logits, 1), tf.stack(attention, 1)

    def masked_step(net, batch_y, batch_x, training):
        decoder_input, target = batch_y[:, :-1], batch_y[:, 1:]
        logits, _ = net((batch_x, decoder_input), training=training)
        mask = tf.not_equal(target, PAD)
        # Mean over the real characters only: padding after <end> is neither loss nor credit.
        per_char = tf.nn.sparse_softmax_cross_entropy_with_logits(target, logits)
        maskf = tf.cast(mask, per_char.dtype)
        loss = tf.reduce_sum(per_char * maskf) / tf.reduce_sum(maskf)
        # A sequence is right when every real character is; padding counts as right.
        hit = tf.equal(tf.argmax(logits, -1, output_type=target.dtype), target)
        exact = tf.reduce_mean(tf.cast(tf.reduce_all(hit | ~mask, 1), tf.float32))
        return loss, logits, target, maskf, exact

    class DateTranslator(fitkit.Model):
        def train_step(self, batch):  # runs inside tf.function
            x, y, _ = self.unpack_batch(batch)
            with tf.GradientTape() as tape:
                loss, logits, target, maskf, exact = masked_step(self.net, y, x, True)
            variables = self.net.trainable_variables
            grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), 1.0)
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            # The compiled "accuracy" weighted by the mask: exact over the epoch's characters
            # (a mean of batch means would weight a batch of short targets too much).
            self.update_metrics(target, logits, sample_weight=maskf)
            # Per row, so fitkit's mean over the epoch's rows is exact too.
            return {"loss": loss, "sequence_accuracy": exact}

        def test_step(self, batch):
            x, y, _ = self.unpack_batch(batch)
            loss, logits, target, maskf, exact = masked_step(self.net, y, x, False)
            self.update_metrics(target, logits, sample_weight=maskf)
            return {"loss": loss, "sequence_accuracy": exact}

    net = Seq2Seq()
    # Build every variable eagerly, before fitkit traces the steps.
    net((np.zeros((1, SOURCE_LEN), "int64"), np.zeros((1, TARGET_LEN - 1), "int64")))
    return DateTranslator(net)


# ----------------------------------------------------------------------------- decoding
def translate(model, texts, return_attention=False):
    """Greedy decoding: start from <start>, feed each predicted character back in.

    No teacher here: the decoder sees only its own predictions, as in real use. Returns the
    ISO strings (and the attention weights, (n, TARGET_LEN - 1, SOURCE_LEN), if asked)."""
    source = encode_sources(texts)
    if model.backend == "torch":
        import torch

        net = model.net
        was_training = net.training
        net.eval()
        with torch.no_grad():
            device = next(net.parameters()).device
            encoded = net.encode(torch.as_tensor(source, device=device))
            token = torch.full((len(texts),), START, device=device)
            state, ids, attention = encoded[3], [], []
            for _ in range(TARGET_LEN - 1):
                logits, state, weights = net.decode_step(token, state, encoded)
                token = logits.argmax(-1)
                ids.append(token.cpu().numpy())
                attention.append(weights.cpu().numpy())
        net.train(was_training)
    else:
        import tensorflow as tf

        net = model.net
        encoded = net.encode(tf.constant(source))
        token = tf.fill([len(texts)], tf.constant(START, tf.int64))
        state, ids, attention = encoded[3], [], []
        for _ in range(TARGET_LEN - 1):
            logits, state, weights = net.decode_step(token, state, encoded)
            token = tf.argmax(logits, -1)
            ids.append(token.numpy())
            attention.append(weights.numpy())
    texts_out = decode_targets(np.stack(ids, 1))
    return (texts_out, np.stack(attention, 1)) if return_attention else texts_out


def plot_attention(model, text, path):
    """Heatmap of the weights each output character gave each input character."""
    import matplotlib.pyplot as plt

    (iso,), attention = translate(model, [text], return_attention=True)
    rows = len(iso) + 1  # the characters and <end>
    figure, axes = plt.subplots(figsize=(8, 4))
    image = axes.imshow(attention[0, :rows, : len(text)], cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(text)), list(text))
    axes.set_yticks(range(rows), list(iso) + ["<end>"])
    axes.set_xlabel("input characters")
    axes.set_ylabel("output characters")
    axes.set_title(f"attention: {text!r} -> {iso!r}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--out", default=".", help="folder for the PNGs and the checkpoint")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # write PNGs; no window, no display needed
    fitkit.set_seed(0)
    backend = fitkit.backend()
    n_train, epochs = (2000, 3) if args.quick else (8000, 5)
    train_texts, train_isos = make_pairs(n_train, seed=0)
    val_texts, val_isos = make_pairs(1000, seed=1)
    test_texts, test_isos = make_pairs(1000, seed=2)  # held out: only translate() sees it
    for text, iso in zip(train_texts[:3], train_isos[:3], strict=True):
        print(f"{text!r} -> {iso!r}")
    x_train, y_train = encode_sources(train_texts), encode_targets(train_isos)
    x_val, y_val = encode_sources(val_texts), encode_targets(val_isos)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    best = out / (
        "seq2seq_dates_best.pt" if backend == "torch" else "seq2seq_dates_best.weights.h5"
    )

    model = torch_model() if backend == "torch" else tensorflow_model()
    # No loss here: the steps compute their own masked loss. "accuracy" is fed by the steps.
    model.compile(optimizer="adam", lr=1e-2 if args.quick else 5e-3, metrics=["accuracy"])
    checkpoint = fitkit.callbacks.ModelCheckpoint(
        str(best), monitor="val_sequence_accuracy", mode="max", save_best_only=True
    )
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=64,
        verbose=2,
        callbacks=[checkpoint],
    )
    seconds = time.perf_counter() - start
    model.load_weights(str(best))  # the best epoch's weights, not the last epoch's
    print(f"trained {len(history)} epochs in {seconds:.1f} s; best weights from {best}")

    predictions = translate(model, test_texts)
    exact = np.mean([p == t for p, t in zip(predictions, test_isos, strict=True)])
    for text, prediction, iso in zip(test_texts[:6], predictions[:6], test_isos[:6], strict=True):
        print(f"{text!r:36} -> {prediction!r:14} {'ok' if prediction == iso else iso}")

    curves = out / "seq2seq_dates_history.png"
    history.plot().savefig(curves)
    print(f"saved {curves}")
    attention = out / "seq2seq_dates_attention.png"
    plot_attention(model, "thursday, 05 mar 1998", attention)
    print(f"saved {attention}")
    print(f"RESULT exact_match={exact:.4f}")
