"""roomkeeper: a self-hosted WebRTC signaling server (SSE down, HTTP POST up)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("roomkeeper")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
