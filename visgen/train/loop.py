"""The training loop shared by every task.

    state <- restore latest checkpoint, or init sharded from the seed
    repeat: batch -> jitted train step (state donated) -> log / eval / checkpoint
    on SIGTERM or SIGINT: checkpoint, then return cleanly
    on a non-finite loss or gradient: stop naming the step; the update was
    skipped and nothing non-finite was saved

State is created directly with its shardings: shapes from `jax.eval_shape`,
shardings from the FSDP rule, then one `jax.jit(init, out_shardings=...)`.
Per-step randomness is `fold_in(rng, step)` and the data iterator's state is
checkpointed with the model, so a resumed run continues bit-exactly.
"""

import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable

import jax
import numpy as np
from etils import epath
from flax import nnx

from visgen.data import DataConfig, make_train_iterator
from visgen.distributed import first_set
from visgen.train import sharding as shd
from visgen.train.checkpoint import Checkpointer, abstract_with_shardings
from visgen.train.config import TrainConfig
from visgen.train.evaluate import Evaluator
from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from visgen.train.progress import Progress, format_seconds
from visgen.train.state import init_state, make_train_step, split_model
from visgen.train.task import Task
from visgen.train.writer import MetricWriter


class NonFiniteError(FloatingPointError):
    """Raised when a step's loss or gradients are NaN or inf."""


