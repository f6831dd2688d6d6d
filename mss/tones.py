"""Ringback that mss plays to user1 while user2 rings: ready-to-send RTP payload, computed once.

The relay never transcodes, so the tone is made in the codec user1 negotiated: whole cadence
periods (tone on, then silence) of G.711 or G.729 payload, cut into frames of ``ptime_ms`` by the
caller (:func:`frame_bytes` per frame). It is computed on first use and cached.

**G.711.** :func:`encode_ulaw`, :func:`encode_alaw` and their inverses implement ITU-T G.711 on
16-bit linear samples, vectorised with numpy. μ-law uses the 14 most significant bits and A-law the
13 most significant bits, and a negative sample is quantised by its one's complement, as in the
ITU-T G.191 reference implementation: the characteristic is symmetric about −½ LSB, so −1 codes like
0. Decoding returns the middle of each quantisation interval; decode then encode gives back every
code except μ-law's negative zero 0x7F, which decodes to 0 and encodes as positive zero 0xFF.

**G.729.** G.729 frames cannot be written by hand (each 10 ms frame is the parameters of a
predictive model), so the tone goes through a real encoder: the optional extension ``mss._g729``
binds bcg729 (built when Debian's ``libbcg729-dev`` is found). :func:`encode_g729` runs it with VAD
off, so no Annex B: every frame is a 10-byte speech frame and the tone plays the same whether or not
user1's phone takes ``annexb=yes``, and its silence is coded silence rather than SID frames and gaps
that a phone would fill with its own comfort noise. The cadence is encoded twice in a row by one
encoder and only the second pass is kept: it starts from the state the end of a period leaves, so
looping it is as seamless as one long encoding. Without the extension (:func:`g729_unavailable`
says why) :func:`ringback_frames` returns ``b""`` for G.729 and mss sends nothing: legitimate RTP (a
receiver plays silence across the gap) and better than a made-up frame, which would be noise.
user1 then hears silence until user2 answers, or user2's early media when it sends some.

**The tone.** :class:`RingTone` describes a cadence; :data:`DEFAULT_RINGBACK` is the European one,
425 Hz, 1 s on, 4 s off (the CEPT/ETSI harmonised ringing tone; ITU-T E.180 Supplement 2 lists the
tones in use country by country), and
:data:`NORTH_AMERICAN_RINGBACK` is 440 + 480 Hz, 2 s on, 4 s off. Each burst fades in and out over a
few milliseconds so that it starts and stops without a click. When the period is not a whole number
of frames (5 s in 30 ms frames) its silence is lengthened to the next whole frame (5.01 s): a
difference no one hears, where repeating the period until it ends on a frame boundary would hold
three periods in every ringing session's memory.

Only numpy, the codec extension and arithmetic: no I/O.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mss.errors import LocalProtocolError

__all__ = [
    "DBM0_PEAK",
    "DEFAULT_RINGBACK",
    "EUROPEAN_RINGBACK",
    "NORTH_AMERICAN_RINGBACK",
    "RAMP_MS",
    "SAMPLE_RATE",
    "RingTone",
    "decode_alaw",
    "decode_g729",
    "decode_ulaw",
    "dominant_frequency",
    "encode_alaw",
    "encode_g729",
    "encode_ulaw",
    "frame_bytes",
    "g729_unavailable",
    "ringback_frames",
    "ringback_play",
    "tone_pcm",
]

#: The sampling rate of G.711 and G.729, in Hz (RTP clock rate 8000, RFC 3551 §4.5).
SAMPLE_RATE = 8000

#: Peak of a 0 dBm0 sine on the 16-bit scale. G.711 puts the overload point (the μ-law full scale,
#: 8159 on the 14-bit scale, 32636 here) at +3.17 dBm0, so 0 dBm0 is 3.17 dB below it; A-law's
#: +3.14 dBm0 differs by 0.03 dB, which is negligible for a tone.
DBM0_PEAK = 32636 * 10 ** (-3.17 / 20)

#: Length of the fade at each end of a burst: long enough to avoid a click, short enough not to
#: change the cadence.
RAMP_MS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class RingTone:
    """A ringback cadence: one burst of ``frequencies`` for ``on_ms``, then ``off_ms`` of silence."""

    frequencies: tuple[float, ...]
    """The tone's components in Hz, summed (a single one, or a pair like 440 + 480 Hz)."""
    on_ms: int
    """Length of the burst in milliseconds."""
    off_ms: int
    """Length of the silence after it in milliseconds."""
    level_dbm0: float = -19.0
    """Level of each component in dBm0. Tone levels are a national choice; −19 dBm0 is the ringback
    level of the North American Precise Tone Plan and a comfortable one for 425 Hz too."""

    def __post_init__(self) -> None:
        if not self.frequencies:
            raise LocalProtocolError("a ring tone needs at least one frequency")
        for freq in self.frequencies:
            if not 0 < freq < SAMPLE_RATE / 2:
                raise LocalProtocolError(f"tone frequency {freq} Hz is not below {SAMPLE_RATE // 2} Hz")
        if self.on_ms <= 0 or self.off_ms < 0:
            raise LocalProtocolError(f"cadence {self.on_ms} ms on / {self.off_ms} ms off is not valid")
        if self.level_dbm0 > 0 or len(self.frequencies) * 10 ** (self.level_dbm0 / 20) > 1.4:
            raise LocalProtocolError(f"tone level {self.level_dbm0} dBm0 would overload G.711")

    @property
    def period_ms(self) -> int:
        """One whole cadence: burst plus silence, in milliseconds."""
        return self.on_ms + self.off_ms


