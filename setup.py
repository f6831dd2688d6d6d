"""Build script: compiles the Cython relay (mss/_rtp.pyx); metadata lives in pyproject.toml.

The Cython compiler directives are on the first line of mss/_rtp.pyx, and only there.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "mss._rtp",
        ["mss/_rtp.pyx"],
        # _rtp_uring.h: raw io_uring system calls over the kernel's own <linux/io_uring.h>
        include_dirs=["mss"],
        # what _rtp.pyx cimports and includes: a change to one rebuilds it, and sdists ship them
        depends=[
            "mss/_rtp_decl.pxd",
            "mss/_rtp_uring.pxi",
            "mss/_rtp_epoll.pxi",
            "mss/_rtp_uring.h",
        ],
        extra_compile_args=["-O2", "-fno-strict-aliasing"],
    )
]

setup(ext_modules=cythonize(extensions))
