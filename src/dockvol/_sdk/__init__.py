"""The driver SDK: what a plugin author sees (re-exported by ``dockvol``)."""
