"""The CSI front end: Identity, Controller and Node services over the same volume service.

Only this package knows CSI (gRPC codes, access modes, topology, staging and target paths);
the volume service and the drivers stay as the Docker front end uses them. ``csi.proto`` is
the project's own copy of the spec's messages (v1.9.0, field-for-field); ``csi_pb2*`` are
generated from it by ``python -m dockvol._csi.generate``.
"""
