"""Sampling options every sampler shares, the head's own options, and the one capability check.

`SampleOptions` holds what every sampler and head shares (temperature, the
guidance scale, schedule and interval) and carries the head's own options
(`head`: an instance of the head's `Options` dataclass, e.g. top-k for a
categorical head) separately. `sample_options` builds one from a flat
mapping (a config's `sample` section plus command-line flags), sending each
key to the shared options or the head's and naming the valid keys on a miss.

`require` is the one place a sampler refuses a head that lacks a capability
it needs (`visgen.generators.CAPABILITIES`; a sampler may accept any of
several), with one message.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from visgen.generators import CAPABILITIES
from visgen.sampling.guidance import SCHEDULES, Schedule

SHARED = ("temperature", "cfg_scale", "cfg_schedule", "cfg_interval")


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Decoding options (hashable: they are static arguments of the jitted loops).

    Attributes:
      temperature: 0 means greedy / deterministic; logits (or noise) are scaled by it.
      cfg_scale: classifier-free guidance scale `s`; 1 disables guidance (and
        the doubled batch).
      cfg_schedule: `constant`, `linear` or `half-linear` (see `guidance`).
      cfg_interval: optional `(start, end)` fraction of steps where guidance
        applies; scale 1 elsewhere.
      head: the head's own options (an instance of `head.Options`); None means
        the head's defaults.
    """

    temperature: float = 1.0
    cfg_scale: float = 1.0
    cfg_schedule: Schedule = "constant"
    cfg_interval: tuple[float, float] | None = None
    head: Any = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.cfg_schedule not in SCHEDULES:
            raise ValueError(
                f"unknown cfg_schedule {self.cfg_schedule!r}; valid: {', '.join(SCHEDULES)}"
            )
        if self.cfg_interval is not None:
            object.__setattr__(self, "cfg_interval", tuple(float(x) for x in self.cfg_interval))
            if len(self.cfg_interval) != 2:
                raise ValueError(f"cfg_interval must be (start, end), got {self.cfg_interval}")

    @property
    def guided(self) -> bool:
        """Whether the loop runs a doubled (conditional + null) batch."""
        return self.cfg_scale != 1.0

    def head_options(self, head) -> Any:
        """The options for `head`: `self.head`, or `head.Options()` when None; a ValueError
        when they are another head's."""
        if self.head is None:
            return head.Options()
        if type(self.head) is not head.Options:
            raise ValueError(
                f"sampling options {type(self.head).__name__} do not fit "
                f"{head.describe(head.Options())}, whose options are {head.Options.__name__}"
            )
        return self.head

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-friendly values (the head's options inline)."""
        shared = {name: getattr(self, name) for name in SHARED}
        head = dataclasses.asdict(self.head) if self.head is not None else {}
        return {**shared, **head}


def sample_options(values: Mapping[str, Any], head_options: type) -> SampleOptions:
    """`SampleOptions` from flat `values`: shared keys stay, the others go to `head_options`.

    Raises ValueError naming a key neither takes, with the valid keys.
    """
    shared = {k: v for k, v in values.items() if k in SHARED}
    own = {k: v for k, v in values.items() if k not in SHARED}
    valid = {f.name for f in dataclasses.fields(head_options)}
    unknown = sorted(set(own) - valid)
    if unknown:
        raise ValueError(
            f"unknown sampling option {unknown[0]!r} for this head "
            f"({head_options.__name__}); valid: {', '.join([*SHARED, *sorted(valid)])}"
        )
    return SampleOptions(**shared, head=head_options(**own))


class UnsupportedHead(ValueError):
    """A sampler was asked to run a head without a capability it needs."""


def offers(head, head_options: Any, capability: str | tuple[str, ...]) -> bool:
    """Whether `head` under its own options offers `capability`, or one of a tuple of them."""
    names = (capability,) if isinstance(capability, str) else capability
    return not head.capabilities(head_options).isdisjoint(names)


def fit_to(
    options: SampleOptions, head, capability: str | tuple[str, ...] | None, fixed: set[str]
) -> SampleOptions:
    """`options` with head options that deny `capability` reset to the head's defaults, one
    option at a time, leaving the `fixed` ones (given explicitly by the user) alone.

    For config defaults a sampler cannot use (a Token-Shuffle config's coupled windows
    under SJD); when no single reset helps, `options` come back as they are and `require`
    refuses them.
    """
    if capability is None or offers(head, options.head_options(head), capability):
        return options
    defaults = head.Options()
    for field in dataclasses.fields(defaults):
        if field.name in fixed:
            continue
        trial = dataclasses.replace(options.head, **{field.name: getattr(defaults, field.name)})
        if offers(head, trial, capability):
            return dataclasses.replace(options, head=trial)
    return options


def require(head, options: SampleOptions, capability: str | tuple[str, ...], method: str) -> None:
    """Raise `UnsupportedHead` unless `head` offers `capability` under `options` (a
    tuple: any one of them will do)."""
    head_options = options.head_options(head)
    if not offers(head, head_options, capability):
        names = (capability,) if isinstance(capability, str) else capability
        raise UnsupportedHead(
            f"{method} needs {' or '.join(CAPABILITIES[c] for c in names)}; this "
            f"generator's head is {head.describe(head_options)}, which does not give them"
        )
