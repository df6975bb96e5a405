"""Orbax checkpoints holding the train state and the data iterator together.

Saves are asynchronous; orbax writes each step to a temporary directory and
renames it when complete, so a failed or interrupted write never replaces the
last good checkpoint. `latest_step` only ever sees finished checkpoints.
Restoring for inference reads only some fields of the train state
(`restore_fields`: the EMA weights, not the optimizer state).

Checkpoints move between device and process counts: a training restore
reshards onto the shardings it is given, and inference restores place every
array replicated on this process's own devices (`local_replicated`).
"""

import json
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec


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
        the data iterator, when given, is restored in place.

        The arrays are resharded onto whatever devices the shardings name, so a
        checkpoint written by P processes restores on any other number. grain keeps
        one iterator state per process (`process_<i>-of-<P>.json`); under another
        process count, the saved states must all be equal (as the train pipeline's
        are: the number of global batches consumed) and that state is restored.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        own_data = data_iterator is not None and os.path.exists(self._data_file(step))
        if own_data:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        state = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
        if data_iterator is not None and not own_data:
            data_iterator.set_state(self._shared_data_state(step))
        return state

    def _data_file(self, step: int) -> str:
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return os.path.join(self.directory, str(step), "data", name)

    def _shared_data_state(self, step: int) -> dict:
        """The one data-iterator state that every process of the saving job wrote."""
        folder = os.path.join(self.directory, str(step), "data")
        names = sorted(n for n in os.listdir(folder) if n.startswith("process_"))
        states = []
        for name in names:
            with open(os.path.join(folder, name)) as f:
                states.append(json.load(f))
        if not states or any(s != states[0] for s in states):
            raise ValueError(
                f"checkpoint {folder} holds {len(states)} differing data-iterator states "
                f"({', '.join(names) or 'none'}): it resumes only on the process count that "
                "wrote it"
            )
        return states[0]

    def restore_state(self, abstract_state, step: int | None = None):
        """The train state alone (for evaluation and sampling); `abstract_state=None`
        restores every saved array, as nested dicts, replicated over this process's
        devices (`local_replicated`), whatever devices wrote it."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if abstract_state is None:
            metadata = ocp.PyTreeCheckpointer().metadata(
                os.path.join(self.directory, str(step), "state")
            )
            sharding = local_replicated()
            abstract_state = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                metadata.item_metadata.tree,
            )
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
          field name -> restored pytree, every array replicated over this
          process's devices (`local_replicated`), whatever devices wrote it: a
          checkpoint of a multi-process or FSDP run restores on one device, and
          each process of a multi-process job gets the whole model on its own.

        Orbax binds one handler to an item per manager: a `Checkpointer` that
        restored fields cannot restore the whole state afterwards, nor the reverse.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        sharding = local_replicated()
        restore_args = jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype),
            fields,
        )
        partial = ocp.args.PyTreeRestore(
            item=fields, restore_args=restore_args, partial_restore=True
        )
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


def local_replicated() -> NamedSharding:
    """Whole arrays on every device of this process (only these: in a multi-process
    job each process holds its own copy, readable without collectives)."""
    return NamedSharding(Mesh(np.asarray(jax.local_devices()), ("local",)), PartitionSpec())


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings
    )
