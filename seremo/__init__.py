"""seremo: speech emotion recognition at cluster scale on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seremo")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
