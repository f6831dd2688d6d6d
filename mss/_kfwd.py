"""The kernel fast path's loader: the BPF program of ``mss/bpf/`` through libbpf, attached by tcx.

:func:`load` opens the object setup.py built (``mss/bpf/kfwd.bpf.o``) with libbpf (``libbpf.so.1``,
through ctypes: nothing to compile, and without libbpf mss simply relays in userspace), sizes its
map, loads it and attaches the program to the ingress of each given interface with a **tcx link**
(``BPF_LINK_CREATE`` with ``BPF_TCX_INGRESS``, Linux 6.6 and later). The link is a file descriptor
of this process, never pinned: closing it, or the process dying in any way, detaches the program,
and the map goes with the last reference, so a crash leaves nothing behind and there is nothing to
clean up at start. Debian 12's libbpf (1.1) has no ``bpf_program__attach_tcx`` (1.3), but its
``bpf_link_create`` passes the attach type through to the kernel, which is all a tcx link needs;
the netlink TC hook of older libbpf (``bpf_tc_attach``) would outlive a crash.

tcx runs every attached program in turn: this one passes what it does not forward on with
``TC_ACT_UNSPEC`` (the next program), so several relays (or processes) share an interface.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mss.errors import RelayError

__all__ = ["OBJECT", "Entry", "KernelPath", "KernelPathUnavailable", "entries", "link_alive", "load"]

#: The compiled program (setup.py builds it when clang and libbpf-dev are found).
OBJECT = Path(__file__).parent / "bpf" / "kfwd.bpf.o"

#: Names inside the object (mss/bpf/kfwd.h).
_MAP = b"kf_entries"
_PROG = b"kf_ingress"

#: ``BPF_TCX_INGRESS`` of ``enum bpf_attach_type`` (Linux 6.6; Debian 12's headers predate it).
BPF_TCX_INGRESS = 46

#: Map entries a relay session needs: RTP and RTCP, each way.
ENTRIES_PER_SESSION = 4


class KernelPathUnavailable(RelayError):
    """The kernel fast path cannot run here; the message says why (and what would fix it)."""


_lib: ctypes.CDLL | None = None


def _libbpf() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as exc:
            raise KernelPathUnavailable(f"libbpf is not installed (libbpf1): {exc}") from None
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        for name, restype, argtypes in (
            ("libbpf_set_print", vp, [vp]),
            ("bpf_object__open_file", vp, [cp, vp]),
            ("bpf_object__find_map_by_name", vp, [vp, cp]),
            ("bpf_map__set_max_entries", i, [vp, ctypes.c_uint32]),
            ("bpf_object__load", i, [vp]),
            ("bpf_object__find_program_by_name", vp, [vp, cp]),
            ("bpf_program__fd", i, [vp]),
            ("bpf_map__fd", i, [vp]),
            ("bpf_link_create", i, [i, i, i, vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
            ("bpf_map_lookup_elem", i, [i, vp, vp]),
            ("bpf_obj_get_info_by_fd", i, [i, vp, ctypes.POINTER(ctypes.c_uint32)]),
            ("bpf_link_get_fd_by_id", i, [ctypes.c_uint32]),
            ("bpf_map_get_next_id", i, [ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]),
            ("bpf_map_get_fd_by_id", i, [ctypes.c_uint32]),
            ("bpf_map_get_next_key", i, [i, vp, vp]),
        ):
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise KernelPathUnavailable(f"this libbpf has no {name}") from None
            fn.restype = restype
            fn.argtypes = argtypes
        lib.libbpf_set_print(None)  # its messages would go to stderr; the errors say enough
        _lib = lib
    return _lib


def _why(err: int, step: str) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return f"{step}: not permitted (needs CAP_BPF and CAP_NET_ADMIN, or root)"
    if step.startswith("attach") and err in (errno.EINVAL, errno.EOPNOTSUPP):
        return f"{step}: this kernel has no tcx ingress links (Linux 6.6 or later)"
    return f"{step}: {os.strerror(err)}"


class KernelPath:
    """The loaded program, its map and its tcx link; all of it ends with :meth:`close` or the
    process."""

    def __init__(self, obj: int, map_fd: int, links: dict[int, int], max_entries: int) -> None:
        self._obj: int | None = obj
        self.map_fd = map_fd
        """The map's descriptor (mss/bpf/kfwd.h), valid until :meth:`close`."""
        self.links = links
        """Interface index -> the descriptor of the tcx link on its ingress (closing it detaches)."""
        self.max_entries = max_entries
        """The map's size."""

    @property
    def link_ids(self) -> list[int]:
        """The tcx links' ids (``bpftool link show`` lists them while they live)."""
        ids = []
        for fd in self.links.values():
            info = (ctypes.c_uint32 * 16)()  # struct bpf_link_info begins: type, id, prog_id
            size = ctypes.c_uint32(ctypes.sizeof(info))
            err = _libbpf().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size))
            if err < 0:
                raise KernelPathUnavailable(_why(-err, "link info"))
            ids.append(int(info[1]))
        return ids

    def put(self, key: bytes, value: bytes) -> None:
        """Write one map entry (``struct kf_key`` and ``struct kf_entry`` as bytes): the relay
        writes its own from C; this is for checks and tools."""
        err = _libbpf().bpf_map_update_elem(self.map_fd, key, value, 0)
        if err < 0:
            raise RelayError(f"map update: {os.strerror(-err)}")

    def get(self, key: bytes, size: int) -> bytes | None:
        """Read one map entry of ``size`` bytes, or None when there is none."""
        out = ctypes.create_string_buffer(size)
        err = _libbpf().bpf_map_lookup_elem(self.map_fd, key, out)
        if err == -errno.ENOENT:
            return None
        if err < 0:
            raise RelayError(f"map lookup: {os.strerror(-err)}")
        return out.raw

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._obj is None

    def close(self) -> None:
        """Detach the program and free the map. Idempotent."""
        obj, self._obj = self._obj, None
        if obj is not None:
            for fd in self.links.values():
                os.close(fd)
            _libbpf().bpf_object__close(obj)

    def __del__(self) -> None:
        if getattr(self, "_obj", None) is not None:
            self.close()


