"""Learning-rate schedules: the portable formulas against Keras's and torch's own schedules,
the same numbers on both backends, native schedulers, state for exact resume, and fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import make_regression

import fitkit
from fitkit import schedules as S
from fitkit.errors import FitkitTypeError, FitkitValueError
from fitkit.scheduling import portable

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
from fitkit.tf import schedules as tf_schedules  # noqa: E402
from fitkit.torch import schedules as torch_schedules  # noqa: E402

L = torch.optim.lr_scheduler
NAMES = ["cosine", "exponential", "step", "one_cycle", "warmup_cosine", "constant"]


# ---------------------------------------------------------------- drivers: hooks in fit's order
def torch_opt(lr=0.1):
    return torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=lr)


def torch_run(sched, opt, epochs, steps, *, start=0, begin=True, logs=None):
    """The lr of each update, driving the hooks as the fit loop and train step do."""
    lrs = []
    if begin:
        sched.begin(epochs, steps)
    for epoch in range(start, epochs):
        sched.epoch_begin(epoch)
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if sched.every == "batch":
                sched.after_update()
        sched.epoch_end(epoch, dict(logs[epoch]) if logs else {})
    return lrs


class KerasRig:
    """A built Keras Dense model, its SGD, and one compiled (tf.function) update step."""

    def __init__(self, lr=0.1, optimizer=None):
        self.net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        self.opt = optimizer or keras.optimizers.SGD(lr)
        self.opt.build(self.net.trainable_variables)
        self.traces = 0
        self.x = np.ones((1, 2), "float32")

        @tf.function
        def update(x):
            self.traces += 1
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(self.net(x))
            variables = self.net.trainable_variables
            self.opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

        self.update = update

    def lr(self) -> float:
        return float(keras.ops.convert_to_numpy(self.opt.learning_rate))

    def run(self, sched, epochs, steps, *, start=0, begin=True):
        lrs = []
        if begin:
            sched.begin(epochs, steps)
        for epoch in range(start, epochs):
            sched.epoch_begin(epoch)
            for _ in range(steps):
                lrs.append(self.lr())
                self.update(self.x)
            sched.epoch_end(epoch, {})
        return lrs


def both(spec, every, epochs, steps, lr=0.1):
    opt = torch_opt(lr)
    t = torch_run(
        torch_schedules.build_scheduler(spec, opt, every=every, monitor="val_loss"),
        opt,
        epochs,
        steps,
    )
    rig = KerasRig(lr)
    k = rig.run(
        tf_schedules.build_scheduler(spec, rig.opt, every=every, monitor="val_loss"), epochs, steps
    )
    return t, k


def per_epoch(values, steps):
    return [v for v in values for _ in range(steps)]


# ---------------------------------------------------------------- formulas
def test_cosine_matches_its_hand_formula():
    base, h, alpha = 0.1, 10, 0.05
    for t in range(12):
        s = min(t, h)
        want = base * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * s / h)) + alpha)
        assert S.CosineDecay(alpha=alpha)(t, base, h) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("every", ["epoch", "batch"])
@pytest.mark.parametrize("name", NAMES)
def test_every_portable_schedule_gives_the_same_numbers_on_both_backends(name, every):
    t, k = both(name, every, epochs=5, steps=4)
    np.testing.assert_allclose(t, k, rtol=2e-6, atol=1e-9)
    horizon = 5 if every == "epoch" else 20
    want = [portable(name)(i, 0.1, horizon) for i in range(horizon)]
    np.testing.assert_allclose(t, per_epoch(want, 4) if every == "epoch" else want, rtol=1e-12)


@pytest.mark.parametrize(
    "schedule, native",
    [
        (S.CosineDecay(alpha=0.1), lambda o: L.CosineAnnealingLR(o, T_max=12, eta_min=0.01)),
        (S.ExponentialDecay(0.8), lambda o: L.ExponentialLR(o, gamma=0.8)),
        (S.StepDecay(5, gamma=0.5), lambda o: L.StepLR(o, step_size=5, gamma=0.5)),
        (S.OneCycle(), lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=12, cycle_momentum=False)),
        (
            S.OneCycle(max_lr=0.5, pct_start=0.25, anneal_strategy="linear"),
            lambda o: L.OneCycleLR(
                o,
                max_lr=0.5,
                total_steps=12,
                pct_start=0.25,
                anneal_strategy="linear",
                cycle_momentum=False,
            ),
        ),
    ],
)
def test_portable_schedules_match_torch_schedulers(schedule, native):
    mine = both(schedule, "batch", epochs=3, steps=4)[0]
    opt = torch_opt()
    theirs = torch_run(
        torch_schedules.build_scheduler(native(opt), opt, every="batch", monitor="val_loss"),
        opt,
        3,
        4,
    )
    np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "schedule, native",
    [
        (S.CosineDecay(alpha=0.1), lambda: keras.optimizers.schedules.CosineDecay(0.1, 12, 0.1)),
        (
            S.CosineDecay(decay_steps=6, warmup_steps=3),
            lambda: keras.optimizers.schedules.CosineDecay(
                0.0, 6, warmup_target=0.1, warmup_steps=3
            ),
        ),
        (
            S.WarmupCosine(4, alpha=0.2),
            lambda: keras.optimizers.schedules.CosineDecay(
                0.0, 8, 0.2, warmup_target=0.1, warmup_steps=4
            ),
        ),
        (
            S.ExponentialDecay(0.5, decay_steps=3),
            lambda: keras.optimizers.schedules.ExponentialDecay(0.1, 3, 0.5),
        ),
        (
            S.StepDecay(4, gamma=0.3),
            lambda: keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.3, staircase=True),
        ),
    ],
)
def test_portable_schedules_match_keras_schedules(schedule, native):
    mine = both(schedule, "batch", epochs=3, steps=4)[1]
    np.testing.assert_allclose(mine, [float(native()(t)) for t in range(12)], rtol=2e-6, atol=1e-9)


def test_schedules_check_their_arguments():
    with pytest.raises(FitkitValueError, match="alpha"):
        S.CosineDecay(alpha=2.0)
    with pytest.raises(FitkitValueError, match="anneal_strategy"):
        S.OneCycle(anneal_strategy="cosine")
    with pytest.raises(FitkitValueError, match="'cosine', 'exponential'"):
        portable("cosine_annealing")
    assert portable("One-Cycle") == S.OneCycle()


# ---------------------------------------------------------------- per batch: horizon, position
def test_batch_schedule_starts_at_initial_epoch_and_follows_a_second_fit_without_retracing():
    rig = KerasRig()
    sched = tf_schedules.build_scheduler("cosine", rig.opt, every="batch", monitor="val_loss")
    opt = torch_opt()
    tsched = torch_schedules.build_scheduler("cosine", opt, every="batch", monitor="val_loss")
    whole = [S.CosineDecay()(t, 0.1, 12) for t in range(12)]
    # a fit resumed at epoch 1 of 3 (4 steps each) starts at step 4 of 12
    np.testing.assert_allclose(rig.run(sched, 3, 4, start=1), whole[4:], rtol=2e-6)
    np.testing.assert_allclose(torch_run(tsched, opt, 3, 4, start=1), whole[4:], rtol=1e-12)
    # a second fit of another length: the schedule restarts over it, same compiled step
    second = [S.CosineDecay()(t, 0.1, 6) for t in range(6)]
    np.testing.assert_allclose(rig.run(sched, 2, 3), second, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(torch_run(tsched, opt, 2, 3), second, rtol=1e-12, atol=1e-12)
    assert rig.traces == 1


def test_batch_schedule_needs_the_fit_length_unless_it_has_its_own():
    for build, opt in [
        (torch_schedules.build_scheduler, torch_opt()),
        (tf_schedules.build_scheduler, KerasRig().opt),
    ]:
        with pytest.raises(FitkitValueError, match="steps_per_epoch"):
            build("cosine", opt, every="batch", monitor="val_loss").begin(3, None)
        build(S.ExponentialDecay(0.9), opt, every="batch", monitor="val_loss").begin(3, None)
        build("cosine", opt, every="epoch", monitor="val_loss").begin(3, None)


def test_batch_schedule_holds_the_base_rate_before_any_fit():
    opt = torch_opt()
    sched = torch_schedules.build_scheduler("cosine", opt, every="batch", monitor="val_loss")
    rig = KerasRig()
    tf_schedules.build_scheduler("cosine", rig.opt, every="batch", monitor="val_loss")
    for _ in range(3):  # train_on_batch before fit
        sched.after_update()
        rig.update(rig.x)
    assert opt.param_groups[0]["lr"] == 0.1 and rig.lr() == pytest.approx(0.1)


def test_torch_param_groups_keep_their_own_base_rates():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD([{"params": [net.weight], "lr": 0.1}, {"params": [net.bias], "lr": 0.01}])
    sched = torch_schedules.build_scheduler("cosine", opt, every="epoch", monitor="val_loss")
    sched.begin(4, None)
    sched.epoch_begin(2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.005])


# ---------------------------------------------------------------- native schedulers
def test_torch_native_scheduler_steps_per_epoch_or_per_batch():
    opt = torch_opt()
    lrs = torch_run(
        torch_schedules.build_scheduler(
            L.StepLR(opt, 2, 0.5), opt, every="epoch", monitor="val_loss"
        ),
        opt,
        4,
        2,
    )
    assert lrs == pytest.approx(per_epoch([0.1, 0.1, 0.05, 0.05], 2))
    opt = torch_opt()
    factory = lambda o: L.ExponentialLR(o, gamma=0.5)  # noqa: E731
    lrs = torch_run(
        torch_schedules.build_scheduler(factory, opt, every="batch", monitor="val_loss"), opt, 2, 2
    )
    assert lrs == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_reduce_on_plateau_reads_the_monitor_and_names_missing_keys():
    opt = torch_opt()
    plateau = L.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    sched = torch_schedules.build_scheduler(plateau, opt, every="epoch", monitor="val_loss")
    assert sched.monitor == "val_loss"
    logs = [{"loss": 1.0, "val_loss": v} for v in (1.0, 0.5, 0.7, 0.8)]
    assert torch_run(sched, opt, 4, 1, logs=logs) == pytest.approx([0.1, 0.1, 0.1, 0.05])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    sched.epoch_end(4, {"loss": 1.0})  # seen before: an epoch without validation is skipped
    fresh = torch_schedules.build_scheduler(
        L.ReduceLROnPlateau, opt, every="epoch", monitor="val_loss"
    )  # the class: a factory
    assert isinstance(fresh.scheduler, L.ReduceLROnPlateau) and fresh.scheduler.optimizer is opt
    with pytest.raises(FitkitValueError, match=r"lr_schedule_monitor='val_loss'.*keys: loss, lr"):
        fresh.epoch_end(0, {"loss": 1.0, "lr": 0.1})
    with pytest.raises(FitkitValueError, match="lr_schedule_every='epoch'"):
        torch_schedules.build_scheduler(
            L.ReduceLROnPlateau(opt), opt, every="batch", monitor="val_loss"
        )


def test_keras_schedule_per_batch_is_keras_own_and_per_epoch_takes_the_epoch():
    native = keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)
    rig = KerasRig()
    lrs = rig.run(
        tf_schedules.build_scheduler(native, rig.opt, every="batch", monitor="val_loss"), 2, 3
    )
    own = KerasRig(optimizer=keras.optimizers.SGD(native))  # Keras's own use of it
    keras_lrs = []
    for _ in range(6):
        keras_lrs.append(own.lr())
        own.update(own.x)
    assert lrs == pytest.approx(keras_lrs, rel=1e-7)
    assert lrs == pytest.approx([0.1 * 0.5 ** (t / 2) for t in range(6)], rel=1e-6)
    rig = KerasRig()
    lrs = rig.run(
        tf_schedules.build_scheduler(native, rig.opt, every="epoch", monitor="val_loss"), 3, 2
    )
    assert lrs == pytest.approx(per_epoch([0.1, 0.1 * 0.5**0.5, 0.05], 2), rel=1e-6)


def test_a_later_compile_without_a_schedule_gives_the_optimizer_its_variable_back():
    rig = KerasRig()
    variables = [v.path for v in rig.opt.variables]
    tf_schedules.build_scheduler("cosine", rig.opt, every="batch", monitor="val_loss")
    assert [v.path for v in rig.opt.variables] == variables  # same files with or without
    tf_schedules.build_scheduler(None, rig.opt, every="epoch", monitor="val_loss")
    rig.opt.learning_rate = 0.3
    assert rig.lr() == pytest.approx(0.3)


# ---------------------------------------------------------------- wrong kinds, clear errors
def test_wrong_kinds_are_named_with_what_to_pass_instead():
    opt, rig = torch_opt(), KerasRig()
    with pytest.raises(FitkitTypeError, match=r"Keras ExponentialDecay.*torch scheduler factory"):
        torch_schedules.build_scheduler(
            keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.9),
            opt,
            every="epoch",
            monitor="val_loss",
        )
    with pytest.raises(FitkitTypeError, match=r"torch StepLR.*LearningRateSchedule"):
        tf_schedules.build_scheduler(L.StepLR(opt, 2), rig.opt, every="epoch", monitor="val_loss")
    for build, o in [
        (torch_schedules.build_scheduler, opt),
        (tf_schedules.build_scheduler, rig.opt),
    ]:
        with pytest.raises(FitkitTypeError, match=r"portable name.*got int"):
            build(42, o, every="epoch", monitor="val_loss")
    with pytest.raises(FitkitValueError, match=r"another optimizer.*factory"):
        torch_schedules.build_scheduler(
            L.StepLR(torch_opt(), 2), opt, every="epoch", monitor="val_loss"
        )
    with pytest.raises(FitkitTypeError, match="factory returned float"):
        torch_schedules.build_scheduler(lambda o: 0.1, opt, every="epoch", monitor="val_loss")
    scheduled = KerasRig(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, 10))
    )
    with pytest.raises(FitkitValueError, match="already a schedule"):
        tf_schedules.build_scheduler("cosine", scheduled.opt, every="epoch", monitor="val_loss")


# ---------------------------------------------------------------- state for exact resume
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_portable_batch_state_resumes_mid_epoch_exactly(backend):
    def make():
        if backend == "torch":
            opt = torch_opt()
            sched = torch_schedules.build_scheduler(
                "one_cycle", opt, every="batch", monitor="val_loss"
            )
            return (
                sched,
                lambda: opt.param_groups[0]["lr"],
                lambda: (opt.step(), sched.after_update()),
            )
        rig = KerasRig()
        sched = tf_schedules.build_scheduler(
            "one_cycle", rig.opt, every="batch", monitor="val_loss"
        )
        return sched, rig.lr, lambda: rig.update(rig.x)

    whole = [S.OneCycle()(t, 0.1, 12) for t in range(12)]
    sched, lr, update = make()
    sched.begin(3, 4)
    sched.epoch_begin(0)
    for _ in range(6):  # one epoch and a half
        update()
    state = json.loads(json.dumps(sched.state_dict()))
    assert state["t"] == 6
    sched, lr, update = make()  # a new process: compile, load the state, fit resumes
    sched.load_state_dict(state)
    sched.begin(3, 4)  # the resumed epoch's begin hooks ran before the backup
    lrs = []
    for _ in range(6):
        lrs.append(lr())
        update()
    np.testing.assert_allclose(lrs, whole[6:], rtol=2e-6, atol=1e-9)


def test_torch_native_state_is_json_and_resumes():
    opt = torch_opt()
    sched = torch_schedules.build_scheduler(
        lambda o: L.OneCycleLR(o, 0.1, total_steps=12), opt, every="batch", monitor="val_loss"
    )
    whole = torch_run(sched, opt, 3, 4)
    opt = torch_opt()
    sched = torch_schedules.build_scheduler(
        lambda o: L.OneCycleLR(o, 0.1, total_steps=12), opt, every="batch", monitor="val_loss"
    )
    torch_run(sched, opt, 1, 5)
    state, opt_state = json.loads(json.dumps(sched.state_dict())), opt.state_dict()
    opt = torch_opt()
    sched = torch_schedules.build_scheduler(
        lambda o: L.OneCycleLR(o, 0.1, total_steps=12), opt, every="batch", monitor="val_loss"
    )
    opt.load_state_dict(opt_state)
    sched.load_state_dict(state)
    np.testing.assert_allclose(torch_run(sched, opt, 1, 7, begin=False), whole[5:])
    with pytest.raises(FitkitValueError, match="does not match"):
        sched.load_state_dict({"kind": "torch", "class": "StepLR", "state": {}})
    plateau = torch_schedules.build_scheduler(
        L.ReduceLROnPlateau(opt), opt, every="epoch", monitor="val_loss"
    )
    json.loads(json.dumps(plateau.state_dict()))  # best = inf round-trips


def test_a_scheduler_state_that_is_not_json_is_refused_at_save():
    class Holder(L.LRScheduler):
        def __init__(self, opt):
            self.helper = object()
            super().__init__(opt)

        def get_lr(self):
            return list(self.base_lrs)

    opt = torch_opt()
    sched = torch_schedules.build_scheduler(Holder, opt, every="epoch", monitor="val_loss")
    with pytest.raises(FitkitTypeError, match=r"Holder.*\['helper'\] is a object"):
        sched.state_dict()


# ---------------------------------------------------------------- through compile and fit
@pytest.mark.parametrize("every", ["epoch", "batch"])
def test_fit_with_a_portable_schedule_logs_its_rates(kit, every):
    x, y = make_regression(n=128)
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse", lr=0.1, lr_schedule="cosine", lr_schedule_every=every)
    history = model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    # per epoch: the rate each epoch trained with; per batch: the next update's, at epoch end
    steps = [e for e in range(4)] if every == "epoch" else [4 * (e + 1) for e in range(4)]
    horizon = 4 if every == "epoch" else 16
    want = [S.CosineDecay()(t, 0.1, horizon) for t in steps]
    np.testing.assert_allclose(history.history["learning_rate"], want, rtol=2e-6, atol=1e-9)
    history = model.fit(x, y, batch_size=64, epochs=2, verbose=0)  # restarts over this fit
    want = [
        S.CosineDecay()(t, 0.1, 2 if every == "epoch" else 4)
        for t in ([0, 1] if every == "epoch" else [2, 4])
    ]
    np.testing.assert_allclose(history.history["learning_rate"], want, rtol=2e-6, atol=1e-9)


def test_fit_with_native_schedules(kit):
    x, y = make_regression(n=128)
    net = kit.mlp(4, 1)
    model = fitkit.Model(net)
    if kit.name == "torch":
        opt = kit.native_optimizer(net, lr=0.1)
        model.compile(
            opt, "mse", lr_schedule=L.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=10.0)
        )
    else:
        model.compile(
            "sgd",
            "mse",
            lr_schedule_every="batch",
            lr_schedule=keras.optimizers.schedules.ExponentialDecay(0.1, 3, 0.5),
        )
    history = model.fit(x, y, batch_size=32, epochs=3, validation_split=0.25, verbose=0)
    # TF: Keras's per-batch rate after 3 updates an epoch; torch: each epoch's rate, the
    # plateau (threshold=10: never better) halving it at every epoch end
    want = [0.05, 0.025, 0.0125] if kit.name == "tensorflow" else [0.1, 0.05, 0.025]
    assert history.history["learning_rate"] == pytest.approx(want, rel=1e-6)


class _SaveAt(fitkit.callbacks.Callback):
    """Saves a checkpoint after batch ``batch`` of epoch ``epoch``; training goes on."""

    def __init__(self, path, epoch, batch):
        super().__init__()
        self.path, self.at, self.epoch = path, (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.model.save_checkpoint(self.path)


@pytest.mark.parametrize("every", ["epoch", "batch"])
def test_a_checkpoint_mid_epoch_resumes_the_schedule_exactly(kit, tmp_path, every):
    x, y = make_regression(n=128)
    path = str(tmp_path / "state.fitkit")

    def model():
        if kit.name == "tensorflow":
            keras.backend.clear_session()  # the same layer names in both models
        fitkit.set_seed(0)
        m = fitkit.Model(kit.mlp(4, 1))
        m.compile("sgd", "mse", lr=0.1, lr_schedule="one_cycle", lr_schedule_every=every)
        return m

    whole = (
        model()
        .fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[_SaveAt(path, 1, 1)])
        .history["learning_rate"]
    )
    resumed = model()
    resumed.load_checkpoint(path)
    lrs = resumed.fit(x, y, batch_size=32, epochs=4, verbose=0).history["learning_rate"]
    np.testing.assert_allclose(lrs, whole, rtol=2e-6, atol=1e-9)


def test_batch_schedule_horizon_counts_updates_under_gradient_accumulation(kit):
    x, y = make_regression(n=128)
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile(
        "sgd",
        "mse",
        lr=0.1,
        lr_schedule="cosine",
        lr_schedule_every="batch",
        gradient_accumulation_steps=2,
    )
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)  # 2 updates an epoch
    want = [S.CosineDecay()(t, 0.1, 4) for t in (2, 4)]
    np.testing.assert_allclose(history.history["learning_rate"], want, rtol=2e-6, atol=1e-9)
