"""scaug's version, read from the installed package's metadata.

Modules inside the package import it from here, never from the package's ``__init__``; it imports
nothing heavy, so ``scaug --help`` stays instant.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scaug")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
