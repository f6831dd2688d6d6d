"""The G.729 binding (mss/_g729.pyx over bcg729): frame sizes, a 425 Hz tone through an encode and
decode round trip, encoder state across calls, refused input, and G.729 ringback played by a real
relay session to a UDP socket on loopback."""

from __future__ import annotations

import itertools
import os
import re
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from mss import callflow as cf
from mss import tones
from mss.engine import carry_out_relay
from mss.errors import LocalProtocolError
from mss.relay import Relay

#: bcg729's header: where it is, mss is built with G.729 (setup.py) and these tests run; without it
#: (a machine where Debian's libbcg729-dev cannot be installed) they are skipped.
G729_HEADER = Path("/usr/include/bcg729/encoder.h")

requires_bcg729 = pytest.mark.skipif(
    not G729_HEADER.exists(),
    reason="bcg729 is not installed (Debian libbcg729-dev, installed by mss_peers/install.sh)",
)

pytestmark = requires_bcg729

RATE = tones.SAMPLE_RATE


def sine(freq: float, seconds: float, amplitude: float = 3000.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def test_the_extension_is_built_where_bcg729_is() -> None:
    # The header is here, so a missing or broken extension is a build failure, not a reason to skip.
    missing = tones.g729_unavailable()
    assert missing is None, f"{missing}: rebuild (pip install -e . or python setup.py build_ext --inplace)"
    from mss import _g729

    assert (_g729.FRAME_SAMPLES, _g729.PCM_FRAME_BYTES, _g729.FRAME_BYTES) == (80, 160, 10)


@pytest.mark.parametrize("freq", [425.0, 440.0, 1000.0])
def test_round_trip_keeps_a_tone(freq: float) -> None:
    from mss import _g729

    pcm = sine(freq, 1.0)
    frames = _g729.encode(pcm.astype("<i2").tobytes())
    assert len(frames) == 1000  # 100 frames of 10 bytes: 8 kbit/s
    back = np.frombuffer(_g729.decode(frames), dtype="<i2")
    assert back.size == pcm.size
    settled = back[800:]  # the codec's first 100 ms: its predictors start from nothing
    assert abs(tones.dominant_frequency(settled) - freq) < 2
    # The level comes back within 3 dB.
    ratio = np.sqrt(np.mean(settled.astype(np.float64) ** 2) / np.mean(pcm[800:].astype(np.float64) ** 2))
    assert 10 ** (-3 / 20) < ratio < 10 ** (3 / 20)


def test_silence_stays_silent() -> None:
    back = tones.decode_g729(tones.encode_g729(np.zeros(8000, dtype=np.int16)))
    assert np.abs(back.astype(np.int32)).max() < 10


def test_any_buffer_of_16_bit_samples() -> None:
    from mss import _g729

    pcm = sine(425, 0.1)
    raw = pcm.astype("<i2").tobytes()
    expected = _g729.encode(raw)
    assert _g729.encode(bytearray(raw)) == expected
    assert _g729.encode(memoryview(raw)) == expected
    assert _g729.encode(pcm) == expected  # a numpy int16 array (little-endian here)
    assert _g729.encode(pcm.reshape(10, 80)) == expected
    assert _g729.encode(b"") == b"" and _g729.decode(b"") == b""


def test_the_encoder_and_decoder_keep_their_state_between_calls() -> None:
    from mss import _g729

    raw = sine(425, 0.2).astype("<i2").tobytes()
    whole = _g729.encode(raw)
    encoder = _g729.Encoder()
    assert encoder.encode(raw[:1600]) + encoder.encode(raw[1600:]) == whole
    assert _g729.encode(raw[1600:]) != whole[100:]  # a fresh encoder starts elsewhere
    decoder = _g729.Decoder()
    assert decoder.decode(whole[:100]) + decoder.decode(whole[100:]) == _g729.decode(whole)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ("encode", ValueError, "PCM of 159 bytes is not a whole number of 160-byte frames"),
        ("decode", ValueError, "G.729 payload of 11 bytes is not a whole number of 10-byte frames"),
    ],
)
def test_lengths_that_are_not_whole_frames(call: str, error: type[Exception], message: str) -> None:
    from mss import _g729

    data = bytes(159 if call == "encode" else 11)
    with pytest.raises(error, match=re.escape(message)):
        getattr(_g729, call)(data)
    with pytest.raises(error, match=re.escape(message)):
        getattr(_g729.Encoder() if call == "encode" else _g729.Decoder(), call)(data)


