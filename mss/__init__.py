"""mss: a SIP callback server and media relay for carriers.

Importing the package has no side effects; the command line lives in :mod:`mss.cli`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
