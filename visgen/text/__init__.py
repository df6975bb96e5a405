"""Text encoders: captions -> `[B, L, D]` embeddings for text-conditional generators.

`TEXT_ENCODERS` maps config names to classes; `make_text_encoder` builds one
from a name and its keyword arguments, listing the valid names on a miss. An
encoder runs on the host (captions are strings), outside `jax.jit`. The one
registered today, `random_words`, is a frozen stand-in for a pretrained
encoder (see `visgen.text.random_words`); a pretrained encoder read from a
local weights file registers beside it and is chosen by config name.
"""

from visgen.registry import Registry
from visgen.text.base import TextEmbeddings, TextEncoder
from visgen.text.batches import encode_batch_captions
from visgen.text.random_words import RandomWordEncoder, split_words, word_vector

TEXT_ENCODERS: Registry[type] = Registry("text encoder")
TEXT_ENCODERS.register("random_words")(RandomWordEncoder)


def make_text_encoder(name: str, **kwargs) -> TextEncoder:
    """Build the text encoder registered as `name` with its keyword arguments."""
    return TEXT_ENCODERS.get(name)(**kwargs)


def config_text_encoder(config) -> TextEncoder | None:
    """The text encoder a task config's `text_encoder` section names, or None when the
    config has no such section (no text conditioning)."""
    if "text_encoder" not in config:
        return None
    return make_text_encoder(**config.text_encoder.to_dict())


__all__ = [
    "TEXT_ENCODERS",
    "RandomWordEncoder",
    "TextEmbeddings",
    "TextEncoder",
    "config_text_encoder",
    "encode_batch_captions",
    "make_text_encoder",
    "split_words",
    "word_vector",
]