class _StopSignal:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps."""

    def __init__(self):
        self.received: str | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def any_process(self) -> bool:
        """Whether any process of the job received a signal; all processes agree
        (a collective in a multi-process job), so all save at the same step."""
        self.received = first_set(self.received)
        return self.received is not None

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclasses.dataclass
class TrainResult:
    step: int
    stopped_by: str | None
    eval_metrics: dict[str, float]


def _is_due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def train(
    task: Task,
    workdir: str,
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    optim_cfg: OptimConfig,
    on_start: Callable[[], None] | None = None,
) -> TrainResult:
    """Trains `task` in `workdir`, resuming from its latest checkpoint.

    `on_start` runs once the state is initialised or restored, before anything is
    written to the workdir (`visgen.tasks.run` writes `config.json` there), so a
    checkpoint that does not fit the model leaves the workdir as it was.
    """
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    mesh = shd.make_mesh(train_cfg.mesh_data, train_cfg.mesh_fsdp)
    if data_cfg.batch_size % mesh.size:
        raise ValueError(
            f"data.batch_size={data_cfg.batch_size} is not divisible by the {mesh.size} devices"
        )
    total = train_cfg.steps
    if is_main and total <= optim_cfg.warmup_steps:
        print(
            f"warning: train.steps={total} <= optim.warmup_steps={optim_cfg.warmup_steps}: "
            f"the warm-up is cut to {max(total - 1, 0)} steps and the cosine decay to 1 "
            "(see visgen.train.optim)",
            flush=True,
        )
    tx = make_optimizer(optim_cfg, total)
    schedule = learning_rate_schedule(optim_cfg, total)

    graphdef = split_model(nnx.eval_shape(lambda: task.build(nnx.Rngs(0))))[0]
    init_fn = lambda: init_state(task, tx, train_cfg.seed)
    abstract_state, abstract_frozen = jax.eval_shape(init_fn)
    state_sh = shd.state_shardings(abstract_state, mesh, train_cfg.min_fsdp_size)
    frozen_sh = shd.state_shardings(abstract_frozen, mesh, train_cfg.min_fsdp_size)
    batch_sh = shd.batch_sharding(mesh)

    task.prepare_data(data_cfg)
    data_iter = make_train_iterator(data_cfg)
    ckpt = Checkpointer(
        workdir, keep=train_cfg.keep_checkpoints, async_save=train_cfg.async_checkpoints
    )
    state, frozen = jax.jit(init_fn, out_shardings=(state_sh, frozen_sh))()
    start = ckpt.latest_step()
    if start is not None:
        _check_fits(ckpt, start, abstract_state)
        abstract = abstract_with_shardings(abstract_state, state_sh)
        state = ckpt.restore(start, abstract, data_iter)
        print(f"resumed from checkpoint at step {start} in {ckpt.directory}")
    if on_start is not None:
        on_start()
    step = int(state.step)
    _write_overview(workdir, state, is_main)
    if is_main:
        axes = ", ".join(
            f"{n}={k}" for n, k in zip(mesh.axis_names, mesh.devices.shape, strict=True)
        )
        print(f"mesh: {axes} ({mesh.size} devices, {jax.process_count()} processes)", flush=True)

    train_step = jax.jit(
        make_train_step(graphdef, task, tx, schedule, train_cfg.ema_decay),
        in_shardings=(state_sh, frozen_sh, batch_sh),
        out_shardings=(state_sh, shd.replicated(mesh)),
        donate_argnums=(0,),
    )
    evaluator = Evaluator(task, graphdef, mesh)
    writer = MetricWriter(workdir, tensorboard=train_cfg.tensorboard, is_main=is_main)
    progress = Progress(total, examples_per_step=data_cfg.batch_size)
    progress.start(step)
    saved_step, eval_metrics, t0 = start, {}, time.perf_counter()

    def check_finite() -> None:
        bad = int(state.nonfinite_step)
        if bad >= 0:
            ckpt.wait()
            last = ckpt.latest_step()
            kept = (
                f"The last good checkpoint (step {last}) is in {ckpt.directory}"
                if last is not None
                else "No checkpoint was saved before it"
            )
            raise NonFiniteError(
                f"non-finite loss or gradients at step {bad}; training stopped. {kept}"
            )

    def save() -> None:
        nonlocal saved_step
        if saved_step != step:
            check_finite()
            ckpt.save(step, state, data_iter)
            saved_step = step

    def evaluate() -> dict[str, float]:
        """EMA-parameter evaluation; writes JSONL, `eval/step_N.json` and the preview PNG.

        `elapsed_s` (seconds since this run started) makes the log a
        quality-against-time curve."""
        elapsed = time.perf_counter() - t0
        metrics, preview = evaluator.run(
            state.ema_params, frozen, state.rest, data_cfg, max_examples=train_cfg.eval_examples
        )
        metrics = dict(metrics, elapsed_s=elapsed)
        writer.write_scalars(step, metrics, prefix="eval/")
        writer.write_image(step, "preview", preview)
        if is_main:
            os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
            with open(os.path.join(workdir, "eval", f"step_{step:07d}.json"), "w") as f:
                json.dump({"step": step, **metrics}, f, indent=2)
            print("eval " + " | ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)
        return metrics

    with _StopSignal() as stop:
        try:
            while step < total and not stop.any_process():
                batch = shd.global_batch(task.host_batch(next(data_iter)), mesh)
                state, metrics = train_step(state, frozen, batch)
                step += 1
                if _is_due(step, train_cfg.log_every, total):
                    check_finite()
                    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    scalars.update(progress.update(step), elapsed_s=time.perf_counter() - t0)
                    writer.write_scalars(step, scalars, prefix="train/")
                    if is_main:
                        print(_log_line(step, total, scalars), flush=True)
                if _is_due(step, train_cfg.checkpoint_every, total):
                    save()
                if _is_due(step, train_cfg.eval_every, total):
                    eval_metrics = evaluate()
                    progress.start(step)
            if stop.received:
                save()
                print(f"{stop.received} received: checkpoint saved at step {step}; exiting")
        finally:
            ckpt.close()
            writer.close()
    if is_main and stop.received is None:
        print(f"done: {step} steps in {format_seconds(time.perf_counter() - t0)}")
    return TrainResult(step=step, stopped_by=stop.received, eval_metrics=eval_metrics)


def _dotted(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _check_fits(ckpt: Checkpointer, step: int, abstract_state) -> None:
    """Refuses, in one line and before orbax reads an array, a checkpoint whose arrays'
    names or shapes differ from the model's (a model changed under --allow_config_change)."""
    import orbax.checkpoint as ocp

    path = os.path.join(ckpt.directory, str(step), "state")
    try:
        saved = ocp.StandardCheckpointHandler().metadata(epath.Path(path))
    except (OSError, ValueError):  # no readable metadata: let the restore itself decide
        return
    old = {_dotted(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(saved)}
    new = {
        _dotted(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(abstract_state)
    }
    old = {k.removesuffix(".value"): v for k, v in old.items()}
    new = {k.removesuffix(".value"): v for k, v in new.items()}
    differ = [
        f"{k}: {old.get(k, 'absent')} in the checkpoint, {new.get(k, 'absent')} in the model"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    if differ:
        ckpt.close()
        raise ValueError(
            f"the checkpoint at step {step} in {ckpt.directory} does not fit this config's "
            f"model ({len(differ)} arrays differ; {'; '.join(differ[:2])}): resume with the "
            "config stored beside it"
        )


def _log_line(step: int, total: int, s: dict[str, float]) -> str:
    main = [k for k in s if k not in {"steps_per_s", "examples_per_s", "eta_s", "lr"}]
    parts = [f"step {step}/{total}"] + [f"{k} {s[k]:.4g}" for k in main[:8]]
    parts.append(f"lr {s['lr']:.2e}")
    if "steps_per_s" not in s:  # the first interval: its time is mostly compilation
        return " | ".join([*parts, "compiling"])
    parts += [
        f"{s['steps_per_s']:.2f} steps/s",
        f"{s['examples_per_s']:.0f} ex/s",
        "ETA " + (format_seconds(s["eta_s"]) if np.isfinite(s["eta_s"]) else "?"),
    ]
    return " | ".join(parts)


def _write_overview(workdir: str, state, is_main: bool) -> None:
    """Parameter shapes, counts and shardings to `<workdir>/params.txt`."""
    if not is_main:
        return
    lines, count = [], 0
    for path, x in jax.tree_util.tree_leaves_with_path(state.params):
        count += x.size
        name = "/".join(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        lines.append(f"{name:60s} {str(x.shape):20s} {x.sharding.spec}")
    lines.append(f"total parameters: {count:,}")
    with open(os.path.join(workdir, "params.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"model: {count:,} parameters (overview in params.txt)")
