"""The class style's methods: the steps a subclass of fitkit.Model overrides, and what it
calls inside them (unpack_batch, compute_loss, update_metrics, autocast, ``self(x)``).

fitkit.Model inherits them; what runs the steps (fit, validate, predict) is model.py's, and
each backend's step is its adapter's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import NotCompiledError
from .sources import unpack

if TYPE_CHECKING:
    from .runtime import Runtime


class CustomSteps:
    """The overridable steps of fitkit.Model (documented there): subclass fitkit.Model, not
    this class.

    >>> class MyModel(fitkit.Model):
    ...     def shared_step(self, batch):
    ...         x, y, _ = self.unpack_batch(batch)
    ...         return {"loss": torch.nn.functional.mse_loss(self(x), y)}
    """

    runtime: Runtime  # set by fitkit.Model

    def train_step(self, batch: tuple) -> dict:
        """One optimisation step on ``batch`` = (x, y) or (x, y, sample_weight); returns logs.

        Override it with backend-native code (see ``unpack_batch``, ``compute_loss``,
        ``update_metrics``, ``autocast``); return a dict of device values. Or override
        ``shared_step`` alone: fitkit then does the update (with the training controls).

        >>> def train_step(self, batch):                     # in a subclass, torch
        ...     x, y, w = self.unpack_batch(batch)
        ...     y_pred = self.net(x)
        ...     loss = self.compute_loss(x, y, y_pred, w)
        ...     self.optimizer.zero_grad(); loss.backward(); self.optimizer.step()
        ...     self.update_metrics(y, y_pred, w)
        ...     return {"loss": loss}
        """
        if self.runtime.shared:
            return self.runtime.adapter.shared_train_step(batch, self.shared_step)
        return self.runtime.adapter.train_step(batch, self.compute_loss)

    def test_step(self, batch: tuple) -> dict:
        """One evaluation step; updates the metrics; returns a dict of device values.

        >>> def test_step(self, batch):                      # in a subclass, torch
        ...     x, y, w = self.unpack_batch(batch)
        ...     y_pred = self.net(x)
        ...     self.update_metrics(y, y_pred, w)
        ...     return {"loss": self.compute_loss(x, y, y_pred, w)}
        """
        if self.runtime.shared:
            return self.runtime.adapter.shared_test_step(batch, self.shared_step)
        return self.runtime.adapter.test_step(batch, self.compute_loss)

    def shared_step(self, batch: tuple) -> dict:
        """Override to write one step for training and validation (the tutorial's
        LightModel): return ``{"loss": loss, "accuracy": ...}`` of device values; fitkit
        differentiates "loss" and updates in training, and averages every value exactly
        over the samples. ``self(x)`` runs the network in the step's mode.

        >>> def shared_step(self, batch):
        ...     x, y = self.unpack_batch(batch)[:2]
        ...     y_pred = self(x)
        ...     return {"loss": F.binary_cross_entropy(y_pred, y), "acc": ((y_pred > 0.5) == y).float().mean()}
        """
        raise NotImplementedError

    def __call__(self, *inputs: Any) -> Any:
        """The network on ``inputs`` in the current step's mode (train or inference)."""
        return self.runtime.adapter.call(inputs[0] if len(inputs) == 1 else inputs)

    def predict_step(self, batch: tuple) -> Any:
        """The network's outputs for ``batch = (x, None)``; override to post-process them.

        >>> def predict_step(self, batch):                   # in a subclass, torch
        ...     return torch.softmax(self.net(batch[0]), dim=-1)
        """
        return self.runtime.adapter.predict_step(batch)

    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The compiled loss, weighted per output and per sample (plus Keras's layer losses).

        >>> loss = self.compute_loss(x, y, y_pred, sample_weight)   # in a custom step
        """
        return self.runtime.adapter.compute_loss(x, y, y_pred, sample_weight)

    def update_metrics(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulate the compiled metrics on the device (for custom train/test steps).

        >>> self.update_metrics(y, y_pred)                   # in a custom step
        """
        self.runtime.adapter.update_metrics(y, y_pred, sample_weight)

    @staticmethod
    def unpack_batch(batch: Any) -> tuple[Any, Any, Any]:
        """``(x, y, sample_weight)`` of a batch; missing parts are None.

        >>> x, y, w = self.unpack_batch(batch)
        """
        return unpack(batch)

    def autocast(self) -> Any:
        """The compiled precision as a context manager, for custom steps.

        >>> with self.autocast():
        ...     y_pred = self.net(x)
        """
        return self.runtime.adapter.autocast()

    def configure_optimizers(self) -> Any:
        """Override to choose the optimizer (and a schedule) in code, as Lightning does:
        return an optimizer, ``(optimizer, scheduler)``, or ``{"optimizer": ..., "lr_scheduler":
        scheduler or {"scheduler": ..., "interval": "epoch" | "step", "monitor": ...}}``.
        compile calls it; pass no optimizer to compile then. Several optimizers (a GAN's:
        ``[opt_g, opt_d]``, ``([opt_g, opt_d], [sched_g, sched_d])`` or a list of such dicts)
        need a ``train_step`` that steps each (``self.optimizers()``); fitkit steps their
        schedulers, saves their states in checkpoints and logs each rate (``learning_rate-opt<i>``).

        >>> def configure_optimizers(self):
        ...     opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
        ...     return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=10)
        """
        return None

    def optimizers(self) -> Any:
        """The optimizer compile built, or the list ``configure_optimizers()`` returned (a
        GAN's), for a ``train_step`` that steps each one itself, as Lightning's.

        >>> opt_g, opt_d = self.optimizers()                 # in a train_step
        """
        built = list(self.runtime.adapter.optimizers)
        if not built:
            raise NotCompiledError(
                "optimizers() needs a compiled model: call model.compile(...) first."
            )
        return built[0] if len(built) == 1 else built
