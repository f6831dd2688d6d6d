"""Call quality of each leg for the CDR: packets, loss, jitter and an estimated MOS. Pure arithmetic.

What the relay measures (:class:`mss.relay.LegStats`) is turned here into a :class:`LegQuality`:

- **lost**: sequence numbers skipped in the stream received from the phone (RFC 3550 A.1, counted by
  the relay per packet); the loss ratio is ``lost / (received + lost)``.
- **jitter**: the relay keeps RFC 3550 §6.4.1's interarrival jitter estimate ``J`` of each leg.
  Its mean and maximum over the call come from :class:`JitterSamples`: samples of ``J`` taken when
  the call's own timer reads the relay while bridged, and one at the release (see
  :meth:`mss.engine.CallRecord.sample_jitter`), never per packet in Python.
- **MOS**: the E-model of ITU-T G.107 (03/2005), simplified as described below, mapped to MOS by
  its Annex B.

The simplified E-model (what :func:`estimate_mos` computes)::

    R   = 93.2 - Idd(Ta) - Ie_eff                            G.107 §3.1, R = Ro - Is - Id - Ie_eff + A
    Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)     G.107 §3.5
    Idd = 0 for Ta <= 100 ms, else                           G.107 §3.4
          25 * ((1 + X^6)^(1/6) - 3 * (1 + (X/3)^6)^(1/6) + 2),  X = log2(Ta / 100)
    MOS = 1 + 0.035 R + R (R - 60) (100 - R) 7e-6            G.107 Annex B (B-4); 1 below R = 0,
                                                             4.5 above R = 100

Simplifications, each because the relay cannot know better:

- ``Ro - Is - Idte - Idle`` and ``A`` are G.107's default values (§3.7), which give R = 93.2 for a
  perfect connection: the phones' loudness ratings, room noise and echo are not visible to a relay.
- ``Ta`` (the one-way delay) is what the media path adds that the relay can estimate: packetization
  (:data:`PACKETIZATION_MS`), the codec's look-ahead, and a jitter buffer of
  :data:`JITTER_BUFFER_FACTOR` times the mean jitter. Network transit time is not measured (no RTCP
  round trip is computed), so on long paths the MOS is optimistic.
- Loss is taken as random (``BurstR = 1``); ``Ie`` and ``Bpl`` are G.113 Appendix I's values: G.711
  (PCMU, PCMA) ``Ie = 0`` and ``Bpl = 25.1`` (the receiving phone conceals loss, G.711 Appendix I;
  :data:`G711_NO_PLC` has ``Bpl = 4.3`` for one that does not), G.729 ``Ie = 11``, ``Bpl = 19``.
  Other codecs get no MOS.
- The MOS of a leg is that of the stream received from its phone at the relay: what the other party
  hears, less whatever the path from the relay to that party adds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mss.errors import LocalProtocolError

__all__ = [
    "CODECS",
    "G711_NO_PLC",
    "JITTER_BUFFER_FACTOR",
    "PACKETIZATION_MS",
    "R_DEFAULT",
    "CodecImpairment",
    "JitterSamples",
    "LegQuality",
    "delay_ms",
    "estimate_mos",
    "idd",
    "ie_eff",
    "leg_quality",
    "loss_percent",
    "mos_from_r",
]

#: R of a perfect connection with G.107's default values (§3.7): ``Ro - Is - Id - Ie_eff + A``
#: with no delay, no loss and a codec without impairment.
R_DEFAULT = 93.2

#: Milliseconds of audio in one packet (RFC 3551's default ``ptime``): the sender waits this long
#: before it can send a packet's first sample.
PACKETIZATION_MS = 20.0

#: A jitter buffer holds about twice the mean interarrival jitter (the usual rule of thumb for an
#: adaptive buffer that conceals nearly every late packet).
JITTER_BUFFER_FACTOR = 2.0

# JitterSamples.maximum before its first sample.
_NO_SAMPLE = -1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CodecImpairment:
    """A codec's E-model values (ITU-T G.113 Appendix I)."""

    ie: float
    """Equipment impairment factor without loss."""
    bpl: float
    """Packet-loss robustness factor."""
    lookahead_ms: float
    """Algorithmic delay beyond the packet's own audio (G.729: 5 ms look-ahead)."""

    def __post_init__(self) -> None:
        if not (0 <= self.ie <= 95 and self.bpl > 0 and self.lookahead_ms >= 0):
            raise LocalProtocolError(f"bad codec impairment {self.ie}/{self.bpl}/{self.lookahead_ms}")


_G711_PLC = CodecImpairment(ie=0.0, bpl=25.1, lookahead_ms=0.0)

#: G.711 received by a phone without packet-loss concealment (G.113 Appendix I: ``Bpl = 4.3``).
G711_NO_PLC = CodecImpairment(ie=0.0, bpl=4.3, lookahead_ms=0.0)

#: E-model values by codec name (as negotiated, upper case): G.711 with packet-loss concealment in
#: the receiving phone (G.711 Appendix I; nearly every phone and gateway has it), G.729(A).
CODECS: Mapping[str, CodecImpairment] = {
    "PCMU": _G711_PLC,
    "PCMA": _G711_PLC,
    "G729": CodecImpairment(ie=11.0, bpl=19.0, lookahead_ms=5.0),
}


def loss_percent(lost: int, received: int) -> float:
    """``Ppl``: the percentage of the stream's packets lost (0 when nothing was expected)."""
    if lost < 0 or received < 0:
        raise LocalProtocolError(f"packet counts must not be negative: lost {lost}, received {received}")
    expected = lost + received
    return 100.0 * lost / expected if expected else 0.0


