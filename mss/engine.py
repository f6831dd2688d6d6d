"""The call engine's pure part, sans-IO: the names that tie the SIP user agent, the call flow and the
relay together.

:class:`LegRef` names one leg of one callback in the user agent (its ``leg_id``);
:data:`RELAY_LEG` is the one map from a call-flow leg to the relay's leg facing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mss.callflow import USERS, User
from mss.errors import LocalProtocolError

if TYPE_CHECKING:
    from mss.relay import LegName as RelayLeg

__all__ = ["RELAY_LEG", "LegRef"]

#: The relay leg facing each party: ``a`` faces user1, ``b`` user2 (the relay's counter rows are in
#: this order too).
RELAY_LEG: Mapping[User, RelayLeg] = {"user1": "a", "user2": "b"}


@dataclass(frozen=True, slots=True, kw_only=True)
class LegRef:
    """One leg of one callback: the ``leg_id`` the engine gives the SIP user agent."""

    seq: int
    """The callback's journal sequence number (:attr:`mss.desk.Callback.seq`)."""
    leg: User
    """Which of its legs."""

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise LocalProtocolError(f"LegRef.seq must not be negative, not {self.seq}")
        if self.leg not in USERS:
            raise LocalProtocolError(f"LegRef.leg must be user1 or user2, not {self.leg!r}")

    def __str__(self) -> str:
        return f"{self.seq}.{self.leg}"
