"""Sockets and the HTTP server: how requests reach the app."""
