"""Evaluation over a whole split, shared by the training loop and `visgen.evaluation`.

Runs `Task.eval_batch` (jitted) over the eval iterator, sums its outputs and
hands them to `Task.eval_summary`; also renders the task's preview grid.
"""

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from visgen.data import DataConfig, make_eval_iterator, num_examples, to_uint8
from visgen.train.progress import progress_bar
from visgen.train.sharding import global_batch, replicated
from visgen.train.task import Task
from visgen.train.writer import image_grid


class Evaluator:
    """Compiles the eval and preview functions once for a model graph."""

    def __init__(self, task: Task, graphdef: nnx.GraphDef, mesh: Mesh):
        self.task, self.mesh = task, mesh

        def merged(params, frozen, rest):
            return nnx.merge(graphdef, params, frozen, rest)

        # Replicated outputs: every process of a multi-process job can read them.
        out = replicated(mesh)
        self._eval = jax.jit(
            lambda p, f, r, b: task.eval_batch(merged(p, f, r), b), out_shardings=out
        )
        self._preview = jax.jit(
            lambda p, f, r, b: task.preview(merged(p, f, r), b), out_shardings=out
        )

    def run(
        self,
        params,
        frozen,
        rest,
        data: DataConfig,
        *,
        max_examples: int = 0,
        batch_size: int = 0,
        show_progress: bool = False,
    ) -> tuple[dict[str, float], np.ndarray]:
        """(metrics, preview grid uint8 `[H, W, 3]`) over the eval split."""
        batch_size = batch_size or data.batch_size
        total = num_examples(data, data.eval_split)
        if max_examples:
            total = min(total, max_examples)
        batches = make_eval_iterator(data, batch_size=batch_size, max_examples=total)
        if show_progress:
            batches = progress_bar(batches, total=-(-total // batch_size), desc="eval")
        sums, preview = None, None
        for local in batches:
            batch = global_batch(self.task.host_batch(local), self.mesh)
            if preview is None:
                preview = image_grid(to_uint8(self._preview(params, frozen, rest, batch)))
            out = self._eval(params, frozen, rest, batch)
            sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
        return self.task.eval_summary(jax.device_get(sums)), preview