#: 425 Hz, 1 s on, 4 s off: the ringing tone of most of Europe.
EUROPEAN_RINGBACK = RingTone(frequencies=(425.0,), on_ms=1000, off_ms=4000)

#: 440 + 480 Hz, 2 s on, 4 s off: the North American ringback.
NORTH_AMERICAN_RINGBACK = RingTone(frequencies=(440.0, 480.0), on_ms=2000, off_ms=4000)

#: The ringback mss plays unless told otherwise.
DEFAULT_RINGBACK = EUROPEAN_RINGBACK

# bit_length of every value an exponent is computed from (μ-law: 0..127, A-law: 0..2047).
_BIT_LENGTH = np.array([i.bit_length() for i in range(2048)], dtype=np.int32)


def _samples(pcm: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """Linear samples as int32, clipped to the 16-bit range; integers only."""
    array = np.asarray(pcm)
    if array.dtype.kind not in "iu" and array.size:
        raise LocalProtocolError(f"linear PCM must be integers, not {array.dtype}")
    return np.clip(array.astype(np.int64).ravel(), -32768, 32767).astype(np.int32)


def _magnitude(x: npt.NDArray[np.int32], shift: int) -> npt.NDArray[np.int32]:
    # G.191: negative samples by their one's complement, so -1 -> 0, -32768 -> 32767.
    return np.where(x < 0, ~x, x) >> shift


def encode_ulaw(pcm: npt.ArrayLike) -> bytes:
    """G.711 μ-law codes (one byte per sample) of 16-bit linear samples; 0 → 0xFF."""
    x = _samples(pcm)
    # 14-bit magnitude plus the bias of 33 that makes the segments start at powers of two,
    # clipped at 8191 (the top of segment 7).
    biased = np.minimum(_magnitude(x, 2) + 33, 0x1FFF)
    exponent = _BIT_LENGTH[biased >> 6]
    mantissa = (biased >> (exponent + 1)) & 0x0F
    # μ-law transmits every bit inverted; the sign bit is 1 for positive samples.
    code = ((7 - exponent) << 4) | (15 - mantissa) | np.where(x >= 0, 0x80, 0)
    return bytes(code.astype(np.uint8).tobytes())


def encode_alaw(pcm: npt.ArrayLike) -> bytes:
    """G.711 A-law codes (one byte per sample) of 16-bit linear samples; 0 → 0xD5."""
    x = _samples(pcm)
    magnitude = _magnitude(x, 4)  # 0..2047: the 12-bit magnitude in steps of two 13-bit LSBs
    segment = np.maximum(_BIT_LENGTH[magnitude] - 4, 0)
    quant = (magnitude >> np.maximum(segment - 1, 0)) & 0x0F
    # A-law sets the sign bit for positive samples and inverts the even bits (XOR 0x55).
    code = ((segment << 4) | quant | np.where(x >= 0, 0x80, 0)) ^ 0x55
    return bytes(code.astype(np.uint8).tobytes())


def _ulaw_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32)
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    # Middle of the interval: ((2·mantissa + 33) · 2^exponent − 33) on the 14-bit scale, ×4.
    value = ((mantissa * 8 + 132) << exponent) - 132
    return np.where(code < 0x80, -value, value).astype(np.int16)


