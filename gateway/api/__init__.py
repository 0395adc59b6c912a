"""The Conversations REST API and event stream, mounted under ``/v1``."""

from gateway.api.routes import add_api_routes

__all__ = ["add_api_routes"]
