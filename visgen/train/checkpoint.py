"""Orbax checkpoints holding the train state and the data iterator together.

Saves are asynchronous; orbax writes each step to a temporary directory and
renames it when complete, so a failed or interrupted write never replaces the
last good checkpoint. `latest_step` only ever sees finished checkpoints.
"""

import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the newest `keep` checkpoints under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data")
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator=None) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state, data_iterator=None):
        """Restores into `abstract_state` (ShapeDtypeStructs carrying shardings);
        the data iterator, when given, is restored in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_state(self, abstract_state, step: int | None = None):
        """The train state alone (for evaluation and sampling); `abstract_state=None`
        restores the arrays as saved, as nested dicts."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings
    )
