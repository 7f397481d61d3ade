"""Hugging Face models fed as the HF Trainer feeds them (issue 18): dict batches whose label keys
are the targets, the model's own ``outputs.loss``, ``.logits`` as the prediction, output
objects kept whole for callable losses. Tiny models built from configs (nothing downloaded),
checked against the hand-written loop an HF user would write.

Importing transformers alone takes several seconds: the whole module is marked slow.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fitkit  # noqa: E402

pytestmark = pytest.mark.slow
F = torch.nn.functional
VOCAB, CLASSES = 100, 3


def bert(**config):
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(
        transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=CLASSES,
            **config,
        )
    )


def gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=16,
            n_layer=1,
            n_head=2,
            bos_token_id=0,
            eos_token_id=0,
        )
    )


def examples(n=22, seed=0, lm=False):
    """Token ids of varying lengths, with a class label (or none, for a causal LM)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        item = {"input_ids": rng.integers(1, VOCAB, int(rng.integers(3, 10)))}
        if not lm:
            item["labels"] = int(rng.integers(0, CLASSES))
        out.append(item)
    return out


def collate(items, lm=False, encoding=False):
    """Pad to the batch's longest with an attention mask; a causal LM's labels are its
    input ids with -100 on the padding (HF's convention)."""
    length = max(len(i["input_ids"]) for i in items)
    ids = torch.zeros(len(items), length, dtype=torch.long)
    mask = torch.zeros(len(items), length, dtype=torch.long)
    for row, item in enumerate(items):
        ids[row, : len(item["input_ids"])] = torch.as_tensor(item["input_ids"])
        mask[row, : len(item["input_ids"])] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    batch["labels"] = (
        ids.masked_fill(mask == 0, -100) if lm else torch.tensor([i["labels"] for i in items])
    )
    return transformers.BatchEncoding(batch) if encoding else batch


def loader(lm=False, shuffle=False, encoding=False, n=22, seed=0, batch_size=4):
    return torch.utils.data.DataLoader(
        examples(n, seed, lm),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=lambda items: collate(items, lm, encoding),
    )


def hand_loop(net, data, epochs, lr=1e-3):
    """The loop an HF user writes; returns the per-batch (loss, rows) of every epoch."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    net.train()
    epochs_losses = []
    for _ in range(epochs):
        losses = []
        for batch in data:
            loss = net(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append((loss.item(), len(batch["input_ids"])))
        epochs_losses.append(losses)
    return epochs_losses


def row_mean(losses):
    return sum(v * n for v, n in losses) / sum(n for _, n in losses)


def assert_same_weights(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_bert_fit_without_a_loss_equals_the_hand_written_loop_bit_for_bit(torch_kit):
    """compile(loss=None): the model's own outputs.loss trains it, on shuffled batches with
    dropout, exactly as the loop; the logged loss is the row-weighted mean of its losses."""
    reference = bert()
    torch.manual_seed(1)
    losses = hand_loop(reference, loader(shuffle=True), epochs=2)

    net = bert()
    model = fitkit.Model(net)
    model.compile(torch.optim.AdamW(net.parameters(), lr=1e-3), loss=None)
    torch.manual_seed(1)
    history = model.fit(loader(shuffle=True, encoding=True), epochs=2, verbose=0)
    assert_same_weights(net, reference)
    assert history.history["loss"] == [row_mean(epoch) for epoch in losses]


def test_bert_validate_and_predict_without_a_loss(torch_kit):
    net = bert()
    model = fitkit.Model(net)
    model.compile(torch.optim.AdamW(net.parameters(), lr=1e-3), loss=None, metrics=["accuracy"])
    model.fit(loader(), epochs=1, verbose=0)
    data = loader(seed=1)
    net.eval()
    with torch.no_grad():
        outs = [(net(**b), b["labels"]) for b in data]
    logits = torch.cat([o.logits for o, _ in outs])
    labels = torch.cat([y for _, y in outs])
    logs = model.validate(data)
    assert logs["loss"] == pytest.approx(
        row_mean([(o.loss.item(), len(y)) for o, y in outs]), rel=1e-12
    )
    assert logs["accuracy"] == pytest.approx((logits.argmax(-1) == labels).double().mean().item())
    predictions = model.predict(data)  # the labels are fed, the scalar loss is left out
    assert isinstance(predictions, np.ndarray) and predictions.shape == (22, CLASSES)
    np.testing.assert_array_equal(predictions, logits.numpy())
    np.testing.assert_array_equal(fitkit.Model(net).predict(data), logits.numpy())  # uncompiled


def test_a_compiled_loss_gets_the_logits_and_the_model_no_labels(torch_kit):
    """With compile(loss="cross_entropy") the network gets the inputs only (BERT would else
    compute its own loss and set config.problem_type), the loss the logits; the training
    equals the model's own loss (the same cross-entropy) bit for bit."""
    own = bert()
    fitkit.Model(own).compile(torch.optim.AdamW(own.parameters(), lr=1e-3)).fit(
        loader(), epochs=2, verbose=0, validation_data=loader(seed=1)
    )
    assert own.config.problem_type == "single_label_classification"  # it computed its loss

    net = bert()
    model = fitkit.Model(net)
    model.compile(
        torch.optim.AdamW(net.parameters(), lr=1e-3), loss="cross_entropy", metrics=["accuracy"]
    )
    history = model.fit(loader(), epochs=2, verbose=0, validation_data=loader(seed=1))
    assert net.config.problem_type is None  # never given labels
    assert_same_weights(net, own)
    logits, labels = (
        model.predict(loader(seed=1)),
        np.concatenate([b["labels"].numpy() for b in loader(seed=1)]),
    )
    assert history.history["val_accuracy"][-1] == pytest.approx(
        (logits.argmax(-1) == labels).mean()
    )
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert history.history["val_loss"][-1] == pytest.approx(
        -log_p[np.arange(len(labels)), labels].mean(), rel=1e-5
    )


