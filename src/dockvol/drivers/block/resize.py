"""Growing a volume: the image and its filesystem, attached or not, so that ``df`` shows at
least the new size (see sizing.py). Shrinking is refused."""

from __future__ import annotations

from dockvol import DriverError, Volume

from . import grow, loop
from .attach import Attacher
from .layout import fs_of, human, nominal_size, os_errors, round_up


def resize(attacher: Attacher, volume: Volume, size: int) -> None:
    layout, state = attacher.layout, attacher.state
    fs = fs_of(volume)
    image = layout.image(volume)
    target = round_up(size)
    current = nominal_size(volume)
    with os_errors(
        f"reading the image {image}", "the volume's image is missing: recreate the volume"
    ):
        image.stat()
    if target < current:
        raise DriverError(
            f"volume {volume.name!r} is {human(current)}; shrinking is not supported: give a "
            f"size of at least {human(current)}"
        )
    loops = loop.backing(image)
    for lp in loops:
        loop.refresh_capacity(lp.device)
    if state.attachment(volume.key) is not None:
        # Growing needs no key: an encrypted volume is not unlocked again for it.
        att = attacher.attach_and_mount(volume, unlock=False)
        grow.online(volume, fs, att, image, target)
    elif fs.name == "ext4" and not loops:
        grow.ext4_offline(volume, image, target, attacher.scratch(volume))
    else:
        # Not in use: mount it for the time of the resize (xfs grows only while mounted; an
        # attached ext4 has a live filesystem that only an online resize may touch).
        att = attacher.attach_and_mount(volume, record=False, unlock=False)
        try:
            grow.online(volume, fs, att, image, target)
        finally:
            attacher.release(volume, att.mountpoint, att.device, att.devnum)
