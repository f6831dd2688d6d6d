# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""G.729 through bcg729 (Belledonne Communications' ITU-T G.729 / Annex A codec, Debian libbcg729-dev).

mss uses it for one thing: to encode its ringback once, so that a user1 who chose G.729 hears it.
The decoder is here to check what a phone received. A frame is 10 ms: 80 16-bit samples at 8 kHz
in, 10 bytes out (RFC 3551 §4.5.6). The encoder runs with VAD off (no Annex B): every frame is a
speech frame, so nothing depends on the receiver's comfort-noise support.

Both directions take and give 16-bit little-endian samples (numpy's ``"<i2"``); ``mss.tones`` is
the only user in mss. See ``mss/_g729.pyi`` for the typed surface.
"""

from libc.stdint cimport int16_t, uint8_t

cdef extern from "bcg729/encoder.h" nogil:
    ctypedef struct bcg729EncoderChannelContextStruct:
        pass
    bcg729EncoderChannelContextStruct *initBcg729EncoderChannel(uint8_t enableVAD)
    void closeBcg729EncoderChannel(bcg729EncoderChannelContextStruct *ctx)
    void bcg729Encoder(bcg729EncoderChannelContextStruct *ctx, const int16_t inputFrame[],
                       uint8_t bitStream[], uint8_t *bitStreamLength)

cdef extern from "bcg729/decoder.h" nogil:
    ctypedef struct bcg729DecoderChannelContextStruct:
        pass
    bcg729DecoderChannelContextStruct *initBcg729DecoderChannel()
    void closeBcg729DecoderChannel(bcg729DecoderChannelContextStruct *ctx)
    void bcg729Decoder(bcg729DecoderChannelContextStruct *ctx, const uint8_t bitStream[],
                       uint8_t bitStreamLength, uint8_t frameErasureFlag, uint8_t SIDFrameFlag,
                       uint8_t rfc3389PayloadFlag, int16_t signal[])

cdef enum:
    _SAMPLES = 80  # samples in one 10 ms frame at 8 kHz
    _PCM_BYTES = 160  # bytes of 16-bit PCM in one frame
    _G729_BYTES = 10  # bytes of one encoded frame (80 bits)
    # One call never takes more than an hour of audio (360000 frames, 57.6 MB of PCM): a bound on
    # what a caller can make this allocate by mistake, far above a ringback cadence.
    _MAX_FRAMES = 360000

#: Samples in one 10 ms frame at 8 kHz.
FRAME_SAMPLES = _SAMPLES
#: Bytes of 16-bit PCM in one frame.
PCM_FRAME_BYTES = _PCM_BYTES
#: Bytes of one encoded G.729 frame (80 bits).
FRAME_BYTES = _G729_BYTES
#: The most frames one call encodes or decodes (an hour of audio).
MAX_FRAMES = _MAX_FRAMES

cdef const uint8_t[::1] _bytes_view(object data, str what):
    """The bytes of a C-contiguous buffer, whatever its item format (numpy int16 included)."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, not {type(data).__name__}") from None
    if not view.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


cdef Py_ssize_t _frames(Py_ssize_t length, Py_ssize_t unit, str what) except -1:
    if length % unit:
        raise ValueError(f"{what} of {length} bytes is not a whole number of {unit}-byte frames")
    if length // unit > _MAX_FRAMES:
        raise ValueError(f"{what} of {length // unit} frames is over the {_MAX_FRAMES} frame limit")
    return length // unit


cdef class Encoder:
    """One G.729 encoder channel (VAD off); keeps its state from one :meth:`encode` to the next."""

    cdef bcg729EncoderChannelContextStruct *_ctx

    def __cinit__(self):
        self._ctx = initBcg729EncoderChannel(0)
        if self._ctx is NULL:
            raise MemoryError("bcg729 could not make an encoder channel")

    def __dealloc__(self):
        if self._ctx is not NULL:
            closeBcg729EncoderChannel(self._ctx)

    def encode(self, pcm) -> bytes:
        """G.729 frames (10 bytes per 80 samples) of 16-bit 8 kHz ``pcm``."""
        cdef const uint8_t[::1] src = _bytes_view(pcm, "PCM")
        cdef Py_ssize_t n = _frames(src.shape[0], _PCM_BYTES, "PCM")
        cdef bytearray out = bytearray(n * _G729_BYTES)
        cdef uint8_t[::1] dst = out
        cdef int16_t frame[_SAMPLES]
        cdef uint8_t length = 0
        cdef Py_ssize_t i
        cdef Py_ssize_t k
        if n == 0:
            return b""
        with nogil:
            for i in range(n):
                # copied sample by sample: the caller's buffer need not be 2-byte aligned
                for k in range(_SAMPLES):
                    frame[k] = <int16_t>(src[i * _PCM_BYTES + 2 * k]
                                         | (src[i * _PCM_BYTES + 2 * k + 1] << 8))
                bcg729Encoder(self._ctx, frame, &dst[i * _G729_BYTES], &length)
                if length != _G729_BYTES:
                    break
        if length != _G729_BYTES:
            raise RuntimeError(f"bcg729 gave a {length}-byte frame with VAD off (10 expected)")
        return bytes(out)


cdef class Decoder:
    """One G.729 decoder channel; keeps its state from one :meth:`decode` to the next."""

    cdef bcg729DecoderChannelContextStruct *_ctx

    def __cinit__(self):
        self._ctx = initBcg729DecoderChannel()
        if self._ctx is NULL:
            raise MemoryError("bcg729 could not make a decoder channel")

    def __dealloc__(self):
        if self._ctx is not NULL:
            closeBcg729DecoderChannel(self._ctx)

    def decode(self, frames) -> bytes:
        """16-bit 8 kHz PCM (80 samples per 10 bytes) of G.729 speech ``frames``."""
        cdef const uint8_t[::1] src = _bytes_view(frames, "G.729 payload")
        cdef Py_ssize_t n = _frames(src.shape[0], _G729_BYTES, "G.729 payload")
        cdef bytearray out = bytearray(n * _PCM_BYTES)
        cdef uint8_t[::1] dst = out
        cdef int16_t signal[_SAMPLES]
        cdef Py_ssize_t i
        cdef Py_ssize_t k
        if n == 0:
            return b""
        with nogil:
            for i in range(n):
                bcg729Decoder(self._ctx, &src[i * _G729_BYTES], _G729_BYTES, 0, 0, 0, signal)
                for k in range(_SAMPLES):
                    dst[i * _PCM_BYTES + 2 * k] = <uint8_t>(<unsigned short>signal[k] & 0xFF)
                    dst[i * _PCM_BYTES + 2 * k + 1] = <uint8_t>(<unsigned short>signal[k] >> 8)
        return bytes(out)


def encode(pcm) -> bytes:
    """G.729 frames of ``pcm`` from a fresh encoder (see :meth:`Encoder.encode`)."""
    return Encoder().encode(pcm)


def decode(frames) -> bytes:
    """PCM of ``frames`` from a fresh decoder (see :meth:`Decoder.decode`)."""
    return Decoder().decode(frames)