@pytest.mark.parametrize("written_on", ["outputs", "tensor"])
def test_callable_losses_get_the_output_object_or_the_logits_as_written(torch_kit, written_on):
    """A loss written on ``outputs.logits`` gets the ModelOutput (as HF's compute_loss_func),
    one written on a tensor the logits; both train as the portable cross-entropy does."""
    loss = (
        (lambda outputs, y: F.cross_entropy(outputs.logits, y))
        if written_on == "outputs"
        else (lambda logits, y: F.cross_entropy(logits, y))
    )
    reference = bert()
    fitkit.Model(reference).compile(
        torch.optim.AdamW(reference.parameters(), lr=1e-3), "cross_entropy"
    ).fit(loader(), epochs=1, verbose=0)
    net = bert()
    model = fitkit.Model(net)
    model.compile(torch.optim.AdamW(net.parameters(), lr=1e-3), loss)
    model.fit(loader(), epochs=1, verbose=0)
    assert_same_weights(net, reference)
    assert model.runtime.adapter.outputs.heads[0].whole is (written_on == "outputs")


def test_a_loss_that_fits_neither_form_is_refused_naming_both_failures(torch_kit):
    net = bert()
    model = fitkit.Model(net)
    model.compile("adam", lambda outputs, y: F.cross_entropy(outputs.scores, y))
    with pytest.raises(fitkit.FitkitValueError, match=r"SequenceClassifierOutput.*'logits'"):
        model.fit(loader(), epochs=1, verbose=0)


def test_causal_lm_trains_on_its_own_loss_with_labels_as_input_ids(torch_kit):
    """GPT-2 with labels = input_ids (-100 on padding): fit equals the hand loop bit for
    bit; validate's loss is the row-weighted mean of the model's losses; predict gives the
    token logits, batches of other lengths padded with -100 as HF's Trainer pads them."""
    reference = gpt2()
    losses = hand_loop(reference, loader(lm=True), epochs=2)
    net = gpt2()
    model = fitkit.Model(net)
    model.compile(torch.optim.AdamW(net.parameters(), lr=1e-3))  # loss=None: its own
    history = model.fit(loader(lm=True), epochs=2, verbose=0)
    assert_same_weights(net, reference)
    assert history.history["loss"] == [row_mean(epoch) for epoch in losses]

    data = loader(lm=True, seed=1, batch_size=8)
    net.eval()
    with torch.no_grad():
        outs = [(net(**b), len(b["input_ids"])) for b in data]
    assert model.validate(data)["loss"] == pytest.approx(
        row_mean([(o.loss.item(), n) for o, n in outs]), rel=1e-12
    )
    predictions = model.predict(data)
    longest = max(o.logits.shape[1] for o, _ in outs)
    assert predictions.shape == (22, longest, VOCAB)
    row = 0
    for out, n in outs:
        length = out.logits.shape[1]
        np.testing.assert_array_equal(predictions[row : row + n, :length], out.logits.numpy())
        assert (predictions[row : row + n, length:] == -100).all()
        row += n


def test_causal_lm_with_a_compiled_loss_ignores_the_cache(torch_kit):
    """GPT-2's output also carries past_key_values (a cache, not a tensor): a compiled loss
    and predict take the logits."""
    reference = gpt2()
    hand_loop(reference, loader(lm=True), epochs=1)
    net = gpt2()
    model = fitkit.Model(net)

    def shifted(logits, y):  # HF's shift, written by hand
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, VOCAB), y[:, 1:].reshape(-1), ignore_index=-100
        )

    model.compile(torch.optim.AdamW(net.parameters(), lr=1e-3), shifted)
    model.fit(loader(lm=True), epochs=1, verbose=0)
    for p, q in zip(
        net.parameters(), reference.parameters(), strict=True
    ):  # the same loss, its own op
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert model.predict(loader(lm=True, n=8, batch_size=8)).shape[-1] == VOCAB


