"""MAR's diffusion head: each continuous token drawn by a small conditional denoiser.

Li et al. 2024, "Autoregressive Image Generation without Vector Quantization"
(`LTH14/mar`, `models/diffloss.py`), on the causal trunk: the trunk's hidden
state `z` `[D]` for a step conditions a `SimpleMLPAdaLN` that predicts the
noise in that step's latent `[g = 1, C]`:

- `input_proj(x_t)`; `y = TimestepEmbedder(t) + Linear(z)` (sinusoidal
  frequencies of the original timestep, then `Linear -> SiLU -> Linear`);
- `depth` residual blocks `x + gate * MLP(modulate(LN(x), shift, scale))`
  with `(shift, scale, gate)` from `Linear(SiLU(y))`, then a final
  adaLN-modulated LayerNorm and a linear layer to `C` channels of epsilon
  (`2C` with the learned-range variance, `learn_sigma`, MAR's default);
- adaLN modulations and the output layer zero-initialised, the time MLP
  `normal(0.02)`, every other linear Xavier-uniform (MAR's `initialize_weights`).

Training (`loss`): the 1000-step cosine schedule (`visgen.diffusion`), each
token repeated `diffusion_batch_mul` times (MAR: 4) with its own `(t, noise)`
draw from the head's rng (a fixed key in evaluation, so the test loss is
deterministic); the per-token loss is the mean over the repeats of the MSE
on epsilon (plus the variational bound with `learn_sigma`).

Drawing (`draw`): the respaced ancestral sampler
(`visgen.diffusion.p_sample_loop`), classifier-free guidance on epsilon only
(rows `[0, B)` conditional, `[B, 2B)` null; the variance from the
conditional rows, as MAR), the temperature on the injected noise. Options
(`DiffusionOptions`): `diffusion_steps` (MAR: 100), or a DiSA schedule
(`disa`, `visgen.diffusion.disa`) that picks the step count from the AR
iteration (`DrawContext.step` of `num_steps`) and clamps timesteps to 950;
`clip` sets the clamp on its own.
`evaluations` counts the denoiser's evaluations for a whole sample on the host.

Latents are modelled as `scale * latent` (`scale`, a head argument): MAR
scales its KL-16 latents by a fixed 0.2325 to about unit variance; a config
sets the factor for its tokenizer. Registered as `diffusion` (continuous
specs only), with `TokenSteps` and the `C -> D` latent embedding of
`visgen.generators.ar.token_embedding`. No capabilities: no exact per-token
probabilities, so speculative decoding refuses it.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from visgen.diffusion import (
    DISA_CLIP,
    NUM_TIMESTEPS,
    DisaSchedule,
    cosine_schedule,
    p_sample_loop,
    spaced_tables,
    training_loss_terms,
)
from visgen.generators.base import CAPABILITIES, HEADS, DrawContext, guided_rows
from visgen.generators.categorical import TokenSteps
from visgen.token_spec import TokenSpec

FREQUENCY_DIM = 256
# The capability of a diffusion head inside a masked (bidirectional) backbone
# (`visgen.generators.mar`): it draws the tokens of any positions from their hidden
# states, in any order, which `visgen.sampling.mar` needs.
ANY_ORDER = "any_order"
CAPABILITIES[ANY_ORDER] = (
    "a head on a bidirectional masked backbone that draws the tokens of any positions "
    "(configs/mar.py)"
)
XAVIER = nnx.initializers.xavier_uniform()
ZEROS = nnx.initializers.zeros_init()


@dataclasses.dataclass(frozen=True)
class DiffusionOptions:
    """Sampling options of the diffusion head (hashable: static in loops).

    Attributes:
      diffusion_steps: respaced DDPM steps per token (MAR: 100).
      disa: a DiSA schedule `strategy:upper[:lower]` (`linear:50:5`, `cosine:50:5`,
        `two-stage:50:5`, `constant:50`); replaces `diffusion_steps` and clamps
        timesteps to 950. Empty: off.
      clip: the sampler's timestep clamp `min(t, clip)`; 0: the sampler's own
        (DiSA's 950 with `disa`, MAR's none without). The unclamped first step
        divides the noise prediction's error by `sqrt(alpha_bar_999) ~ 5e-5`, so
        a briefly trained head may need it.
    """

    diffusion_steps: int = 100
    disa: str = ""
    clip: int = 0

    def __post_init__(self):
        if not 1 <= self.diffusion_steps <= NUM_TIMESTEPS:
            raise ValueError(
                f"diffusion_steps must be in 1..{NUM_TIMESTEPS}, got {self.diffusion_steps}"
            )
        if self.disa:
            DisaSchedule.parse(self.disa)
        if not 0 <= self.clip < NUM_TIMESTEPS:
            raise ValueError(
                f"clip must be in 0..{NUM_TIMESTEPS - 1} (0: default), got {self.clip}"
            )

    @property
    def timestep_clip(self) -> int | None:
        """The sampler's timestep clamp: `clip`, else DiSA's 950 with `disa`, else None."""
        if self.clip:
            return self.clip
        return DISA_CLIP if self.disa else None

    def step_counts(self, num_iter: int) -> np.ndarray:
        """The steps asked for at each of `num_iter` AR iterations: `[num_iter]` int32."""
        if self.disa:
            return DisaSchedule.parse(self.disa).steps(num_iter)
        return np.full(num_iter, self.diffusion_steps, np.int32)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding `[B]` -> `[B, dim]` float32: `[cos(t f), sin(t f)]` (GLIDE)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _linear(d_in: int, d_out: int, init, dtype, rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, kernel_init=init, bias_init=ZEROS, dtype=dtype, rngs=rngs)


def _layer_norm(width: int, affine: bool, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(width, epsilon=1e-6, use_bias=affine, use_scale=affine, rngs=rngs)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: `x (1 + scale) + shift`."""
    return x * (1.0 + scale) + shift


