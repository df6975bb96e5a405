"""AdamW with linear warmup, cosine decay and global-norm gradient clipping."""

import dataclasses

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Typed optimizer settings (`config.optim`).

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


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=cfg.lr * cfg.end_lr_ratio,
    )


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(cfg, total_steps)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    adamw = optax.adamw(
        schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask
    )
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw
