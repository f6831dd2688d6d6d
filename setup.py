"""Build script: compiles the Cython relay (mss/_rtp.pyx), the SIP header cutter (mss/sip/_head.pyx),
the control plane's hot modules from their .py sources (mss/_compiled.py) and, when clang and libbpf's
headers are found, the kernel fast path's BPF program (mss/bpf/).

Metadata lives in pyproject.toml.

The Cython compiler directives are on the first line of each .pyx, and only there (the compiled .py
modules take one, below).

The BPF object (mss/bpf/kfwd.bpf.o) is optional: without it mss installs and relays in userspace
(``[rtp] kernel_forwarding = auto`` says so in the log). ``MSS_BPF_CLANG`` names another clang.
"""

import hashlib
import json
import os
import platform
import runpy
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


# --- the control plane's hot modules, compiled from their .py (mss/_compiled.py says which and why) --
# MSS_PURE_PYTHON=1 builds without them (a quicker build; the same behaviour, more CPU per callback).
COMPILED = [] if os.environ.get("MSS_PURE_PYTHON") == "1" else runpy.run_path("mss/_compiled.py")["COMPILED"]
COMPILED_MANIFEST = "mss/_compiled.json"


def _source_of(module: str) -> str:
    return module.replace(".", "/") + ".py"


def write_manifest(out: str) -> None:
    """Record each compiled module's source digest: mss runs an extension only while they match."""
    digests = {}
    for module in COMPILED:
        with open(_source_of(module), "rb") as source:
            digests[module] = hashlib.sha256(source.read()).hexdigest()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as manifest:
        json.dump(digests, manifest, indent=1, sort_keys=True)


class BuildExtWithBpf(build_ext):
    """build_ext, plus the BPF object and the compiled modules' manifest next to the extensions (in
    place for editable installs)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:  # the C compilers of the extensions, one per CPU
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        super().run()
        build_bpf(BPF_OBJECT if self.inplace else os.path.join(self.build_lib, BPF_OBJECT))
        write_manifest(COMPILED_MANIFEST if self.inplace else os.path.join(self.build_lib, COMPILED_MANIFEST))


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

# Plain Python compiled as it is: its annotations stay hints (with annotation typing an ``int``
# parameter would turn True into 1 and reject "5" with a TypeError, which a check of ours must say).
compiled = cythonize(
    [Extension(module, [_source_of(module)], extra_compile_args=["-O2"]) for module in COMPILED],
    compiler_directives={"annotation_typing": False},
    nthreads=os.cpu_count() or 1,
)

setup(
    ext_modules=cythonize(extensions, nthreads=os.cpu_count() or 1) + compiled,
    cmdclass={"build_ext": BuildExtWithBpf},
)