def test_question_answering_with_several_label_names(torch_kit):
    """label_names=["start_positions", "end_positions"] (HF's label_names): the model's own
    loss, or a compiled loss per output with weights 0.5 / 0.5, which is HF's formula."""

    def qa():
        torch.manual_seed(0)
        return transformers.BertForQuestionAnswering(
            transformers.BertConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
            )
        )

    rng = np.random.default_rng(0)
    ids = torch.as_tensor(rng.integers(1, VOCAB, (24, 8)))
    starts = torch.as_tensor(rng.integers(0, 4, 24))
    batches = [
        {
            "input_ids": ids[i : i + 6],
            "start_positions": starts[i : i + 6],
            "end_positions": starts[i : i + 6] + 3,
        }
        for i in range(0, 24, 6)
    ]
    names = ["start_positions", "end_positions"]
    own = qa()
    own_model = fitkit.Model(own, label_names=names)
    own_model.compile(torch.optim.AdamW(own.parameters(), lr=1e-3))
    own_history = own_model.fit(batches, epochs=2, verbose=0)

    net = qa()
    model = fitkit.Model(net, label_names=names)
    model.compile(
        torch.optim.AdamW(net.parameters(), lr=1e-3),
        {"start_logits": "cross_entropy", "end_logits": "cross_entropy"},
        loss_weights={"start_logits": 0.5, "end_logits": 0.5},
    )
    history = model.fit(batches, epochs=2, verbose=0)
    assert_same_weights(net, own)
    assert history.history["loss"] == pytest.approx(own_history.history["loss"], rel=1e-6)
    assert set(history.history) >= {"start_logits_loss", "end_logits_loss"}
    predictions = model.predict([{"input_ids": ids}])
    assert set(predictions) == {"start_logits", "end_logits"}
    assert predictions["start_logits"].shape == (24, 8)


def test_dict_arrays_and_train_on_batch_take_the_labels_key(torch_kit):
    """In-memory dicts (x only) and a batch-style call split the same way."""
    batch = collate(examples(16))
    batch = {**batch, "input_ids": batch["input_ids"].numpy(), "labels": batch["labels"].numpy()}
    net = bert()
    model = fitkit.Model(net)
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    history = model.fit(batch, batch_size=8, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "learning_rate"}
    logs = model.train_on_batch(transformers.BatchEncoding(batch), return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    assert model.predict(batch).shape == (16, CLASSES)


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class TinyClassifier(torch.nn.Module):
    """A user's own network returning a dataclass (HF-style) output."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, CLASSES)

    def forward(self, features, labels=None):
        logits = self.layer(features)
        return Out(logits, None if labels is None else F.cross_entropy(logits, labels))


def test_dataclass_outputs_work_as_model_outputs(torch_kit):
    rng = np.random.default_rng(0)
    data = {
        "features": rng.standard_normal((64, 4)).astype("float32"),
        "labels": rng.integers(0, CLASSES, 64),
    }
    trained = []
    for loss in [None, "cross_entropy", lambda out, y: F.cross_entropy(out.logits, y)]:
        torch.manual_seed(0)
        net = TinyClassifier()
        model = fitkit.Model(net)
        model.compile("sgd", loss, metrics=["accuracy"])
        history = model.fit(data, batch_size=16, epochs=2, verbose=0, shuffle=False)
        trained.append((history.history["loss"], net.layer.weight.detach().clone()))
        assert model.predict(data).shape == (64, CLASSES)
    for losses, weight in trained[1:]:
        assert losses == trained[0][0]
        assert torch.equal(weight, trained[0][1])


def test_no_loss_and_a_net_that_computes_none_is_refused_at_the_first_batch(torch_kit):
    class NoLabels(torch.nn.Module):  # forward takes no labels: it cannot compute a loss
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, CLASSES)

        def forward(self, features):
            return Out(self.layer(features))

    net = NoLabels()
    before = net.layer.weight.detach().clone()
    model = fitkit.Model(net)
    model.compile("sgd")
    data = {"features": np.ones((8, 4), "float32"), "labels": np.zeros(8, "int64")}
    with pytest.raises(fitkit.FitkitValueError, match=r"needs a loss.*forward takes none"):
        model.fit(data, epochs=1, verbose=0)
    with pytest.raises(fitkit.FitkitValueError, match="batches hold none"):
        fitkit.Model(TinyClassifier()).compile("sgd").fit(
            [{"features": data["features"]}], epochs=1, verbose=0
        )
    assert torch.equal(net.layer.weight, before)
    model = fitkit.Model(TinyClassifier(), label_names=[])  # no label keys: labels is an input
    model.compile("sgd")
    assert "loss" in model.fit([data], epochs=1, verbose=0).history


def test_label_names_are_checked(torch_kit):
    with pytest.raises(fitkit.FitkitTypeError, match="label_names"):
        fitkit.Model(TinyClassifier(), label_names=[1])
    model = fitkit.Model(TinyClassifier(), label_names=["labels", "weights"])
    model.compile("sgd", "cross_entropy")
    data = {"features": np.ones((8, 4), "float32"), "labels": np.zeros(8, "int64")}
    with pytest.raises(fitkit.FitkitValueError, match=r"not \['weights'\]"):
        model.fit([data], epochs=1, verbose=0)
