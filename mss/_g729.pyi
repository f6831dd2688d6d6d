"""Typed surface of the G.729 binding (``mss/_g729.pyx``, over bcg729); ``mss.tones`` is its only user.

PCM is 16-bit little-endian samples at 8 kHz (numpy ``"<i2"``) in any C-contiguous buffer; a G.729
frame is 10 ms: 80 samples, 10 bytes. Lengths that are not whole frames raise ``ValueError``, a
non-buffer ``TypeError``. Built only when bcg729's headers are found (Debian ``libbcg729-dev``).
"""

from typing import Any, TypeAlias

import numpy as np
from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

#: What the functions take: bytes, bytearray, memoryview, a numpy array (numpy declares its
#: buffer protocol to type checkers from Python 3.12 only).
Data: TypeAlias = Buffer | np.ndarray[Any, Any]

#: Samples in one 10 ms frame at 8 kHz.
FRAME_SAMPLES: int
#: Bytes of 16-bit PCM in one frame (160).
PCM_FRAME_BYTES: int
#: Bytes of one encoded frame (10).
FRAME_BYTES: int
#: The most frames one call encodes or decodes (an hour of audio).
MAX_FRAMES: int

class Encoder:
    """One encoder channel with VAD off (no Annex B: every frame is speech); stateful across calls."""

    def __init__(self) -> None: ...
    def encode(self, pcm: Data) -> bytes:
        """G.729 frames (10 bytes per 80 samples) of ``pcm``."""

class Decoder:
    """One decoder channel; stateful across calls."""

    def __init__(self) -> None: ...
    def decode(self, frames: Data) -> bytes:
        """16-bit little-endian PCM (80 samples per 10-byte frame) of G.729 speech ``frames``."""

def encode(pcm: Data) -> bytes:
    """G.729 frames of ``pcm`` from a fresh encoder."""

def decode(frames: Data) -> bytes:
    """PCM of ``frames`` from a fresh decoder."""
