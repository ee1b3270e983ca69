"""eva-runtime: deployment runtime and training package for video-world-model robot policies (EVA)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eva-runtime")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