class TimestepEmbedder(nnx.Module):
    """Timesteps `[B]` -> `[B, W]` float32: sinusoids then `Linear -> SiLU -> Linear`."""

    def __init__(self, width: int, *, dtype: Any, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.fc1 = _linear(FREQUENCY_DIM, width, init, dtype, rngs)
        self.fc2 = _linear(width, width, init, dtype, rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        h = jax.nn.silu(self.fc1(timestep_embedding(t, FREQUENCY_DIM)))
        return self.fc2(h).astype(jnp.float32)


class AdaLNBlock(nnx.Module):
    """`x + gate * MLP(modulate(LN(x), shift, scale))`, `(shift, scale, gate)` from SiLU(y)."""

    def __init__(self, width: int, *, dtype: Any, rngs: nnx.Rngs):
        self.norm = _layer_norm(width, True, rngs)
        self.fc1 = _linear(width, width, XAVIER, dtype, rngs)
        self.fc2 = _linear(width, width, XAVIER, dtype, rngs)
        self.modulation = _linear(width, 3 * width, ZEROS, dtype, rngs)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        shift, scale, gate = jnp.split(self.modulation(jax.nn.silu(y)), 3, axis=-1)
        h = modulate(self.norm(x), shift, scale)
        h = self.fc2(jax.nn.silu(self.fc1(h)))
        return x + (gate * h).astype(jnp.float32)


class Denoiser(nnx.Module):
    """MAR's `SimpleMLPAdaLN`: noisy latents `[B, C]`, timesteps `[B]` (or `[1]`, one for
    every row) and the embedded condition `[B, W]` (`condition(z)`) -> `[B, out]` float32."""

    def __init__(
        self, channels: int, cond_dim: int, width: int, depth: int, out: int, *, dtype, rngs
    ):
        self.time_embed = TimestepEmbedder(width, dtype=dtype, rngs=rngs)
        self.cond_embed = _linear(cond_dim, width, XAVIER, dtype, rngs)
        self.input_proj = _linear(channels, width, XAVIER, dtype, rngs)
        self.blocks = nnx.List([AdaLNBlock(width, dtype=dtype, rngs=rngs) for _ in range(depth)])
        self.final_norm = _layer_norm(width, False, rngs)
        self.final_modulation = _linear(width, 2 * width, ZEROS, dtype, rngs)
        self.output = _linear(width, out, ZEROS, dtype, rngs)

    def condition(self, z: jax.Array) -> jax.Array:
        """The trunk's hidden states `[..., D]` -> `[..., W]` float32 (once per token)."""
        return self.cond_embed(z).astype(jnp.float32)

    def __call__(self, x: jax.Array, t: jax.Array, cond: jax.Array) -> jax.Array:
        y = self.time_embed(t) + cond
        h = self.input_proj(x).astype(jnp.float32)
        for block in self.blocks:
            h = block(h, y)
        shift, scale = jnp.split(self.final_modulation(jax.nn.silu(y)), 2, axis=-1)
        return self.output(modulate(self.final_norm(h), shift, scale)).astype(jnp.float32)


class DiffusionHead(nnx.Module):
    """One latent `[1, C]` per step from a conditional denoiser; see the module doc.

    Args:
      width: the trunk's hidden width `D` (the condition).
      channels: latent channels `C`.
      depth, mlp_width: the denoiser's residual blocks and width (MAR-B: 6, 1024).
      diffusion_batch_mul: `(t, noise)` draws per token in training.
      learn_sigma: predict the learned-range variance too (`2C` outputs).
      scale: latents are modelled as `scale * latent`.
      any_order: the head sits on a masked bidirectional backbone (set by
        `visgen.generators.mar`, not by configs): it offers `ANY_ORDER`.
      dtype: compute dtype of the denoiser's linears.
    """

    Options = DiffusionOptions

    def __init__(
        self,
        width: int,
        channels: int,
        *,
        depth: int = 3,
        mlp_width: int = 1024,
        diffusion_batch_mul: int = 4,
        learn_sigma: bool = True,
        scale: float = 1.0,
        any_order: bool = False,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if diffusion_batch_mul < 1:
            raise ValueError(f"diffusion_batch_mul must be >= 1, got {diffusion_batch_mul}")
        if not scale > 0:
            raise ValueError(f"the latent scale must be positive, got {scale}")
        self.channels = channels
        self.batch_mul = diffusion_batch_mul
        self.learn_sigma = learn_sigma
        self.scale = float(scale)
        self.any_order = any_order
        out = 2 * channels if learn_sigma else channels
        self.net = Denoiser(channels, width, mlp_width, depth, out, dtype=dtype, rngs=rngs)

    def capabilities(self, options: DiffusionOptions) -> frozenset[str]:
        del options
        return frozenset({ANY_ORDER}) if self.any_order else frozenset()

    def describe(self, options: DiffusionOptions) -> str:
        if options.disa:
            steps = f"DiSA {options.disa} diffusion steps"
        else:
            steps = f"{options.diffusion_steps} diffusion steps"
        clip = f", timesteps clamped to {options.clip}" if options.clip else ""
        return f"the diffusion head (MAR's denoiser, {steps} per token{clip})"

    def evaluations(self, options: DiffusionOptions, num_steps: int) -> int:
        """Denoiser evaluations to draw `num_steps` AR steps of a batch (a guided batch's
        doubled rows count once): the sampler's steps summed over the steps."""
        counts = options.step_counts(num_steps)
        choices = tuple(sorted({int(c) for c in counts}))
        tables = spaced_tables(choices, options.timestep_clip)
        lengths = dict(zip(choices, tables.lengths, strict=True))
        return int(sum(int(lengths[int(c)]) for c in counts))

    def _split(self, out: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        if not self.learn_sigma:
            return out, None
        eps, v = jnp.split(out, 2, axis=-1)
        return eps, v

    def loss(self, hidden: jax.Array, targets: jax.Array, rng: jax.Array | None) -> jax.Array:
        """Hidden `[B, M, D]`, latents `[B, M, 1, C]` -> per-token loss `[B, M, 1]` float32."""
        mse, bound = self.loss_terms(hidden, targets, rng)
        return mse + bound

    def loss_terms(
        self, hidden: jax.Array, targets: jax.Array, rng: jax.Array | None
    ) -> tuple[jax.Array, jax.Array]:
        """`loss`'s two terms, each `[B, M, 1]` float32: the epsilon MSE (what
        `visgen.diffusion.gaussian_baseline_mse` bounds) and the variational-bound term."""
        b, m = hidden.shape[:2]
        k = self.batch_mul
        x0 = jnp.tile(targets.reshape(b * m, self.channels).astype(jnp.float32), (k, 1))
        cond = jnp.tile(self.net.condition(hidden.reshape(b * m, -1)), (k, 1))
        t_rng, noise_rng = jax.random.split(jax.random.key(0) if rng is None else rng)
        t = jax.random.randint(t_rng, (k * b * m,), 0, NUM_TIMESTEPS)
        noise = jax.random.normal(noise_rng, x0.shape, jnp.float32)
        terms = training_loss_terms(
            cosine_schedule(),
            lambda x, t: self.net(x, t, cond),
            self.scale * x0,
            t,
            noise,
            self.learn_sigma,
        )
        mse, bound = (jnp.mean(x.reshape(k, b, m), axis=0)[..., None] for x in terms)
        return mse, bound

    def draw(self, hidden: jax.Array, rng: jax.Array, context: DrawContext) -> jax.Array:
        """`[R, D]` -> latents `[B, 1, C]` float32 in `context.options`' steps at AR
        iteration `context.step` of `context.num_steps`."""
        options = context.options
        cond = self.net.condition(hidden)
        b = hidden.shape[0] // 2 if context.guided else hidden.shape[0]
        counts = options.step_counts(context.num_steps)
        steps = jnp.asarray(counts)[context.step]

        def eps_fn(x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array | None]:
            if context.guided:
                # Both halves denoise the same latents, as in MAR's `forward_with_cfg`.
                x = jnp.concatenate([x, x])
            # Every row is at the same timestep: embed it once (`[1, W]` broadcasts).
            eps, v = self._split(self.net(x, t[:1], cond))
            return guided_rows(eps, context), None if v is None else v[:b]

        x = p_sample_loop(
            eps_fn,
            (b, self.channels),
            steps,
            rng,
            context.temperature,
            options.timestep_clip,
            choices=tuple(sorted({int(c) for c in counts})),
        )
        return (x / self.scale)[:, None]


def require_continuous(spec: TokenSpec) -> None:
    """Raise unless the tokenizer's tokens are continuous latents."""
    if spec.kind != "continuous":
        raise ValueError(
            f"the diffusion head draws continuous latents; the tokenizer makes {spec.kind} "
            "tokens: give it a continuous bottleneck (tokenizer.quantizer.name=gaussian, "
            "e.g. configs/vq2d.py:tiny,latent=vae) or choose another head"
        )


@HEADS.register("diffusion")
class Diffusion:
    """`diffusion`: a latent per step (MAR). Args: `depth` (3), `mlp_width` (1024),
    `diffusion_batch_mul` (4), `learn_sigma` (True), `scale` (1.0)."""

    Options = DiffusionOptions

    @staticmethod
    def build(
        spec: TokenSpec,
        width: int,
        *,
        token_embed: nnx.Module,
        dtype: Any,
        rngs: nnx.Rngs,
        depth: int = 3,
        mlp_width: int = 1024,
        diffusion_batch_mul: int = 4,
        learn_sigma: bool = True,
        scale: float = 1.0,
    ) -> tuple[TokenSteps, DiffusionHead]:
        require_continuous(spec)
        head = DiffusionHead(
            width,
            spec.channels,
            depth=depth,
            mlp_width=mlp_width,
            diffusion_batch_mul=diffusion_batch_mul,
            learn_sigma=learn_sigma,
            scale=scale,
            dtype=dtype,
            rngs=rngs,
        )
        return TokenSteps(spec.layout, token_embed), head