def _alaw_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32)
    plain = code ^ 0x55
    segment = (plain >> 4) & 0x07
    quant = plain & 0x0F
    # Middle of the interval on the 16-bit scale: segment 0 has no leading one, the others do.
    mantissa = np.where(segment > 0, quant + 16, quant)
    value = ((mantissa << 4) + 8) << np.maximum(segment - 1, 0)
    table: npt.NDArray[np.int16] = np.where(code & 0x80, value, -value).astype(np.int16)
    return table


_ULAW_DECODE = _ulaw_table()
_ALAW_DECODE = _alaw_table()


def decode_ulaw(data: bytes) -> npt.NDArray[np.int16]:
    """16-bit linear samples of G.711 μ-law codes."""
    samples: npt.NDArray[np.int16] = _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]
    return samples


def decode_alaw(data: bytes) -> npt.NDArray[np.int16]:
    """16-bit linear samples of G.711 A-law codes."""
    samples: npt.NDArray[np.int16] = _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]
    return samples


#: Samples in one 10 ms G.729 frame; each becomes 10 bytes (RFC 3551 §4.5.6).
_G729_FRAME_SAMPLES = 80


@functools.cache
def g729_unavailable() -> str | None:
    """Why mss cannot encode G.729 (its bcg729 extension is not built or does not load), or None."""
    try:
        from mss import _g729  # noqa: F401
    except ImportError as exc:
        return f"mss was built without bcg729 (Debian libbcg729-dev): {exc}"
    return None


def encode_g729(pcm: npt.ArrayLike) -> bytes:
    """G.729 frames (VAD off: 10 bytes per 80 samples) of 16-bit linear samples at 8 kHz.

    One fresh encoder codes the whole of ``pcm``, which must be whole 10 ms frames.
    """
    x = _samples(pcm)
    if x.size % _G729_FRAME_SAMPLES:
        raise LocalProtocolError(f"{x.size} samples are not whole 10 ms G.729 frames (80 samples each)")
    try:
        from mss import _g729
    except ImportError as exc:
        raise LocalProtocolError(f"no G.729 encoder: {g729_unavailable()}") from exc
    try:
        return _g729.encode(x.astype("<i2").tobytes())
    except ValueError as exc:
        raise LocalProtocolError(f"G.729: {exc}") from exc