def load(ifindexes: Iterable[int], sessions: int, *, path: Path = OBJECT) -> KernelPath:
    """Load the program for up to ``sessions`` relay sessions and attach it to the ingress of each
    interface of ``ifindexes``; raises :class:`KernelPathUnavailable` with the reason when it
    cannot (and leaves nothing attached)."""
    if not path.exists():
        raise KernelPathUnavailable(
            f"the BPF program was not built ({path.name} is missing: clang and libbpf-dev were not"
            " found when mss was installed)"
        )
    lib = _libbpf()
    max_entries = max(1, sessions) * ENTRIES_PER_SESSION
    obj = lib.bpf_object__open_file(str(path).encode(), None)
    if not obj:
        raise KernelPathUnavailable(_why(ctypes.get_errno(), f"open {path.name}"))
    links: dict[int, int] = {}
    try:
        bpf_map = lib.bpf_object__find_map_by_name(obj, _MAP)
        prog = lib.bpf_object__find_program_by_name(obj, _PROG)
        if not bpf_map or not prog:
            raise KernelPathUnavailable(f"{path.name} is not mss's kernel fast path")
        err = lib.bpf_map__set_max_entries(bpf_map, max_entries)
        if err < 0:
            raise KernelPathUnavailable(_why(-err, "size the map"))
        err = lib.bpf_object__load(obj)
        if err < 0:
            raise KernelPathUnavailable(_why(-err, "load"))
        for ifindex in dict.fromkeys(ifindexes):
            link = lib.bpf_link_create(lib.bpf_program__fd(prog), ifindex, BPF_TCX_INGRESS, None)
            if link < 0:
                raise KernelPathUnavailable(_why(-link, f"attach to interface {ifindex}"))
            links[ifindex] = link
    except BaseException:
        for fd in links.values():
            os.close(fd)
        lib.bpf_object__close(obj)
        raise
    return KernelPath(obj, lib.bpf_map__fd(bpf_map), links, max_entries)


