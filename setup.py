"""Build script: compiles the Cython relay (mss/_rtp.pyx) and SIP header cutter (mss/sip/_head.pyx).

Metadata lives in pyproject.toml.

The Cython compiler directives are on the first line of each .pyx, and only there.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "mss._rtp",
        ["mss/_rtp.pyx"],
        # _rtp_uring.h: raw io_uring system calls over the kernel's own <linux/io_uring.h>
        include_dirs=["mss"],
        # (cythonize follows the .pxd and .pxi files _rtp.pyx cimports and includes by itself)
        depends=["mss/_rtp_uring.h"],
        extra_compile_args=["-O2", "-fno-strict-aliasing"],
    ),
    # the SIP header section cut in C (mss.sip.message falls back to the same in Python without it)
    Extension("mss.sip._head", ["mss/sip/_head.pyx"], extra_compile_args=["-O2"]),
]

setup(ext_modules=cythonize(extensions))
