"""Talking to the Docker engine a host-service plugin serves (optional: ``--docker-host``)."""
