"""Quantizers: the bottleneck between a tokenizer's encoder and decoder.

Each is an NNX module with the same call convention,
`quantizer(z: [..., D], *, train, rng) -> Quantized`, so a tokenizer swaps a
VQ codebook for a Gaussian (VAE) posterior by config.
"""

from visgen.quantizers.base import Quantized
from visgen.quantizers.gaussian import DiagonalGaussian
from visgen.quantizers.vq import CodeUsage, VectorQuantizer

__all__ = ["CodeUsage", "DiagonalGaussian", "Quantized", "VectorQuantizer"]
