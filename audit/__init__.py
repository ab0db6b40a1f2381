"""msae-audit: bias auditing of CLIP-embedding classifiers with Matryoshka sparse autoencoders."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("msae-audit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
