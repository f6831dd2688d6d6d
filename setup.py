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
        # (cythonize follows the .pxd and .pxi files _rtp.pyx cimports and includes by itself)
        depends=["mss/_rtp_uring.h"],
        extra_compile_args=["-O2", "-fno-strict-aliasing"],
    )
]

setup(ext_modules=cythonize(extensions))
