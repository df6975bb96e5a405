"""The typed settings of the training loop and its optimizer (`config.train`, `config.optim`).

Kept apart from the loop so that reading a config file (`visgen.config`,
`configs/*.py`) imports neither orbax nor grain nor optax.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Typed loop settings (`config.train`).

    Attributes:
      steps: total optimizer steps.
      seed: model init and per-step randomness (the data seed is `data.seed`).
      log_every, eval_every, checkpoint_every: periods in steps (0 = only at the end).
      eval_examples: evaluate on the first N eval examples (0 = the whole split).
      keep_checkpoints: how many checkpoints to keep.
      ema_decay: EMA of the parameters (evaluation uses the EMA).
      mesh_data, mesh_fsdp: mesh axis sizes (-1 = all remaining devices).
      min_fsdp_size: parameters smaller than this stay replicated.
      async_checkpoints: write checkpoints in the background.
      tensorboard: also write TensorBoard event files (tensorboardX; no TensorFlow).
    """

    steps: int = 1000
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0
    checkpoint_every: int = 500
    eval_examples: int = 0
    keep_checkpoints: int = 3
    ema_decay: float = 0.999
    mesh_data: int = -1
    mesh_fsdp: int = 1
    min_fsdp_size: int = 2**14
    async_checkpoints: bool = True
    tensorboard: bool = True


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Typed optimizer settings (`config.optim`; `visgen.train.optim` builds the optimizer).

    Attributes:
      lr: peak learning rate, reached after `warmup_steps`.
      warmup_steps: linear warmup from 0.
      end_lr_ratio: the cosine decays to `lr * end_lr_ratio` at the last step.
      weight_decay: decoupled decay, applied to matrices only (ndim >= 2), not to
        biases, norms, positional vectors or codebooks of rank < 2.
      b1, b2: Adam moments.
      grad_clip: global-norm clip; 0 disables.
    """

    lr: float = 1e-4
    warmup_steps: int = 1000
    end_lr_ratio: float = 0.1
    weight_decay: float = 1e-4
    b1: float = 0.9
    b2: float = 0.99
    grad_clip: float = 1.0
