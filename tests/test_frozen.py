"""mss.frozen.trusted: the same frozen values as their __init__, without its checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mss.frozen import trusted
from mss.sip import events


@dataclass(frozen=True, slots=True)
class _Point:
    x: int
    y: int = 7
    label: str | None = None

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x must not be negative")


def test_the_same_value_as_init_with_defaults_and_without_the_checks() -> None:
    make = trusted(_Point)
    assert make(x=1) == _Point(1)
    assert make(x=1, y=2, label="a") == _Point(1, 2, "a")
    assert type(make(x=1)) is _Point
    assert make(x=-1).x == -1  # no __post_init__: only for values known valid
    with pytest.raises(TypeError):
        make(1)  # keywords only, as the callers write them
    with pytest.raises(AttributeError):
        make(x=1).x = 2  # type: ignore[misc]  # still frozen


def test_a_default_factory_is_refused_when_the_constructor_is_made() -> None:
    @dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = field(default_factory=list)

    with pytest.raises(TypeError, match="default_factory"):
        trusted(WithFactory)


def test_the_leg_events_built_light_equal_their_init() -> None:
    assert events.leg_ringing("l1", 180, "Ringing", None) == events.LegRinging(
        leg_id="l1", status=180, reason="Ringing", sdp=None)
    assert events.leg_answered("l1", b"v=0", "c@h") == events.LegAnswered(
        leg_id="l1", sdp=b"v=0", call_id="c@h")
    assert events.leg_ended("l1", True, "BYE", True) == events.LegEnded(
        leg_id="l1", by_remote=True, reason="BYE", answered=True)
