"""Durable records of volumes and their mounts, behind one small interface."""

from .base import Conflict, MountRecord, Registry, VolumeRecord

__all__ = ["Conflict", "MountRecord", "Registry", "VolumeRecord"]
