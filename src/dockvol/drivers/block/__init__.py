"""The ``block`` driver: size-limited volumes, each a sparse image with its own filesystem,
attached through a loop device on first mount (``dockvol serve --driver block``)."""

from .driver import BlockDriver

#: The class ``dockvol serve --driver block`` runs.
DRIVER = BlockDriver

__all__ = ["DRIVER", "BlockDriver"]
