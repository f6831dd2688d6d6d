# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The SIP header section in its common form, cut in C: the hot half of :func:`mss.sip.message.parse_message`.

:func:`split_head` does what ``split_message`` + ``_parse_headers`` + the first-value index do in
mss.sip.message, for a message in the form real peers send: every line ends in CRLF, no line is
folded, every header line has a colon and a name seen before (in the name cache). For anything else
it returns None and the caller runs the Python code, which handles the rarer forms and raises the
exact error; so this module never decides what is an error, and its result, when it gives one, is
exactly what the Python code gives (tests/test_sip_parse_fast.py compares them).

Pieces are cut at ASCII bytes (CR, LF, ":", SP, HTAB), which never fall inside a UTF-8 sequence, so
decoding each piece with ``surrogateescape`` gives the same text as decoding the whole head and
cutting it.
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr

# mss.sip.message.MAX_MESSAGE_SIZE and MAX_HEADERS (the caller refuses what is past them)
cdef Py_ssize_t _MAX_MESSAGE_SIZE = 65535
cdef Py_ssize_t _MAX_HEADERS = 256


cdef inline bint _is_ws(char c) noexcept:
    return c == 32 or c == 9  # SP, HTAB


cdef inline str _text(const char* p, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(p, n, "surrogateescape")


def split_head(bytes data, dict names):
    """``(start line, [(key, spelling, value)], {key: first value}, unique, rest)``, or None.

    ``names`` maps a header name as written to its ``(key, spelling)`` (mss.sip.message's name
    cache); ``unique`` says no key appears twice; ``rest`` is what follows the empty line.
    """
    cdef const char* p = data
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t end, i, line_start, line_end, colon, vs, ve
    cdef Py_ssize_t count = 0
    cdef const char* lf
    cdef const char* sep
    if n > _MAX_MESSAGE_SIZE:
        return None
    while start + 1 < n and p[start] == 13 and p[start + 1] == 10:  # RFC 3261 §7.5: leading CRLFs
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return None
    # Every LF of the head ends a CRLF and no line starts with white space (a folded line).
    i = start
    while i < end:
        lf = <const char*>memchr(p + i, 10, end - i)
        if lf == NULL:
            break
        i = lf - p
        if i == start or p[i - 1] != 13 or _is_ws(p[i + 1]):  # p[i + 1] is at most p[end]
            return None
        i += 1
    lf = <const char*>memchr(p + start, 10, end - start)
    line_end = lf - p - 1 if lf != NULL else end
    if line_end == start:
        return None
    start_line = _text(p + start, line_end - start)
    items = []
    index = {}
    while lf != NULL:
        line_start = line_end + 2
        lf = <const char*>memchr(p + line_start, 10, end - line_start)
        line_end = lf - p - 1 if lf != NULL else end
        count += 1
        if count > _MAX_HEADERS:
            return None
        sep = <const char*>memchr(p + line_start, 58, line_end - line_start)  # ":"
        if sep == NULL:
            return None
        colon = sep - p
        known = names.get(_text(p + line_start, colon - line_start))
        if known is None:
            return None
        vs = colon + 1
        ve = line_end
        while vs < ve and _is_ws(p[vs]):
            vs += 1
        while ve > vs and _is_ws(p[ve - 1]):
            ve -= 1
        value = _text(p + vs, ve - vs)
        key = (<tuple?>known)[0]
        items.append((key, (<tuple?>known)[1], value))
        if key not in index:
            index[key] = value
    return start_line, items, index, len(index) == len(items), data[end + 4 :]