def ie_eff(codec: CodecImpairment, ppl: float, burst_r: float = 1.0) -> float:
    """G.107 §3.5: the effective equipment impairment factor at ``ppl`` percent packet loss."""
    if not 0 <= ppl <= 100 or burst_r <= 0:
        raise LocalProtocolError(f"bad loss {ppl}% (BurstR {burst_r})")
    return codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst_r + codec.bpl)


def idd(ta_ms: float) -> float:
    """G.107 §3.4: the impairment by an absolute one-way delay of ``ta_ms`` (0 up to 100 ms)."""
    if ta_ms <= 100.0:
        return 0.0
    x = math.log2(ta_ms / 100.0)
    return 25.0 * (math.pow(1 + x**6, 1 / 6) - 3 * math.pow(1 + (x / 3) ** 6, 1 / 6) + 2)


def mos_from_r(r: float) -> float:
    """G.107 Annex B (B-4): the estimated conversational MOS for rating ``r``.

    The polynomial dips just under 1 for R below 6.5; the result is held at 1 there, its floor.
    """
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)


def delay_ms(codec: CodecImpairment, jitter_ms: float) -> float:
    """``Ta`` as far as the relay can tell: packetization, look-ahead and the jitter buffer."""
    return PACKETIZATION_MS + codec.lookahead_ms + JITTER_BUFFER_FACTOR * jitter_ms


def estimate_mos(codec: str | None, *, lost: int, received: int, jitter_ms: float) -> float | None:
    """The estimated MOS of a stream of ``codec`` (see the module docstring); None when the codec has
    no E-model values here or nothing was received."""
    impairment = CODECS.get((codec or "").upper())
    if impairment is None or received == 0:
        return None
    if jitter_ms < 0:
        raise LocalProtocolError(f"jitter must not be negative: {jitter_ms}")
    r = R_DEFAULT - idd(delay_ms(impairment, jitter_ms)) - ie_eff(impairment, loss_percent(lost, received))
    return mos_from_r(r)


class JitterSamples:
    """Mean and maximum of a leg's jitter estimate over the samples taken (bounded: sums only)."""

    __slots__ = ("count", "maximum", "total")

    def __init__(self) -> None:
        self.count = 0
        """Samples taken."""
        self.total = 0.0
        """Their sum, in milliseconds."""
        self.maximum = _NO_SAMPLE
        """The largest, in milliseconds (negative before the first)."""

    def add(self, jitter_ms: float) -> None:
        """Take one sample of the jitter estimate, in milliseconds."""
        if not jitter_ms >= 0:  # also refuses NaN
            raise LocalProtocolError(f"jitter must be a number >= 0, not {jitter_ms}")
        self.count += 1
        self.total += jitter_ms
        self.maximum = max(self.maximum, jitter_ms)

    @property
    def mean(self) -> float | None:
        """Mean of the samples, None before the first."""
        return self.total / self.count if self.count else None

    @property
    def max(self) -> float | None:
        """Largest sample, None before the first."""
        return self.maximum if self.count else None


@dataclass(frozen=True, slots=True, kw_only=True)
class LegQuality:
    """One answered leg's media at the relay, for the CDR (``leg1_*`` / ``leg2_*`` columns)."""

    packets_in: int
    """RTP packets received from the leg's phone."""
    bytes_in: int
    """Their UDP payload bytes (RTP header included)."""
    packets_out: int
    """RTP packets sent to the leg's phone (forwarded from the other leg, and ringback played)."""
    bytes_out: int
    """Their UDP payload bytes."""
    lost: int
    """Packets missing from the phone's stream (sequence gaps)."""
    jitter_mean_ms: float | None
    """Mean of the RFC 3550 jitter estimate over the call, ms; None when no packet came."""
    jitter_max_ms: float | None
    """Largest sample of it, ms; None when no packet came."""
    mos: float | None
    """Estimated MOS (1 to 4.5) of the phone's stream; None when no packet came or the codec has no
    E-model values here."""

    def __post_init__(self) -> None:
        counts = (self.packets_in, self.bytes_in, self.packets_out, self.bytes_out, self.lost)
        if min(counts) < 0:
            raise LocalProtocolError(f"LegQuality counts must not be negative: {counts}")
        if self.mos is not None and not 1.0 <= self.mos <= 4.5:
            raise LocalProtocolError(f"LegQuality.mos must be 1..4.5, not {self.mos}")


def leg_quality(
    codec: str | None,
    *,
    packets_in: int,
    bytes_in: int,
    packets_out: int,
    bytes_out: int,
    lost: int,
    jitter: JitterSamples,
) -> LegQuality:
    """A leg's quality from the relay's counters and the jitter samples of the call.

    Jitter and MOS are None when nothing was received from the phone; values are rounded to what a
    CDR reader needs (jitter to 0.01 ms, MOS to 0.01).
    """
    mean = jitter.mean if packets_in else None
    peak = jitter.max if packets_in else None
    mos = None
    if mean is not None:
        mos = estimate_mos(codec, lost=lost, received=packets_in, jitter_ms=mean)
    return LegQuality(
        packets_in=packets_in,
        bytes_in=bytes_in,
        packets_out=packets_out,
        bytes_out=bytes_out,
        lost=lost,
        jitter_mean_ms=None if mean is None else round(mean, 2),
        jitter_max_ms=None if peak is None else round(peak, 2),
        mos=None if mos is None else round(mos, 2),
    )