def test_refused_buffers() -> None:
    from mss import _g729

    with pytest.raises(TypeError, match="PCM must be a bytes-like object, not int"):
        _g729.encode(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("G.729 payload must be a bytes-like object, not str")):
        _g729.decode("0123456789")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="PCM must be C-contiguous"):
        _g729.encode(np.zeros((2, 160), dtype=np.int16)[:, :80])
    too_many = bytes((_g729.MAX_FRAMES + 1) * _g729.FRAME_BYTES)
    with pytest.raises(ValueError, match=f"G.729 payload of {_g729.MAX_FRAMES + 1} frames is over the"):
        _g729.decode(too_many)


def test_the_tones_wrappers_speak_in_samples() -> None:
    with pytest.raises(LocalProtocolError, match=re.escape("81 samples are not whole 10 ms G.729 frames")):
        tones.encode_g729(np.zeros(81, dtype=np.int16))
    with pytest.raises(LocalProtocolError, match=re.escape("15 bytes are not whole 10-byte G.729 frames")):
        tones.decode_g729(bytes(15))
    with pytest.raises(LocalProtocolError, match="must be integers"):
        tones.encode_g729(np.zeros(80))
    assert tones.decode_g729(tones.encode_g729(sine(425, 0.01))).dtype == np.int16


# --- ringback played by a real relay session ------------------------------------------------------

#: Enough packets for one second of tone (the burst) at 20 or 30 ms, and a margin into the silence.
PACKETS = 55
#: Receive timeout per packet: 20 ms packets, so a long silence means the relay stopped playing.
RECV_TIMEOUT = 2.0


@pytest.mark.parametrize("ptime", [20, 30])
def test_relay_plays_g729_ringback_with_an_8_khz_clock(ptime: int) -> None:
    base = 20000 + (os.getpid() * 29 % 9000) // 4 * 4
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with Relay("127.0.0.1", base, base + 39) as relay, phone:
        phone.bind(("127.0.0.1", 0))
        phone.settimeout(RECV_TIMEOUT)
        port = phone.getsockname()[1]
        session = relay.open_session(bridged=False)
        carry_out_relay(session, cf.RelayRemote(leg="user1", host="127.0.0.1", port=port, rtcp_port=port + 1))
        carry_out_relay(session, cf.RelayPlay(leg="user1", codec="G729", payload_type=18, ptime=ptime))
        assert session.playing("a")
        packets = [phone.recv(2048) for _ in range(PACKETS)]
        session.close()
    headers = [struct.unpack("!BBHII", p[:12]) for p in packets]
    assert all(len(p) == 12 + ptime for p in packets)  # a 10-byte frame per 10 ms
    assert all(b0 == 0x80 for b0, *_ in headers)  # RTP version 2, no padding, extension or CSRC
    assert headers[0][1] == 0x80 | 18 and all(h[1] == 18 for h in headers[1:])  # marker on the first
    assert len({h[4] for h in headers}) == 1  # one SSRC
    assert all((b[2] - a[2]) % 65536 == 1 for a, b in itertools.pairwise(headers))
    assert all((b[3] - a[3]) % 2**32 == ptime * 8 for a, b in itertools.pairwise(headers))
    payload = b"".join(p[12:] for p in packets)
    assert payload == tones.ringback_frames("G729", ptime_ms=ptime)[: len(payload)]
    pcm = tones.decode_g729(payload[:1000])  # the first second: the burst
    assert abs(tones.dominant_frequency(pcm[800:7600]) - 425) < 2
