"""`TokenSpec`: what a generator must produce for a tokenizer to decode.

The one description of a tokenizer's tokens that generators (embedding and
head sizes), samplers (how many tokens of which kind), token caches and
workdirs (what made a cache, in `metadata.json`) share. Four kinds:

- `discrete`: integer ids in `[0, vocab_size)` on a layout `(K,)` (1D
  tokenizers such as TiTok), `(h, w)` (grids) or `(t, h, w)` (video grids);
  `channels` is the code dimension when known (0 otherwise).
- `continuous`: float latents `[*layout, channels]` (VAE bottlenecks).
- `dimwise`: `channels` ids per position, each in `[0, bins)`
  (TokenBridge's post-training dimension-wise quantization: `C` channels of
  `B` bins).
- `multiscale`: ids in `[0, vocab_size)` on one layout per scale, coarse to
  fine (`scales`); `layout` is the last (finest) scale.

This module imports only the standard library, so `visgen.data` (token
caches) and command-line tools can read and write specs without jax or flax.
"""

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Literal

TokenKind = Literal["discrete", "continuous", "dimwise", "multiscale"]
KINDS: tuple[str, ...] = ("discrete", "continuous", "dimwise", "multiscale")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _shape(name: str, value: Any) -> tuple[int, ...]:
    """`value` as a layout tuple of 1 to 3 positive ints, or a ValueError naming `name`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"TokenSpec {name} must be a tuple of ints, got {value!r}")
    if not 1 <= len(value) <= 3 or not all(_is_int(d) and d > 0 for d in value):
        raise ValueError(
            f"TokenSpec {name} must be 1 to 3 positive ints ((K,), (h, w) or (t, h, w)), "
            f"got {tuple(value)!r}"
        )
    return tuple(int(d) for d in value)


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """What a generator needs to know about a tokenizer's tokens (validated on creation).

    Prefer the constructors `TokenSpec.discrete`, `.continuous`, `.dimwise`
    and `.multiscale`, which fill in the fields a kind does not use.

    Attributes:
      kind: `discrete`, `continuous`, `dimwise` or `multiscale` (see the module).
      layout: token positions per example, `(K,)`, `(h, w)` or `(t, h, w)`;
        for `multiscale` the finest scale's layout (`scales[-1]`).
      vocab_size: ids per token for `discrete` and `multiscale` (> 0); 0 otherwise.
      channels: latent channels per position: the latent width `C` (> 0) for
        `continuous`, the ids per position (> 0) for `dimwise`, the code
        dimension (or 0 if not given) for `discrete` and `multiscale`.
      needs_text: whether encode and decode need a text condition.
      bins: ids per channel `B` for `dimwise` (> 0); 0 otherwise.
      scales: `multiscale` only: one layout per scale, coarse to fine.
    """

    kind: TokenKind
    layout: tuple[int, ...]
    vocab_size: int = 0
    channels: int = 0
    needs_text: bool = False
    bins: int = 0
    scales: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"TokenSpec kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "layout", _shape("layout", self.layout))
        for name in ("vocab_size", "channels", "bins"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"TokenSpec {name} must be an int >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.needs_text, bool):
            raise ValueError(f"TokenSpec needs_text must be a bool, got {self.needs_text!r}")
        if isinstance(self.scales, (str, bytes)) or not isinstance(self.scales, Sequence):
            raise ValueError(f"TokenSpec scales must be a tuple of layouts, got {self.scales!r}")
        scales = tuple(_shape(f"scales[{i}]", s) for i, s in enumerate(self.scales))
        object.__setattr__(self, "scales", scales)
        self._check_kind()

    def _check_kind(self) -> None:
        """The per-kind rules: which fields must be set and which must stay 0."""
        kind = self.kind

        def fail(why: str) -> None:
            raise ValueError(f"a {kind} TokenSpec {why} (got {self!r})")

        if kind in ("discrete", "multiscale") and self.vocab_size <= 0:
            fail("needs vocab_size > 0")
        if kind in ("continuous", "dimwise") and self.vocab_size != 0:
            fail("has no vocabulary: vocab_size must be 0")
        if kind in ("continuous", "dimwise") and self.channels <= 0:
            fail("needs channels > 0")
        if (kind == "dimwise") != (self.bins > 0):
            fail("needs bins > 0" if kind == "dimwise" else "has no bins: bins must be 0")
        if kind != "multiscale" and self.scales:
            fail("has no scales: scales must be empty")
        if kind == "multiscale":
            if not self.scales:
                fail("needs at least one scale")
            if any(len(s) != len(self.layout) for s in self.scales):
                fail("needs every scale to have the layout's rank")
            if self.scales[-1] != self.layout:
                fail("needs layout == scales[-1] (the finest scale)")

    # --- constructors ---------------------------------------------------------------

    @classmethod
    def discrete(
        cls,
        layout: Sequence[int],
        vocab_size: int,
        *,
        channels: int = 0,
        needs_text: bool = False,
    ) -> "TokenSpec":
        """Ids in `[0, vocab_size)` on `layout`; `channels` is the code dimension if known."""
        return cls("discrete", tuple(layout), vocab_size, channels, needs_text)

    @classmethod
    def continuous(
        cls, layout: Sequence[int], channels: int, *, needs_text: bool = False
    ) -> "TokenSpec":
        """Float latents `[*layout, channels]`."""
        return cls("continuous", tuple(layout), 0, channels, needs_text)

    @classmethod
    def dimwise(
        cls, layout: Sequence[int], channels: int, bins: int, *, needs_text: bool = False
    ) -> "TokenSpec":
        """`channels` ids per position of `layout`, each in `[0, bins)`."""
        return cls("dimwise", tuple(layout), 0, channels, needs_text, bins=bins)

    @classmethod
    def multiscale(
        cls,
        scales: Sequence[Sequence[int]],
        vocab_size: int,
        *,
        channels: int = 0,
        needs_text: bool = False,
    ) -> "TokenSpec":
        """Ids in `[0, vocab_size)` on each layout of `scales` (coarse to fine)."""
        scales = tuple(tuple(s) for s in scales)
        if not scales:
            raise ValueError("a multiscale TokenSpec needs at least one scale")
        return cls("multiscale", scales[-1], vocab_size, channels, needs_text, scales=scales)

    # --- sizes ----------------------------------------------------------------------

    @property
    def num_tokens(self) -> int:
        """Token positions per example: the product of the layout (summed over scales)."""
        if self.kind == "multiscale":
            return sum(math.prod(s) for s in self.scales)
        return math.prod(self.layout)

    @property
    def ids_per_example(self) -> int:
        """Integer ids per example (`num_tokens`, times `channels` for dimwise; 0 if continuous)."""
        if self.kind == "continuous":
            return 0
        if self.kind == "dimwise":
            return self.num_tokens * self.channels
        return self.num_tokens

    # --- records --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain values (lists for tuples); `from_dict` reverses it."""
        return {
            "kind": self.kind,
            "layout": list(self.layout),
            "vocab_size": self.vocab_size,
            "channels": self.channels,
            "needs_text": self.needs_text,
            "bins": self.bins,
            "scales": [list(s) for s in self.scales],
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TokenSpec":
        """A spec from `to_dict()` output (validated; unknown keys are an error)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown TokenSpec keys {unknown}; valid: {sorted(fields)}")
        missing = sorted({"kind", "layout"} - set(values))
        if missing:
            raise ValueError(f"a TokenSpec record needs {missing}, got {dict(values)}")
        values = dict(values)
        values["layout"] = tuple(values["layout"])
        values["scales"] = tuple(tuple(s) for s in values.get("scales", ()))
        return cls(**values)

    def describe(self) -> str:
        """One line, e.g. `discrete 32 ids of 1024 codes (channels 12)` or
        `continuous 8x8 latents of 4 channels`."""
        layout = "x".join(map(str, self.layout))
        if self.kind == "discrete":
            text = f"discrete {layout} ids of {self.vocab_size} codes"
        elif self.kind == "continuous":
            text = f"continuous {layout} latents of {self.channels} channels"
        elif self.kind == "dimwise":
            text = f"dimwise {layout} positions of {self.channels} channels x {self.bins} bins"
        else:
            scales = ", ".join("x".join(map(str, s)) for s in self.scales)
            text = f"multiscale ids on scales ({scales}) of {self.vocab_size} codes"
        if self.kind in ("discrete", "multiscale") and self.channels:
            text += f" (channels {self.channels})"
        return text + (", text-conditioned" if self.needs_text else "")
