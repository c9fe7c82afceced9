"""Reference drivers. ``dockvol serve --driver NAME`` loads ``dockvol.drivers.NAME.DRIVER``."""
