"""The demo's recipes: one tiny tokenizer and the generator trained on its tokens.

`python -m launch.demo --recipe NAME` runs a recipe end to end on the embedded
`shapes` dataset (build the data, train the tokenizer, train the generator on
its tokens, sample, evaluate) in about 10 minutes on a 2-core CPU. Each zoo
system adds one entry here; the demo's stages read nothing else, so a recipe
is the whole difference between two systems' demos.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One end-to-end demo.

    Attributes:
      tokenizer: the tokenizer config, `configs/x.py:variant`.
      generator: the generator config trained on its tokens.
      summary: one line for `--help` and the progress lines.
      token_cache: whether the generator trains from a token cache (the
        tokenizer's train-split tokens computed once) instead of tokenizing
        every batch; a stochastic tokenizer (one whose tokens are a sample) or
        a text-conditioned one may need it off.
      sample_args: extra `launch.sample` flags for every sampling stage
        (`--num-tokens 8`, `--disa linear:50:5`).
      sjd: whether the demo also samples with speculative Jacobi decoding
        (the sampler refuses heads without exact per-token probabilities
        anyway; False skips the attempt).
      pfid: whether the tokenizer's pFID (token perturbation within the
        codebook) is measured: discrete tokens only.
      prefix_ks: for a tokenizer whose every prefix decodes (FlexTok), the
        prefix lengths k at which the demo also samples (`--num-tokens k`) and
        measures gFID.
    """

    tokenizer: str
    generator: str
    summary: str
    token_cache: bool = True
    sample_args: tuple[str, ...] = ()
    sjd: bool = True
    pfid: bool = True
    prefix_ks: tuple[int, ...] = ()


RECIPES: dict[str, Recipe] = {
    "vq2d": Recipe(
        tokenizer="configs/vq2d.py:tiny",
        generator="configs/ar.py:tokenizer=vq2d,tiny,shuffle=2,causal",
        summary="2D grid VQ (16 x 16 tokens, 128 codes) + AR with Token-Shuffle 2 x 2 windows "
        "and a causal window head",
    ),
    "titok": Recipe(
        tokenizer="configs/titok.py:tiny",
        generator="configs/ar.py:tokenizer=titok,tiny",
        summary="TiTok (32 1D tokens) + AR with a categorical head (a slower demo: "
        "docs/notes/2026-11-26-demo-tiny-titok.md)",
    ),
    "flextok": Recipe(
        tokenizer="configs/flextok.py:tiny",
        generator="configs/ar.py:tokenizer=flextok,tiny",
        summary="FlexTok (32 1D FSQ tokens, any prefix decodes with a rectified-flow decoder) "
        "+ AR with a categorical head; samples drawn in 8 AR steps and decoded from those 8 "
        "tokens, and gFID at k = 2, 8 and 32 tokens",
        sample_args=("--num-tokens", "8"),
        pfid=False,
        prefix_ks=(2, 8, 32),
    ),
    "mar": Recipe(
        tokenizer="configs/vq2d.py:tiny,latent=vae",
        generator="configs/mar.py:tiny",
        summary="2D grid VAE (8 x 8 latents of 16 channels) + MAR's masked generator with the "
        "diffusion head, sampled in 16 iterations with DiSA's linear 50 -> 5 diffusion steps",
        # Token caches hold integer ids; a continuous tokenizer's latents are encoded per batch.
        token_cache=False,
        sample_args=("--method", "mar", "--num-iter", "16", "--disa", "linear:50:5"),
        sjd=False,
        pfid=False,
    ),
}
DEFAULT_RECIPE = "vq2d"
