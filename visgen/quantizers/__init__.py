"""Quantizers: the bottleneck between a tokenizer's encoder and decoder.

Each implements `base.Quantizer`, `quantizer(z: [..., input_dim], *, train,
rng) -> Quantized`, and registers by name in `QUANTIZERS` (one line below),
so a tokenizer swaps a VQ codebook for a Gaussian (VAE) posterior, or chains
them, by config.
"""

from visgen.quantizers.base import Quantized, Quantizer
from visgen.quantizers.chain import Chain
from visgen.quantizers.fsq import FiniteScalarQuantizer
from visgen.quantizers.gaussian import DiagonalGaussian
from visgen.quantizers.registry import (
    QUANTIZERS,
    make_quantizer,
    quantizer_input_dim,
    quantizer_kwargs,
)
from visgen.quantizers.vq import CodeUsage, VectorQuantizer

QUANTIZERS.register("vq")(VectorQuantizer)
QUANTIZERS.register("gaussian")(DiagonalGaussian)
QUANTIZERS.register("chain")(Chain)
QUANTIZERS.register("fsq")(FiniteScalarQuantizer)

__all__ = [
    "QUANTIZERS",
    "Chain",
    "CodeUsage",
    "DiagonalGaussian",
    "FiniteScalarQuantizer",
    "Quantized",
    "Quantizer",
    "VectorQuantizer",
    "make_quantizer",
    "quantizer_input_dim",
    "quantizer_kwargs",
]