def link_alive(link_id: int) -> bool:
    """True while a BPF link of this id exists (in any process)."""
    fd = _libbpf().bpf_link_get_fd_by_id(link_id)
    if fd < 0:
        return False
    os.close(fd)
    return True


# struct kf_key and the statistics of struct kf_entry (mss/bpf/kfwd.h), for entries()
_KEY = struct.Struct("=BB2s16s")
_ENTRY_HEAD = struct.Struct("=48x6xBB8x5Q")
_ENTRY_SIZE = 272
#: Map ids looked at by entries() at most: every BPF map on the machine, bounded.
MAX_MAPS = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One forwarded direction as the kernel holds it (see mss/bpf/kfwd.h)."""

    address: str
    """The relay's address the packets are sent to."""
    port: int
    """The relay's port the packets are sent to."""
    rtcp: bool
    """An RTCP entry."""
    packets: int
    """Packets the kernel forwarded for it."""
    bytes: int
    """Their UDP payload bytes."""


def _maps_of(pid: int) -> set[int]:
    """The ids of the BPF maps process ``pid`` holds a descriptor of (its /proc fdinfo)."""
    ids: set[int] = set()
    base = Path(f"/proc/{pid}/fdinfo")
    try:
        infos = list(base.iterdir())
    except OSError:
        return ids  # no such process (any more)
    for info in infos:
        try:
            text = info.read_text()
        except OSError:
            continue  # closed meanwhile
        for line in text.splitlines():
            if line.startswith("map_id:"):
                ids.add(int(line.split()[1]))
    return ids


def entries(pid: int | None = None) -> list[Entry]:
    """Every entry of every mss relay's kernel path on this machine, or of the one in process
    ``pid`` (a diagnostic: which relay ports the kernel forwards for, and how much)."""
    lib = _libbpf()
    only = None if pid is None else _maps_of(pid)
    found: list[Entry] = []
    map_id = ctypes.c_uint32(0)
    for _ in range(MAX_MAPS):
        if lib.bpf_map_get_next_id(map_id.value, ctypes.byref(map_id)) < 0:
            break
        if only is not None and map_id.value not in only:
            continue
        fd = lib.bpf_map_get_fd_by_id(map_id.value)
        if fd < 0:
            continue
        try:
            info = ctypes.create_string_buffer(80)  # struct bpf_map_info: the name at offset 24
            size = ctypes.c_uint32(80)
            if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) < 0:
                continue
            if info.raw[24:40].rstrip(b"\0") != _MAP:
                continue
            found.extend(_read_map(lib, fd))
        finally:
            os.close(fd)
    return found


def _read_map(lib: ctypes.CDLL, fd: int) -> list[Entry]:
    out: list[Entry] = []
    key = ctypes.create_string_buffer(_KEY.size)
    value = ctypes.create_string_buffer(_ENTRY_SIZE)
    prev: ctypes.Array[ctypes.c_char] | None = None
    for _ in range(1 << 22):  # bounded: no map of mss holds more entries
        if lib.bpf_map_get_next_key(fd, prev, key) < 0:
            break
        prev = ctypes.create_string_buffer(key.raw, _KEY.size)
        if lib.bpf_map_lookup_elem(fd, key, value) < 0:
            continue
        family, _, port, addr = _KEY.unpack(key.raw)
        rtcp, _, packets, nbytes, *_ = _ENTRY_HEAD.unpack_from(value.raw)
        ip = ipaddress.IPv4Address(addr[:4]) if family == 4 else ipaddress.IPv6Address(addr)
        out.append(Entry(address=str(ip), port=struct.unpack("!H", port)[0], rtcp=bool(rtcp),
                         packets=packets, bytes=nbytes))
    return out
