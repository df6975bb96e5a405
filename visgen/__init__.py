"""visgen: autoregressive image and video tokenizers and generators in JAX/Flax NNX.

Importing the package is cheap and never imports TensorFlow; subpackages are
imported where they are used (`visgen.data`, `visgen.tokenizers`, ...).
"""

__version__ = "0.1.0"
