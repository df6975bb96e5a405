"""FlexTok: images to a 1D sequence of FSQ tokens whose every prefix decodes.

Bachmann et al. 2025, "FlexTok: Resampling Images into 1D Token Sequences of
Flexible Length" (apple/ml-flextok is inference-only; the facts we follow are
in `../shared/papers/tokenizers.md` section 2). Written from those facts:

- Encoder: patches (linear, plus fixed 2D sin-cos positions as the paper's;
  `pos_embed="learned"` for learned ones) + `K` learned registers in one transformer whose
  attention mask lets patches see patches only and register `r` see every
  patch and registers `0..r` (`encoder_mask`). Registers -> linear (random
  init; the paper's is zero) -> the quantizer (FSQ, `[8, 8, 8, 5, 5, 5]` in the paper).
- Nested dropout (training): per example keep the first `k` registers
  (`k` uniform in `1..K`, or a power of two) and replace the rest by one learned
  mask token, so one decoder serves every prefix length (`nested_dropout`).
- Decoder: a rectified-flow transformer (`visgen.diffusion.rectified_flow`)
  over the noised patches and the up-projected registers, adaLN-zero on the
  timestep with separate modulation for patch and register tokens; it
  predicts the velocity `eps - x0` of the patches; times are logit-normal.
  Classifier-free guidance replaces all registers by a learned null set
  (dropped with probability `cfg_dropout` in training).
- Decoding (`decode(tokens, num_tokens=k)`): registers past `k` are the mask
  token, whatever the ids there (so a prefix never reads later tokens), and
  an Euler sampler of `decode_steps` steps integrates from noise (`rng`; a
  fixed key when None, so evaluation is deterministic).

- REPA (`repa_features`, `visgen.tokenizers.repa`): the patch tokens' hidden
  states after decoder block `repa_layer` are aligned with a frozen encoder's
  features of the clean image, as the paper's decoder is with DINOv2-L's.

Simplified against the paper (also in the README zoo row): the patches are
pixel patches, not a frozen VAE latent's (no VAE in this tree at 256 px);
REPA's encoder is a small classifier of the embedded data, not DINOv2-L
(whose weights are not available offline), so the 256 px configs train
without REPA; no APG (plain CFG), and no FSQ `corrupt_tokens_p`
(`drop_quant_p` is the FSQ quantizer's option). Images only (no video).

Not in the paper: `head_init_std`, the register head's own init (the paper
zero-initialises it). The tiny config's other departures are hyperparameters
(`configs/flextok.py`).
"""

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from visgen.diffusion import rectified_flow as rf
from visgen.nn.patchify import grid_shape, patchify, unpatchify
from visgen.quantizers import make_quantizer, quantizer_input_dim, quantizer_kwargs
from visgen.tokenizers.base import Encoded, TokenizerOutput, check_input, spec_from_quantizer
from visgen.tokenizers.flextok_nn import (
    AdaLNBlock,
    AdaLNOutput,
    MaskedBlock,
    TimestepEmbedder,
    plain_norm,
    sincos_2d,
)
from visgen.tokenizers.repa import RepaAlignment

PAPER_QUANTIZER = MappingProxyType(dict(name="fsq", levels=(8, 8, 8, 5, 5, 5)))
KEEP_DISTRIBUTIONS = ("uniform", "pow2")
POS_EMBEDS = ("sincos", "learned")


class PatchPositions(nnx.Module):
    """Patch position embeddings `[N, D]`: fixed 2D sin-cos (the paper's) or learned."""

    def __init__(self, grid: tuple[int, int], width: int, kind: str, rngs: nnx.Rngs):
        if kind not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {', '.join(POS_EMBEDS)}, got {kind!r}")
        self.grid, self.width, self.kind = tuple(grid), width, kind
        if kind == "learned":
            n = grid[0] * grid[1]
            self.table = nnx.Param(0.02 * jax.random.normal(rngs.params(), (n, width)))

    def __call__(self) -> jax.Array:
        if self.kind == "learned":
            return self.table[...]
        return sincos_2d(self.grid, self.width)


