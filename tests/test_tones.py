"""G.711 codecs against reference values, and the ringback frames (G.711 and G.729) measured by FFT."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mss.errors import LocalProtocolError
from mss.tones import (
    DBM0_PEAK,
    DEFAULT_RINGBACK,
    EUROPEAN_RINGBACK,
    NORTH_AMERICAN_RINGBACK,
    SAMPLE_RATE,
    RingTone,
    decode_alaw,
    decode_g729,
    decode_ulaw,
    dominant_frequency,
    encode_alaw,
    encode_ulaw,
    frame_bytes,
    ringback_frames,
    tone_pcm,
)
from tests.test_g729 import requires_bcg729

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


# --------------------------------------------------------------------------------------------------
# G.711
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7F, 0x55),  # one's complement: -1 is quantised like 0 (G.191)
        (8, 0xFE, 0xD5),
        (16, 0xFD, 0xD4),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
        (40000, 0x80, 0xAA),  # clipped
        (-40000, 0x00, 0x2A),
    ],
)
def test_encoder_reference_values(sample: int, ulaw: int, alaw: int) -> None:
    assert encode_ulaw([sample]) == bytes([ulaw])
    assert encode_alaw([sample]) == bytes([alaw])


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0xFE, 8), (0x7E, -8), (0xF0, 120), (0xEF, 132), (0x80, 32124), (0x00, -32124)],
)
def test_ulaw_decoder_reference_values(code: int, value: int) -> None:
    assert decode_ulaw(bytes([code])).tolist() == [value]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xD4, 24), (0xC5, 264), (0xAA, 32256), (0x2A, -32256)],
)
def test_alaw_decoder_reference_values(code: int, value: int) -> None:
    assert decode_alaw(bytes([code])).tolist() == [value]


def test_ulaw_decode_encode_round_trip_over_all_codes() -> None:
    back = encode_ulaw(decode_ulaw(ALL_CODES))
    differing = [code for code in range(256) if back[code] != code]
    # Only negative zero: it decodes to 0, which is encoded as positive zero.
    assert differing == [0x7F]
    assert back[0x7F] == 0xFF


def test_alaw_decode_encode_round_trip_over_all_codes() -> None:
    assert encode_alaw(decode_alaw(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize(("encode", "decode"), [(encode_ulaw, decode_ulaw), (encode_alaw, decode_alaw)])
def test_quantisation_over_every_sample(encode: object, decode: object) -> None:
    coded = encode(ALL_SAMPLES)  # type: ignore[operator]
    assert len(coded) == 65536
    back = decode(coded).astype(np.int64)  # type: ignore[operator]
    # Monotonic: a larger sample never decodes to a smaller value.
    assert (np.diff(back) >= 0).all()
    # Symmetric about -1/2: x and its one's complement differ only in the sign bit.
    codes = np.frombuffer(coded, dtype=np.uint8)
    assert (codes[::-1] == codes ^ 0x80).all()
    # The error stays within half the largest step (1024 for μ-law, 512 for A-law on this scale),
    # and is relatively small: under 7 % for samples above the first segments.
    error = np.abs(back - ALL_SAMPLES.astype(np.int64))
    assert error.max() <= 1024 + 132
    big = np.abs(ALL_SAMPLES.astype(np.int64)) > 1024
    assert (error[big] / np.abs(ALL_SAMPLES[big].astype(np.int64))).max() < 0.07


def _audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: ModuleType = pytest.importorskip("audioop")
        return module


def test_agrees_with_the_standard_library_codec() -> None:
    """An independent implementation, where one exists (Python < 3.13).

    A-law agrees everywhere. audioop's μ-law negates negative samples (two's complement) where G.191
    takes the one's complement, so only the non-negative half is compared for μ-law.
    """
    audioop = _audioop()
    raw = ALL_SAMPLES.tobytes()
    assert encode_alaw(ALL_SAMPLES) == audioop.lin2alaw(raw, 2)
    positive = ALL_SAMPLES[ALL_SAMPLES >= 0]
    assert encode_ulaw(positive) == audioop.lin2ulaw(positive.tobytes(), 2)
    assert decode_ulaw(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert decode_alaw(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_encoders_take_integers_only() -> None:
    with pytest.raises(LocalProtocolError, match="must be integers"):
        encode_ulaw(np.array([0.5]))
    assert encode_alaw([]) == b""
    assert decode_ulaw(b"").size == 0


# --------------------------------------------------------------------------------------------------
# Ringback frames
# --------------------------------------------------------------------------------------------------


def _frames(data: bytes, size: int) -> list[bytes]:
    assert len(data) % size == 0
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(
    ("codec", "decode", "silence"), [("PCMU", decode_ulaw, 0xFF), ("PCMA", decode_alaw, 0xD5)]
)
def test_default_ringback_cadence_and_frequency(codec: str, decode: object, silence: int) -> None:
    data = ringback_frames(codec)
    assert frame_bytes(codec) == 160
    frames = _frames(data, 160)
    assert len(frames) == 250  # 5 s of 20 ms frames: 1 s on, 4 s off
    assert len(data) == 40000
    on, off = frames[:50], frames[50:]
    assert all(frame == bytes([silence]) * 160 for frame in off)
    for frame in on[1:-1]:  # the first and last frames hold the fades
        pcm = decode(frame)  # type: ignore[operator]
        assert abs(dominant_frequency(pcm, SAMPLE_RATE) - 425) < 5
    whole = decode(b"".join(on))  # type: ignore[operator]
    assert abs(dominant_frequency(whole) - 425) < 0.5


def test_ringback_level() -> None:
    pcm = decode_ulaw(ringback_frames("PCMU")[800:7200]).astype(np.float64)  # inside the burst
    rms = math.sqrt(float(np.mean(pcm**2)))
    level = 20 * math.log10(rms * math.sqrt(2) / DBM0_PEAK)
    assert abs(level - DEFAULT_RINGBACK.level_dbm0) < 0.3


def test_ringback_fades_in_and_out() -> None:
    pcm = tone_pcm()
    assert abs(int(pcm[0])) < 5 and abs(int(pcm[7999])) < 100
    assert (pcm[8000:] == 0).all()
    assert np.abs(np.diff(pcm[:8000].astype(np.int32))).max() < 2 * math.pi * 425 / 8000 * 2600


def test_north_american_ringback() -> None:
    data = ringback_frames("PCMA", tone=NORTH_AMERICAN_RINGBACK)
    frames = _frames(data, 160)
    assert len(frames) == 300  # 6 s: 2 s on, 4 s off
    assert all(frame == b"\xd5" * 160 for frame in frames[100:])
    pcm = decode_alaw(b"".join(frames[:100])).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    top_two = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert top_two == [440.0, 480.0]


@pytest.mark.parametrize(("ptime", "size", "count"), [(10, 80, 500), (20, 160, 250), (40, 320, 125)])
def test_other_packet_times(ptime: int, size: int, count: int) -> None:
    assert frame_bytes("PCMU", ptime) == size
    assert len(_frames(ringback_frames("PCMU", ptime_ms=ptime), size)) == count


def test_frames_are_cached() -> None:
    assert ringback_frames("PCMU") is ringback_frames("pcmu", ptime_ms=20, tone=EUROPEAN_RINGBACK)
    assert ringback_frames("PCMU") != ringback_frames("PCMA")


@pytest.mark.parametrize(("ptime", "extra_ms"), [(10, 0), (20, 0), (30, 10), (40, 0), (7, 5)])
def test_g711_ringback_ends_on_a_frame_boundary(ptime: int, extra_ms: int) -> None:
    data = ringback_frames("PCMA", ptime_ms=ptime)
    assert len(data) % (ptime * 8) == 0
    # The period, then its silence lengthened to the next whole frame (5010 ms at 30 ms).
    assert data == ringback_frames("PCMA") + b"\xd5" * (extra_ms * 8)


# --------------------------------------------------------------------------------------------------
# G.729 ringback (through the bcg729 binding; tests/test_g729.py tests the binding itself)
# --------------------------------------------------------------------------------------------------


@requires_bcg729
def test_g729_ringback_cadence_and_frequency() -> None:
    data = ringback_frames("G729")
    assert frame_bytes("G729") == 20  # two 10-byte frames per 20 ms packet
    packets = _frames(data, 20)
    assert len(packets) == 250  # 5 s: 1 s on, 4 s off
    pcm = decode_g729(data + data)[40000:]  # decoded as played: the second time round the loop
    blocks = pcm.reshape(-1, 400).astype(np.float64)  # 50 ms each
    rms = np.sqrt(np.mean(blocks**2, axis=1))
    assert (rms[:20] > 1000).all() and (rms[21:] < 20).all()  # the burst's last block fades out
    for block in blocks[1:19]:
        assert abs(dominant_frequency(block) - 425) < 10
    assert abs(dominant_frequency(pcm[:8000]) - 425) < 1
    rms_on = float(np.sqrt(np.mean(pcm[400:7600].astype(np.float64) ** 2)))
    level = 20 * math.log10(rms_on * math.sqrt(2) / DBM0_PEAK)
    assert abs(level - DEFAULT_RINGBACK.level_dbm0) < 3


@requires_bcg729
@pytest.mark.parametrize(
    ("ptime", "size", "count"), [(10, 10, 500), (20, 20, 250), (30, 30, 167), (40, 40, 125)]
)
def test_g729_packet_times(ptime: int, size: int, count: int) -> None:
    assert frame_bytes("G729", ptime) == size
    data = ringback_frames("G729", ptime_ms=ptime)
    assert len(_frames(data, size)) == count  # at 30 ms: 5.01 s
    # A second of tone, four of silence (and the 10 ms more at 30 ms).
    pcm = decode_g729(data + data)[len(data) * 8 :]
    seconds = pcm[:40000].reshape(-1, 8000).astype(np.float64)
    loud = np.sqrt(np.mean(seconds**2, axis=1)) > 1000
    assert loud.tolist() == [True, False, False, False, False]
    assert np.abs(pcm[40000:].astype(np.int32)).max(initial=0) < 20


@requires_bcg729
def test_g729_frames_are_cached_and_other_tones_encode_too() -> None:
    assert ringback_frames("G729") is ringback_frames("g729", ptime_ms=10)
    data = ringback_frames("G729", tone=NORTH_AMERICAN_RINGBACK)
    assert len(data) == 6000
    pcm = decode_g729(data + data)[48000 + 800 : 48000 + 16000].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    assert sorted(freqs[np.argsort(spectrum)[-2:]]) == [440.0, 480.0]


def test_without_the_g729_extension_ringback_is_silent() -> None:
    # A fresh interpreter in which the extension cannot be imported, as in a build without bcg729.
    script = (
        "import sys; sys.modules['mss._g729'] = None\n"
        "from mss import tones\n"
        "from mss.errors import LocalProtocolError\n"
        "assert tones.ringback_frames('G729') == b''\n"
        "assert tones.ringback_frames('PCMU')\n"
        "print(tones.g729_unavailable())\n"
        "for call in (lambda: tones.encode_g729([0] * 80), lambda: tones.decode_g729(bytes(10))):\n"
        "    try:\n"
        "        call()\n"
        "    except LocalProtocolError as exc:\n"
        "        print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    reason, encode, decode = done.stdout.splitlines()
    assert reason.startswith("mss was built without bcg729 (Debian libbcg729-dev): ")
    assert encode == f"no G.729 encoder: {reason}" and decode == f"no G.729 decoder: {reason}"


def test_g729_frame_bytes() -> None:
    assert frame_bytes("G729") == 20  # 10 bytes per 10 ms frame
    assert frame_bytes("G729", 30) == 30


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ringback_frames("GSM"), "no ringback for codec 'GSM' (PCMU, PCMA or G729)"),
        (lambda: ringback_frames("PCMU", ptime_ms=0), "ptime 0 ms is not positive"),
        (lambda: frame_bytes("G729", 25), "not a multiple of G.729's 10 ms frame"),
        (lambda: RingTone(frequencies=(), on_ms=1, off_ms=1), "at least one frequency"),
        (lambda: RingTone(frequencies=(5000.0,), on_ms=1, off_ms=1), "is not below 4000 Hz"),
        (lambda: RingTone(frequencies=(425.0,), on_ms=0, off_ms=1), "is not valid"),
        (lambda: RingTone(frequencies=(425.0,), on_ms=1, off_ms=1, level_dbm0=3), "would overload"),
        (lambda: RingTone(frequencies=(400.0, 450.0), on_ms=1, off_ms=1, level_dbm0=-3), "would overload"),
        (lambda: dominant_frequency([1, 2]), "too few"),
    ],
)
def test_refused_arguments(call: object, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        call()  # type: ignore[operator]


def test_continuous_tone() -> None:
    tone = RingTone(frequencies=(1000.0,), on_ms=100, off_ms=0, level_dbm0=0)
    data = ringback_frames("PCMU", tone=tone)
    assert len(data) == 800
    assert abs(dominant_frequency(decode_ulaw(data)) - 1000) < 1


@given(freq=st.floats(min_value=60, max_value=3900), phase=st.floats(min_value=0, max_value=6.28))
def test_dominant_frequency_of_a_sine(freq: float, phase: float) -> None:
    t = np.arange(1600) / SAMPLE_RATE  # 200 ms, 5 Hz bins
    pcm = np.round(8000 * np.sin(2 * np.pi * freq * t + phase)).astype(np.int16)
    assert abs(dominant_frequency(pcm) - freq) < 2.5
