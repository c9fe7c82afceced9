"""The wire: Docker's plugin protocol over HTTP, as an ASGI application."""