def encoder_mask(num_patches: int, num_registers: int) -> jax.Array:
    """FlexTok's encoder mask `[N + K, N + K]` bool (`mask[i, j]`: token `i` reads `j`).

    Patches (the first `N`) read patches only; register `r` reads every patch
    and registers `0..r`.
    """
    n, k = num_patches, num_registers
    i = jnp.arange(n + k)[:, None]
    j = jnp.arange(n + k)[None, :]
    return (j < n) | ((i >= n) & (j <= i))


def sample_keep(rng: jax.Array, batch: int, num_registers: int, distribution: str) -> jax.Array:
    """Registers kept per example `[batch]` int32: uniform in `1..K` or a power of two `<= K`."""
    if distribution == "uniform":
        return jax.random.randint(rng, (batch,), 1, num_registers + 1, jnp.int32)
    if distribution == "pow2":
        powers = jnp.asarray([2**i for i in range(int(math.log2(num_registers)) + 1)], jnp.int32)
        return jax.random.choice(rng, powers, (batch,))
    raise ValueError(
        f"nested dropout is one of {', '.join(KEEP_DISTRIBUTIONS)}, got {distribution!r}"
    )


def nested_dropout(registers: jax.Array, keep: jax.Array, mask_token: jax.Array) -> jax.Array:
    """Registers `[B, K, D]` with positions `>= keep [B]` replaced by `mask_token [D]`."""
    kept = jnp.arange(registers.shape[1])[None, :] < keep[:, None]
    return jnp.where(kept[..., None], registers, mask_token.astype(registers.dtype))


class FlexTokEncoder(nnx.Module):
    """Patches `[B, N, P]` -> register features `[B, K, out_dim]` float32."""

    def __init__(
        self, *, patch_dim, num_patches, num_registers, width, depth, heads, out_dim, init,
        grid, pos_embed, head_init, dtype, rngs,
    ):  # fmt: skip
        self.dtype = dtype
        self.num_patches = num_patches
        self.patch_embed = nnx.Linear(patch_dim, width, kernel_init=init, dtype=dtype, rngs=rngs)
        self.pos = PatchPositions(grid, width, pos_embed, rngs)
        self.registers = nnx.Param(
            0.02 * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, (num_registers, width))
        )
        self.blocks = nnx.List(
            [MaskedBlock(width, heads, init=init, dtype=dtype, rngs=rngs) for _ in range(depth)]
        )
        # The paper zero-initialises this head; a small random init lets a tiny model's
        # registers carry information from the first steps (FSQ ids all 0 otherwise).
        self.head = nnx.Linear(width, out_dim, kernel_init=head_init, rngs=rngs)

    def sequence(self, patches: jax.Array) -> jax.Array:
        """The transformer's input `[B, N + K, D]`: embedded patches then registers."""
        b = patches.shape[0]
        x = self.patch_embed(patches.astype(self.dtype)).astype(jnp.float32) + self.pos()
        regs = jnp.broadcast_to(self.registers[...], (b, *self.registers.shape))
        return jnp.concatenate([x, regs], axis=1)

    def mix(self, x: jax.Array) -> jax.Array:
        """The masked transformer over a sequence `[B, N + K, D]` -> same."""
        mask = encoder_mask(self.num_patches, x.shape[1] - self.num_patches)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def __call__(self, patches: jax.Array) -> jax.Array:
        x = self.mix(self.sequence(patches))
        return self.head(plain_norm(x[:, self.num_patches :]))


