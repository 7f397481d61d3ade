"""Several param groups (a backbone and a head at their own rates) keep their ratio under
every learning-rate tool, log one lr column each, and resume exactly; an optimizer over
other parameters is refused at compile (torch: Keras optimizers have no param groups)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from conftest import make_regression

import fitkit
from fitkit.callbacks import Callback, LearningRateScheduler, ReduceLROnPlateau
from fitkit.schedules import OneCycle

torch = pytest.importorskip("torch")
L = torch.optim.lr_scheduler
BACKBONE, HEAD = 1e-4, 1e-2


def grouped(names=(None, None), seed=0):
    """(model, optimizer): an MLP whose first layer trains at 1e-4 and last layer at 1e-2."""
    fitkit.set_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    groups = [
        {"params": net[0].parameters(), "lr": BACKBONE},
        {"params": net[2].parameters(), "lr": HEAD},
    ]
    for group, name in zip(groups, names, strict=True):
        if name is not None:
            group["name"] = name
    opt = torch.optim.SGD(groups, momentum=0.9)
    return fitkit.Model(net), opt


def rates(opt):
    return [g["lr"] for g in opt.param_groups]


def worse_every_epoch():
    """A ReduceLROnPlateau that reduces at every epoch end (a falling loss is 'worse')."""
    return ReduceLROnPlateau("loss", factor=0.5, patience=0, mode="max")


def test_reduce_lr_on_plateau_halves_every_group_and_the_history_logs_each(torch_kit):
    x, y = make_regression(n=64)
    model, opt = grouped()
    model.compile(opt, "mse")
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[worse_every_epoch()])
    # epoch 1 sets the best; epochs 2 and 3 each halve every group
    assert rates(opt) == pytest.approx([BACKBONE / 4, HEAD / 4], rel=1e-12)
    # each row: the rates that epoch trained with; no collapsed single "learning_rate" column
    assert "learning_rate" not in history.history
    assert history.history["learning_rate-group0"] == pytest.approx(
        [BACKBONE, BACKBONE, BACKBONE / 2]
    )
    assert history.history["learning_rate-group1"] == pytest.approx([HEAD, HEAD, HEAD / 2])
    assert list(history.df.columns) == [
        "epoch",
        "loss",
        "learning_rate-group0",
        "learning_rate-group1",
    ]


def test_a_group_name_names_its_column(torch_kit):
    x, y = make_regression(n=32)
    model, opt = grouped(names=("backbone", "head"))
    model.compile(opt, "mse")
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert history.history["learning_rate-backbone"] == [BACKBONE]
    assert history.history["learning_rate-head"] == [HEAD]


def test_learning_rate_scheduler_scales_every_group_by_the_same_factor(torch_kit):
    x, y = make_regression(n=64)
    model, opt = grouped()
    model.compile(opt, "mse")
    seen = []

    def schedule(epoch, lr):
        seen.append(lr)  # group 0's rate
        return lr * 0.1 if epoch else lr

    history = model.fit(
        x, y, batch_size=16, epochs=3, verbose=0, callbacks=[LearningRateScheduler(schedule)]
    )
    assert seen == pytest.approx([BACKBONE, BACKBONE, BACKBONE / 10])
    assert history.history["learning_rate-group1"] == pytest.approx([HEAD, HEAD / 10, HEAD / 100])
    assert rates(opt) == pytest.approx([BACKBONE / 100, HEAD / 100])


def test_model_learning_rate_reads_group_0_and_setting_it_keeps_the_ratio(torch_kit):
    model, opt = grouped()
    model.compile(opt, "mse")
    assert model.learning_rate == BACKBONE
    model.learning_rate = 1e-3
    assert model.learning_rate == 1e-3
    assert rates(opt) == pytest.approx([1e-3, 1e-1], rel=1e-12)


def test_compile_lr_sets_group_0_and_keeps_the_ratio(torch_kit):
    model, opt = grouped()
    model.compile(opt, "mse", lr=1e-3)
    assert rates(opt) == pytest.approx([1e-3, 1e-1], rel=1e-12)


def test_a_group_0_at_zero_scales_with_the_ratio_at_compile(torch_kit):
    model, opt = grouped()
    model.compile(opt, "mse")
    opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = 0.0  # e.g. after a warm-up from 0
    model.learning_rate = 2e-4
    assert rates(opt) == pytest.approx([2e-4, 2e-2], rel=1e-12)


def test_a_ratio_that_cannot_be_known_is_refused_before_any_change(torch_kit):
    net = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(
        [{"params": net[0].parameters(), "lr": 0.0}, {"params": net[1].parameters(), "lr": 0.1}]
    )
    model = fitkit.Model(net)
    model.compile(opt, "mse")
    with pytest.raises(fitkit.FitkitValueError, match=r"group 0's rate is 0.*param_groups\[i\]"):
        model.learning_rate = 1e-3
    assert rates(opt) == [0.0, 0.1]


@pytest.mark.parametrize("schedule", ["cosine", OneCycle(max_lr=1e-3)])
def test_a_portable_schedule_keeps_the_ratio_between_groups(torch_kit, schedule):
    x, y = make_regression(n=64)
    model, opt = grouped()
    model.compile(opt, "mse", lr_schedule=schedule, lr_schedule_every="batch")
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    first, second = (
        np.array(history.history[k]) for k in ("learning_rate-group0", "learning_rate-group1")
    )
    assert len(set(first.round(12))) > 1  # the schedule moved
    np.testing.assert_allclose(second, first * (HEAD / BACKBONE), rtol=1e-12)
    if isinstance(schedule, OneCycle):  # an absolute peak is group 0's; the head's is 100x
        assert first.max() <= 1e-3 and np.isclose(rates(opt)[1] / rates(opt)[0], 100)


def test_a_native_torch_scheduler_keeps_the_ratio_between_groups(torch_kit):
    x, y = make_regression(n=64)
    model, opt = grouped()
    model.compile(opt, "mse", lr_schedule=lambda o: L.StepLR(o, step_size=1, gamma=0.5))
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert history.history["learning_rate-group0"] == pytest.approx(
        [BACKBONE, BACKBONE / 2, BACKBONE / 4]
    )
    assert history.history["learning_rate-group1"] == pytest.approx([HEAD, HEAD / 2, HEAD / 4])


class _SaveAt(Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_batch_end(self, batch, logs=None):
        if (self.model.runtime.fit.epoch, batch) == (1, 1):
            self.model.save_checkpoint(self.path)


@pytest.mark.parametrize("how", ["plateau", "portable", "native"])
def test_groups_resume_exactly_from_a_mid_epoch_checkpoint(torch_kit, tmp_path, how):
    x, y = make_regression(n=64)
    path = str(tmp_path / "state.fitkit")

    def run(callbacks, load=False):
        model, opt = grouped(seed=5)
        schedule = {
            "plateau": None,
            "portable": "cosine",
            "native": lambda o: L.ExponentialLR(o, gamma=0.7),
        }[how]
        model.compile(
            opt,
            "mse",
            lr_schedule=schedule,
            lr_schedule_every="batch" if how == "portable" else "epoch",
        )
        cbs = [worse_every_epoch()] if how == "plateau" else []
        if load:
            model.load_checkpoint(path)
        history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=cbs + callbacks)
        return history.history, model.get_weights(), rates(opt)

    whole = run([_SaveAt(path)])
    resumed = run([_SaveAt(str(tmp_path / "unused.fitkit"))], load=True)  # the same callbacks
    assert resumed[0] == whole[0] and resumed[2] == whole[2]
    for a, b in zip(whole[1], resumed[1], strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- an optimizer over other params
def test_an_optimizer_built_before_a_deepcopy_is_refused_at_compile(torch_kit):
    net = torch_kit.mlp(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    copied = copy.deepcopy(net)
    before = torch_kit.weights(copied)
    model = fitkit.Model(copied)
    with pytest.raises(
        fitkit.FitkitValueError,
        match=r"holds none of the network's 4 trainable parameters.*lambda params",
    ):
        model.compile(opt, "mse")
    with pytest.raises(fitkit.NotCompiledError):
        model.fit(*make_regression(n=16), epochs=1, verbose=0)
    for a, b in zip(before, torch_kit.weights(copied), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_optimizer_of_another_network_is_refused_also_from_a_factory(torch_kit):
    other = torch_kit.mlp(4, 1)
    model = fitkit.Model(torch_kit.mlp(4, 1))
    with pytest.raises(fitkit.FitkitValueError, match="holds none of the network's"):
        model.compile(lambda params: torch.optim.Adam(other.parameters()), "mse")


def test_an_optimizer_over_some_parameters_warns_with_counts(torch_kit):
    net = torch_kit.mlp(4, 1)
    model = fitkit.Model(net)
    with pytest.warns(
        UserWarning,
        match=r"holds 2 of the network's 4 trainable parameters; 2 "
        r"will not train",
    ):
        model.compile(torch.optim.SGD(net[2].parameters(), lr=0.1), "mse")


def test_frozen_parameters_left_out_of_the_optimizer_are_not_missed(torch_kit):
    net = torch_kit.mlp(4, 1)
    for p in net[0].parameters():
        p.requires_grad_(False)
    model = fitkit.Model(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.compile(torch.optim.SGD(net[2].parameters(), lr=0.1), "mse")
    before = torch_kit.weights(net)
    model.fit(*make_regression(n=32), batch_size=16, epochs=1, verbose=0)
    after = torch_kit.weights(net)
    np.testing.assert_array_equal(before[0], after[0])  # frozen
    assert not np.array_equal(before[2], after[2])  # trained
