"""The contract between the training loop and what it trains.

A task builds the model (one NNX module; a tokenizer task bundles its
discriminator and frozen perceptual network into it), defines the loss and
the evaluation. The loop owns everything else: sharding, optimizer, EMA,
checkpoints, logging. `loss`, `after_update`, `eval_batch` and `preview` run
inside `jax.jit`; `prepare_data`, `host_batch` and `eval_summary` on the host.
"""

from typing import Any, Protocol

import jax
from flax import nnx

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class Task(Protocol):
    """Attributes:
    UNPINNED: config keys the task resolves on first training (the exact checkpoint of
      a frozen dependency) and the values that mean "not resolved yet"; `pins()`
      gives their resolved values, which `visgen.tasks.run` records in the workdir.
    """

    UNPINNED: dict[str, Any]

    def pins(self) -> dict[str, Any]:
        """The resolved values of the `UNPINNED` keys, for the workdir's config."""
        ...

    def prepare_data(self, data_cfg: Any) -> None:
        """Called once before the train iterator is made: build or check derived data
        (a generator's token cache), or reject settings the task cannot train with."""
        ...

    def host_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Host-side, before each train and eval batch enters the jitted step: turns
        what jit cannot take (a text-conditional generator's caption strings) into
        arrays of static shape. Only numeric arrays of the result reach the step."""
        ...

    def build(self, rngs: nnx.Rngs) -> nnx.Module:
        """The model with freshly initialised parameters."""
        ...

    def loss(
        self, model: nnx.Module, batch: Batch, rng: jax.Array, step: jax.Array
    ) -> tuple[jax.Array, Metrics, Any]:
        """(scalar loss, scalar metrics, aux for `after_update`)."""
        ...

    def after_update(self, model: nnx.Module, aux: Any, rng: jax.Array) -> None:
        """Non-gradient updates after the optimizer step (e.g. dead-code revival)."""
        ...

    def eval_batch(self, model: nnx.Module, batch: Batch) -> Metrics:
        """Sums over the batch's real examples (`batch["mask"]`), summed across batches."""
        ...

    def eval_summary(self, sums: dict[str, Any]) -> dict[str, float]:
        """Host-side: final evaluation metrics from the summed `eval_batch` outputs."""
        ...

    def preview(self, model: nnx.Module, batch: Batch) -> jax.Array:
        """Rows of images in [-1, 1] to save as a grid: `[R, N, H, W, 3]`."""
        ...