class FlexTokDecoder(nnx.Module):
    """Rectified-flow velocity: noised patches `[B, N, P]`, times `[B]`, register latents
    `[B, K, C]`, kept counts `[B]`, null flags `[B]` -> velocity `[B, N, P]` float32."""

    def __init__(
        self, *, patch_dim, num_patches, num_registers, token_dim, width, depth, heads, init,
        grid, pos_embed, dtype, rngs,
    ):  # fmt: skip
        self.dtype = dtype
        self.num_patches = num_patches
        self.width = width
        self.patch_embed = nnx.Linear(patch_dim, width, kernel_init=init, dtype=dtype, rngs=rngs)
        self.pos = PatchPositions(grid, width, pos_embed, rngs)
        self.register_embed = nnx.Linear(token_dim, width, kernel_init=init, rngs=rngs)
        self.register_pos = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (num_registers, width))
        )
        self.mask_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (width,)))
        self.null_registers = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (num_registers, width))
        )
        self.time = TimestepEmbedder(width, init=init, rngs=rngs)
        self.blocks = nnx.List(
            [
                AdaLNBlock(width, heads, num_patches=num_patches, init=init, dtype=dtype, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.final = AdaLNOutput(width, patch_dim, rngs=rngs)

    def __call__(
        self,
        x_t: jax.Array,
        t: jax.Array,
        latents: jax.Array,
        keep: jax.Array,
        null: jax.Array,
        *,
        hidden_after: int = 0,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """The velocity; with `hidden_after=L > 0` also the patch tokens' hidden
        states `[B, N, D]` after block `L` (what REPA aligns): `(velocity, hidden)`."""
        patches = self.patch_embed(x_t.astype(self.dtype)).astype(jnp.float32) + self.pos()
        regs = self.register_embed(latents.astype(jnp.float32))
        regs = nested_dropout(regs, keep, self.mask_token[...])
        regs = jnp.where(null[:, None, None], self.null_registers[...][None], regs)
        x = jnp.concatenate([patches, regs + self.register_pos[...]], axis=1)
        c = jax.nn.silu(self.time(t))
        hidden = None
        for i, block in enumerate(self.blocks):
            x = block(x, c)
            if i + 1 == hidden_after:
                hidden = x[:, : self.num_patches]
        v = self.final(x[:, : self.num_patches], c).astype(jnp.float32)
        return v if hidden is None else (v, hidden)


class FlexTok(nnx.Module):
    """FlexTok for images `[B, H, W, 3]` in [-1, 1]: `K` 1D tokens, any prefix decodes.

    Args:
      image_size: input height and width.
      patch_size: pixel patch size `p` (the paper patches a VAE latent; see the module).
      width, heads: transformer width and heads, shared by encoder and decoder.
      depth, decoder_depth: encoder and decoder blocks (the paper's d12-d12: 12 and 12).
      num_registers: tokens `K`.
      token_dim: channels per token `C` (FSQ: `len(levels)`); the quantizer's `dim`.
      quantizer: the bottleneck section (`visgen.quantizers.QUANTIZERS`), FSQ by default.
      nested_dropout: `uniform` (k in 1..K) or `pow2` (k a power of two).
      cfg_dropout: probability of training with the null register set (for CFG).
      time_mean, time_std: the logit-normal training times.
      decode_steps: Euler steps of `decode` and `__call__`.
      guidance: CFG scale of `decode` (1 = no guidance, one decoder pass per step).
      init_std: std of the linear layers' init.
      head_init_std: std of the encoder's register head (before FSQ); None = `init_std`.
      pos_embed: patch positions, `sincos` (fixed 2D, the paper's) or `learned`.
      repa_features: REPA's frozen encoder (`visgen.tokenizers.repa`): a
        `FeatureNet` weights `.npz` or a shipped net's name; "" = no REPA.
      repa_layer: the decoder block after which REPA aligns the patch tokens.
      repa_weight: the REPA loss's weight.
      dtype: compute dtype; params, residual stream and norms are float32.
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        *,
        image_size: int = 256,
        patch_size: int = 16,
        width: int = 768,
        depth: int = 12,
        decoder_depth: int = 12,
        heads: int = 12,
        num_registers: int = 256,
        token_dim: int = 6,
        quantizer: Mapping[str, Any] = PAPER_QUANTIZER,
        nested_dropout: str = "uniform",
        cfg_dropout: float = 0.1,
        time_mean: float = 0.0,
        time_std: float = 1.0,
        decode_steps: int = 25,
        guidance: float = 1.0,
        init_std: float = 0.02,
        head_init_std: float | None = None,
        pos_embed: str = "sincos",
        repa_features: str = "",
        repa_layer: int = 1,
        repa_weight: float = 0.5,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if nested_dropout not in KEEP_DISTRIBUTIONS:
            raise ValueError(
                f"nested_dropout must be one of {', '.join(KEEP_DISTRIBUTIONS)}, "
                f"got {nested_dropout!r}"
            )
        if nested_dropout == "pow2" and num_registers & (num_registers - 1):
            raise ValueError(f"nested_dropout=pow2 needs a power-of-two K, got {num_registers}")
        if decode_steps < 1:
            raise ValueError(f"decode_steps must be >= 1, got {decode_steps}")
        if repa_features and not 1 <= repa_layer <= decoder_depth:
            raise ValueError(f"repa_layer must be in 1..{decoder_depth}, got {repa_layer}")
        quantizer = quantizer_kwargs(quantizer, dim=token_dim, owner="FlexTok token_dim")
        self.input_shape = (image_size, image_size, 3)
        self.patch = (patch_size, patch_size)
        self.grid = grid_shape(self.input_shape[:-1], self.patch)
        num_patches, patch_dim = math.prod(self.grid), patch_size * patch_size * 3
        self.num_registers = num_registers
        self.patch_dim = patch_dim
        self.keep_distribution = nested_dropout
        self.cfg_dropout = cfg_dropout
        self.time_mean, self.time_std = time_mean, time_std
        self.decode_steps = decode_steps
        self.guidance = guidance
        shared = dict(
            patch_dim=patch_dim, num_patches=num_patches, num_registers=num_registers,
            width=width, heads=heads, init=nnx.initializers.normal(stddev=init_std),
            grid=self.grid, pos_embed=pos_embed, dtype=dtype, rngs=rngs,
        )  # fmt: skip
        head_std = init_std if head_init_std is None else head_init_std
        self.encoder = FlexTokEncoder(
            depth=depth, out_dim=quantizer_input_dim(**quantizer),
            head_init=nnx.initializers.normal(stddev=head_std), **shared,
        )  # fmt: skip
        self.decoder = FlexTokDecoder(depth=decoder_depth, token_dim=token_dim, **shared)
        self.repa_layer, self.repa_weight = repa_layer, repa_weight
        self.repa = (
            RepaAlignment(repa_features, width=width, grid=self.grid, hidden=2 * width, rngs=rngs)
            if repa_features
            else None
        )
        self.quantizer = make_quantizer(**quantizer, rngs=rngs)
        if self.quantizer.kind != "discrete":
            raise ValueError(f"FlexTok needs a discrete quantizer, got {quantizer['name']!r}")
        self.spec = spec_from_quantizer(self.quantizer, (num_registers,))

    @property
    def revivable(self) -> bool:
        """Whether `revive` does anything: the quantizer's declared capability."""
        return self.quantizer.revivable

    def encode(
        self,
        x: jax.Array,
        *,
        text: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> Encoded:
        """`x: [B, H, W, 3]` -> tokens `[B, K]` int32, latents `[B, K, C]` (`text` unused)."""
        del text
        check_input("FlexTok", x, self.input_shape)
        q = self.quantizer(self.encoder(patchify(x, self.patch)), train=train, rng=rng)
        return Encoded(tokens=q.indices, latents=q.latents, losses=q.losses, stats=q.stats)

    def _full_latents(self, tokens: jax.Array) -> jax.Array:
        """Ids `[B, k']` or latents `[B, k', C]` (`k' <= K`) -> latents `[B, K, C]`, zero-padded."""
        if jnp.issubdtype(tokens.dtype, jnp.integer):
            if tokens.ndim != 2:
                raise ValueError(f"FlexTok token ids must be [B, k], got {tuple(tokens.shape)}")
            latents = self.quantizer.embed(tokens)
        else:
            latents = tokens.astype(jnp.float32)
        c = self.spec.channels
        if latents.ndim != 3 or latents.shape[1] > self.num_registers or latents.shape[2] != c:
            raise ValueError(
                f"FlexTok decodes ids [B, k] or latents [B, k, {c}] with k <= "
                f"{self.num_registers}, got {tuple(tokens.shape)}"
            )
        pad = self.num_registers - latents.shape[1]
        return jnp.pad(latents, ((0, 0), (0, pad), (0, 0)))

    def decode(
        self,
        tokens: jax.Array,
        *,
        text: jax.Array | None = None,
        num_tokens: int | jax.Array | None = None,
        rng: jax.Array | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> jax.Array:
        """Ids `[B, k']` (or latents `[B, k', C]`), `k' <= K` -> pixels `[B, H, W, 3]` float32.

        Only the first `num_tokens` (default `k'`; an int or a traced scalar) tokens are
        read. `rng` draws the starting noise (a fixed key when None); `steps` and
        `guidance` default to the constructor's. `text` is unused.
        """
        del text
        k_given = tokens.shape[1]
        if num_tokens is None:
            num_tokens = k_given
        elif isinstance(num_tokens, int) and not 1 <= num_tokens <= k_given:
            raise ValueError(
                f"num_tokens must be in 1..{k_given} (the tokens given), got {num_tokens}"
            )
        latents = self._full_latents(tokens)
        b = latents.shape[0]
        keep = jnp.broadcast_to(jnp.asarray(num_tokens, jnp.int32), (b,))
        steps = self.decode_steps if steps is None else steps
        scale = self.guidance if guidance is None else guidance
        rng = jax.random.key(0) if rng is None else rng
        noise = jax.random.normal(rng, (b, math.prod(self.grid), self.patch_dim), jnp.float32)

        if scale == 1.0:
            no_null = jnp.zeros((b,), bool)

            def velocity(x, t):
                return self.decoder(x, t, latents, keep, no_null)
        else:
            both_latents = jnp.concatenate([latents, latents])
            both_keep = jnp.concatenate([keep, keep])
            null = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])

            def velocity(x, t):
                v = self.decoder(
                    jnp.concatenate([x, x]), jnp.concatenate([t, t]), both_latents, both_keep, null
                )
                return rf.guided(v[:b], v[b:], scale)

        x0 = rf.euler_sample(velocity, noise, steps)
        return unpatchify(x0, self.grid, self.patch, 3)

    def __call__(
        self,
        x: jax.Array,
        *,
        text: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, Encoded]:
        """Reconstruct `x` from all `K` tokens: (pixels float32, Encoded); `rng` as `decode`'s."""
        encoded = self.encode(x, text=text, train=train)
        return self.decode(encoded.latents, rng=rng), encoded

    def training_step(
        self, x: jax.Array, *, text: jax.Array | None = None, rng: jax.Array | None = None
    ) -> TokenizerOutput:
        """The rectified-flow loss `mean ||v(x_t, t) - (eps - x0)||^2` over patches, with
        nested dropout and null-register dropout, plus the weighted REPA loss (`repa`)
        when `repa_features` is set; no pixel regression by the task."""
        if rng is None:
            raise ValueError("FlexTok.training_step needs an rng (noise, times, nested dropout)")
        t_rng, eps_rng, keep_rng, null_rng, quant_rng = jax.random.split(rng, 5)
        encoded = self.encode(x, text=text, train=True, rng=quant_rng)
        x0 = patchify(x, self.patch).astype(jnp.float32)
        b = x0.shape[0]
        t = rf.logit_normal_times(t_rng, b, mean=self.time_mean, std=self.time_std)
        eps = jax.random.normal(eps_rng, x0.shape, jnp.float32)
        keep = sample_keep(keep_rng, b, self.num_registers, self.keep_distribution)
        null = jax.random.bernoulli(null_rng, self.cfg_dropout, (b,))
        x_t = rf.interpolate(x0, eps, t)
        losses = dict(encoded.losses)
        if self.repa is None:
            v = self.decoder(x_t, t, encoded.latents, keep, null)
        else:
            v, hidden = self.decoder(
                x_t, t, encoded.latents, keep, null, hidden_after=self.repa_layer
            )
            losses["repa"] = self.repa_weight * self.repa(hidden, x)
        losses["flow"] = jnp.mean(jnp.square(v - rf.velocity_target(x0, eps)))
        stats = {**encoded.stats, "keep_mean": jnp.mean(keep.astype(jnp.float32))}
        return TokenizerOutput(
            recon=None,
            losses=losses,
            stats=stats,
            encoded=encoded,
            regress_pixels=False,
        )

    def revive(
        self, x: jax.Array, *, text: jax.Array | None = None, rng: jax.Array | None = None
    ) -> None:
        """A no-op unless the quantizer is revivable (FSQ is not)."""
        del text
        if self.revivable:
            features = self.encoder(patchify(x, self.patch))
            self.quantizer.revive(features.reshape(-1, features.shape[-1]), rng)
