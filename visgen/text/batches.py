"""The one host-side text step: a batch's captions -> `"text"` embeddings `[B, L, D]`.

Captions are strings, so they are encoded on the host before a batch enters
a jitted step. Every task that conditions on text (a text-conditional
generator, a text-conditioned tokenizer) calls `encode_batch_captions` for
training and evaluation batches; the sampling CLI encodes its prompt with
the same encoder.
"""

from typing import Any

from visgen.text.base import TextEncoder


def encode_batch_captions(batch: dict[str, Any], encoder: TextEncoder) -> dict[str, Any]:
    """Adds `"text"` float32 `[B, L, D]`: the batch's `"caption"` strings `[B]` encoded.

    Raises ValueError when the batch has no captions or every caption is empty.
    """
    if "caption" not in batch:
        raise ValueError(
            "text conditioning needs captions in its batches (set data.with_captions=True)"
        )
    captions = [str(c) for c in batch["caption"]]
    if not any(c.strip() for c in captions):
        raise ValueError("every caption in the batch is empty: does the dataset have captions?")
    return {**batch, "text": encoder.encode(captions).embeddings}
