"""Shared neural-network layers: patchify for images and video tubelets, ViT blocks.

Layers here are small Flax NNX modules or pure functions that take typed
arguments (never a config) and are reused across tokenizers and generators.
"""