def decode_g729(data: bytes) -> npt.NDArray[np.int16]:
    """16-bit linear samples (80 per 10-byte frame) of G.729 speech frames, from a fresh decoder."""
    if len(data) % 10:
        raise LocalProtocolError(f"{len(data)} bytes are not whole 10-byte G.729 frames")
    try:
        from mss import _g729
    except ImportError as exc:
        raise LocalProtocolError(f"no G.729 decoder: {g729_unavailable()}") from exc
    try:
        pcm = _g729.decode(data)
    except ValueError as exc:
        raise LocalProtocolError(f"G.729: {exc}") from exc
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def tone_pcm(tone: RingTone = DEFAULT_RINGBACK, *, rate: int = SAMPLE_RATE) -> npt.NDArray[np.int16]:
    """One cadence period of ``tone`` as 16-bit linear samples at ``rate`` Hz."""
    on = tone.on_ms * rate // 1000
    total = tone.period_ms * rate // 1000
    t = np.arange(on) / rate
    amplitude = DBM0_PEAK * 10 ** (tone.level_dbm0 / 20)
    burst = sum(
        (amplitude * np.sin(2 * math.pi * freq * t) for freq in tone.frequencies),
        start=np.zeros(on),
    )
    ramp = min(RAMP_MS * rate // 1000, on // 2)
    if ramp:
        # Raised-cosine fade in and out.
        fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        burst[:ramp] *= fade
        burst[on - ramp :] *= fade[::-1]
    pcm = np.zeros(total, dtype=np.int16)
    pcm[:on] = np.round(burst).astype(np.int16)
    return pcm


def _codec(codec: str) -> str:
    name = codec.upper()
    if name not in ("PCMU", "PCMA", "G729"):
        raise LocalProtocolError(f"no ringback for codec {codec!r} (PCMU, PCMA or G729)")
    return name


def frame_bytes(codec: str, ptime_ms: int = 20) -> int:
    """Payload bytes of one ``ptime_ms`` frame: 8 per ms for G.711, 1 per ms for G.729 (RFC 3551)."""
    name = _codec(codec)
    if name == "G729":
        if ptime_ms <= 0 or ptime_ms % 10:
            raise LocalProtocolError(f"ptime {ptime_ms} ms is not a multiple of G.729's 10 ms frame")
        return ptime_ms
    if ptime_ms <= 0:
        raise LocalProtocolError(f"ptime {ptime_ms} ms is not positive")
    return ptime_ms * SAMPLE_RATE // 1000


def ringback_frames(codec: str, *, ptime_ms: int = 20, tone: RingTone = DEFAULT_RINGBACK) -> bytes:
    """One cadence of ringback in ``codec`` as concatenated payload frames of ``ptime_ms``.

    Play the frames (:func:`frame_bytes` each) in order and loop: 250 frames for the default tone
    at 20 ms, 160 bytes each in G.711, 20 in G.729. A period that is not a whole number of frames
    gets its silence lengthened to the next one (167 frames of 30 ms: 5.01 s). For G729 without
    the bcg729 extension it is ``b""`` and nothing is sent (see the module notes). Cached: the same
    bytes object comes back for the same arguments.
    """
    name = _codec(codec)
    size = frame_bytes(name, ptime_ms)
    loop_ms = -(-tone.period_ms // ptime_ms) * ptime_ms
    frames = _ringback(name, tone, loop_ms)
    assert len(frames) % size == 0
    return frames


#: (codec, packet time) pairs whose default ringback is kept ready (:func:`ringback_play`): three
#: codecs at the packet times mss plays (10, 20, 30, 40 ms).
_RINGBACK_PLAYS = 16


@functools.lru_cache(maxsize=_RINGBACK_PLAYS)
def ringback_play(codec: str, ptime_ms: int) -> tuple[bytes, int]:
    """The default ringback in ``codec`` as :func:`ringback_frames` gives it, with the
    :func:`frame_bytes` of one frame: what the engine hands the relay for every ringing call, made
    once per codec and packet time (errors are raised every time, as they are not kept)."""
    return ringback_frames(codec, ptime_ms=ptime_ms), frame_bytes(codec, ptime_ms)


@functools.lru_cache(maxsize=16)
def _ringback(name: str, tone: RingTone, loop_ms: int) -> bytes:
    pcm = tone_pcm(tone)
    pcm = np.concatenate([pcm, np.zeros(loop_ms * SAMPLE_RATE // 1000 - pcm.size, dtype=np.int16)])
    if name == "PCMU":
        return encode_ulaw(pcm)
    if name == "PCMA":
        return encode_alaw(pcm)
    if g729_unavailable() is not None:
        return b""
    # The loop coded twice by one encoder, the second pass kept: it starts from the encoder state
    # that the end of the loop leaves, so playing it round and round has no seam.
    coded = encode_g729(np.tile(pcm, 2))
    return coded[len(coded) // 2 :]


def dominant_frequency(pcm: npt.ArrayLike, rate: int = SAMPLE_RATE) -> float:
    """The frequency in Hz of the strongest component of ``pcm``.

    A Hann-windowed FFT, refined between bins by fitting a parabola through the log magnitudes of
    the peak and its neighbours; accurate to a fraction of a bin (``rate / len(pcm)`` Hz).
    """
    samples = np.asarray(pcm, dtype=np.float64).ravel()
    if samples.size < 4:
        raise LocalProtocolError(f"{samples.size} samples are too few to find a frequency")
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    spectrum[0] = 0.0  # DC is not a tone
    peak = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2 * centre + right
        if denominator != 0:
            offset = float(0.5 * (left - right) / denominator)
    return (peak + offset) * rate / samples.size
