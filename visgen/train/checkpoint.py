"""Orbax checkpoints holding the train state and the data iterator together.

Saves are asynchronous; orbax writes each step to a temporary directory and
renames it when complete, so a failed or interrupted write never replaces the
last good checkpoint. `latest_step` only ever sees finished checkpoints.
Restoring for inference reads only some fields of the train state
(`restore_fields`: the EMA weights, not the optimizer state).
"""

import os
import warnings

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

    def restore_fields(self, fields: dict, step: int | None = None) -> dict:
        """Some fields of the saved `TrainState`, the others left unread.

        Args:
          fields: field name -> abstract pytree (ShapeDtypeStructs), e.g.
            `{"ema_params": ..., "rest": ...}` for inference; the other fields
            (optimizer state, params, RNG) are not read, nor is their structure
            needed, so no optimizer has to be built.
          step: the checkpoint; None = the latest.

        Returns:
          field name -> restored pytree, its arrays placed with the shardings
          they were saved with (as `restore_state` does without target shardings).

        Orbax binds one handler to an item per manager: a `Checkpointer` that
        restored fields cannot restore the whole state afterwards, nor the reverse.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        partial = ocp.args.PyTreeRestore(item=fields, partial_restore=True)
        with warnings.catch_warnings():
            # Without target shardings orbax reads each array's saved sharding from
            # the checkpoint, as `StandardRestore` does, and warns that it does.
            warnings.filterwarnings("ignore", message="Sharding info not provided")
            restored = self.manager.restore(step, args=ocp.args.Composite(state=partial))
        restored = restored["state"]
        # Partial restore leaves what the checkpoint lacks as it was given (abstract).
        missing = [
            jax.tree_util.keystr(path)
            for path, leaf in jax.tree_util.tree_leaves_with_path(restored)
            if isinstance(leaf, jax.ShapeDtypeStruct)
        ]
        if missing:
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} does not hold "
                f"{len(missing)} arrays the model has (first: {', '.join(missing[:3])}): "
                "it was written by a model of another structure"
            )
        return restored

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings
    )
