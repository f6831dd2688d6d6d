"""Build script: compiles the Cython relay (mss/_rtp.pyx), the SIP header cutter (mss/sip/_head.pyx)
and, when clang and libbpf's headers are found, the kernel fast path's BPF program (mss/bpf/).

Metadata lives in pyproject.toml.

The Cython compiler directives are on the first line of each .pyx, and only there.

The BPF object (mss/bpf/kfwd.bpf.o) is optional: without it mss installs and relays in userspace
(``[rtp] kernel_forwarding = auto`` says so in the log). ``MSS_BPF_CLANG`` names another clang.
"""

import os
import platform
import shutil
import subprocess
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BPF_SOURCE = "mss/bpf/kfwd.bpf.c"
BPF_OBJECT = "mss/bpf/kfwd.bpf.o"
# libbpf's helper definitions (Debian: libbpf-dev), included by the BPF program
BPF_HELPERS = "/usr/include/bpf/bpf_helpers.h"


def _say(message: str) -> None:
    print(f"mss setup: {message}", file=sys.stderr)


def build_bpf(out: str) -> None:
    """Compile the BPF program into ``out``, or say why not (mss then relays in userspace)."""
    clang = shutil.which(os.environ.get("MSS_BPF_CLANG") or "clang")
    if clang is None:
        _say("clang not found: the kernel fast path is not built (the relay runs in userspace)")
        return
    if not os.path.exists(BPF_HELPERS):
        _say(f"{BPF_HELPERS} not found (libbpf-dev): the kernel fast path is not built")
        return
    # <asm/types.h> of the build machine's architecture (Debian keeps it in a multiarch directory)
    arch = f"/usr/include/{platform.machine()}-linux-gnu"
    cmd = [clang, "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-I", arch, "-c", BPF_SOURCE,
           "-o", out]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        _say(f"the BPF program did not compile (the relay runs in userspace):\n{result.stderr}")
        return
    _say(f"built {out}")


class BuildExtWithBpf(build_ext):
    """build_ext, plus the BPF object next to the extensions (in place for editable installs)."""

    def run(self) -> None:
        super().run()
        build_bpf(BPF_OBJECT if self.inplace else os.path.join(self.build_lib, BPF_OBJECT))


extensions = [
    Extension(
        "mss._rtp",
        ["mss/_rtp.pyx"],
        # _rtp_uring.h: raw io_uring system calls over the kernel's own <linux/io_uring.h>;
        # _rtp_kfwd.h: the kernel fast path's map (mss/bpf/kfwd.h) through the bpf() system call
        include_dirs=["mss"],
        # (cythonize follows the .pxd and .pxi files _rtp.pyx cimports and includes by itself)
        depends=["mss/_rtp_uring.h", "mss/_rtp_kfwd.h", "mss/bpf/kfwd.h"],
        extra_compile_args=["-O2", "-fno-strict-aliasing"],
    ),
    # the SIP header section cut in C (mss.sip.message falls back to the same in Python without it)
    Extension("mss.sip._head", ["mss/sip/_head.pyx"], extra_compile_args=["-O2"]),
]

# --- G.729 ringback (optional): mss/_g729.pyx binds bcg729 when its headers are found ---------------
# (Debian libbcg729-dev). Without it mss installs and runs, and plays no ringback on a G.729 leg.
G729_HEADER = "/usr/include/bcg729/encoder.h"
if os.path.exists(G729_HEADER):
    extensions.append(Extension("mss._g729", ["mss/_g729.pyx"], libraries=["bcg729"],
                                extra_compile_args=["-O2"]))
else:
    _say(f"{G729_HEADER} not found (libbcg729-dev): no G.729 ringback (user1 hears silence)")
# --- end of G.729 ringback -------------------------------------------------------------------------

setup(ext_modules=cythonize(extensions), cmdclass={"build_ext": BuildExtWithBpf})
