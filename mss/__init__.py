"""mss: a SIP callback server and media relay for carriers.

Importing the package does one thing besides: it makes sure a module the build compiled runs only
while its source is unchanged (:mod:`mss._compiled`). The command line lives in :mod:`mss.cli`.
"""

from mss import _compiled

__all__ = ["__version__"]

__version__ = "0.1.0"

_compiled.install()
