"""A local XMTP node (the v3 gRPC API libxmtp speaks) for offline development and tests."""

from gateway.xmtp.devnode.server import DevNode

__all__ = ["DevNode"]
