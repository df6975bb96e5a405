"""`Chain`: quantizers applied in order, the latents of one feeding the next.

So a Gaussian latent followed by (residual) quantization, VAT's design, is a
config rather than a fork:

    quantizer = dict(name="chain", stages=[dict(name="gaussian", kl_weight=1e-6),
                                           dict(name="vq", codebook_size=4096)])

Every stage returns the chain's `dim` channels; stage `i + 1` must read what
stage `i` returns. Losses and statistics are merged with the stage's name as a
prefix (`gaussian/kl`, `vq/commitment`; a name used twice gets its stage
index, `vq1/...`). A chain is discrete when its last stage is: its ids are the
last stage's and `embed` is the last stage's, so ids alone give the decoder's
latents. A discrete stage followed by a continuous one is refused for that
reason.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from visgen.quantizers.base import Quantized
from visgen.quantizers.registry import make_quantizer, quantizer_kwargs


class Chain(nnx.Module):
    """Stages `z: [..., input_dim] -> [..., dim] -> ... -> [..., dim]`, in order.

    Registered as `chain`.

    Args:
      stages: one quantizer config section per stage (`name` plus its typed
        arguments, without `dim`), applied first to last.
      dim: latent channels every stage returns.
      rngs: parameter initialisation of the stages, in order.
    """

    def __init__(self, stages: Sequence[Mapping[str, Any]], *, dim: int, rngs: nnx.Rngs):
        if not stages:
            raise ValueError("a chain quantizer needs at least one stage")
        built = [
            make_quantizer(**quantizer_kwargs(s, dim=dim, owner="chain's dim"), rngs=rngs)
            for s in stages
        ]
        for i, (before, after) in enumerate(zip(built[:-1], built[1:], strict=True)):
            if after.input_dim != before.dim:
                raise ValueError(
                    f"chain stage {i + 1} ({stages[i + 1]['name']}) reads {after.input_dim} "
                    f"channels, but stage {i} ({stages[i]['name']}) returns {before.dim}"
                )
        kinds = [q.kind for q in built]
        if "discrete" in kinds and kinds[-1] != "discrete":
            raise ValueError(
                f"chain stages {[s['name'] for s in stages]}: a continuous stage after a "
                "discrete one means ids no longer determine the latents; end on the discrete one"
            )
        names = [str(s["name"]) for s in stages]
        self.prefixes = tuple(n if names.count(n) == 1 else f"{n}{i}" for i, n in enumerate(names))
        self.stages = nnx.List(built)
        self.kind = kinds[-1]
        self.codebook_size = built[-1].codebook_size
        self.dim = dim
        self.input_dim = built[0].input_dim
        self.revivable = any(q.revivable for q in built)

    def __call__(
        self, z: jax.Array, *, train: bool = False, rng: jax.Array | None = None
    ) -> Quantized:
        """Run every stage; stage `i` gets `fold_in(rng, i)` (None without `rng`)."""
        losses, stats = {}, {}
        indices = None
        for i, (prefix, stage) in enumerate(zip(self.prefixes, self.stages, strict=True)):
            q = stage(z, train=train, rng=None if rng is None else jax.random.fold_in(rng, i))
            losses.update({f"{prefix}/{k}": v for k, v in q.losses.items()})
            stats.update({f"{prefix}/{k}": v for k, v in q.stats.items()})
            indices = q.indices if q.indices is not None else indices
            z = q.latents
        return Quantized(latents=z, indices=indices, losses=losses, stats=stats)

    def embed(self, indices: jax.Array) -> jax.Array:
        """Ids `[...]` -> latents `[..., dim]` through the last stage (discrete chains)."""
        return self.stages[-1].embed(indices)

    def codes(self) -> jax.Array:
        """The last stage's codebook `[K, dim]` (discrete chains)."""
        return self.stages[-1].codes()

    def revive(self, features: jax.Array, rng: jax.Array | None = None) -> None:
        """Revive each revivable stage on the features it reads.

        `features: [N, input_dim]` feed the first stage; later stages get the
        previous stages' deterministic outputs (no rng, no statistics update).
        """
        z = features
        for i, stage in enumerate(self.stages):
            if stage.revivable:
                stage.revive(z, None if rng is None else jax.random.fold_in(rng, i))
            if i + 1 < len(self.stages):
                z = stage(z).latents
