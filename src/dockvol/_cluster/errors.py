"""The cluster registry's refusals, as classes a front end can tell apart.

Each is a :class:`DriverError` too, so every caller that catches those, and Docker's front end
(which sends any refusal as ``{"Err": message}``), sees no change; CSI maps the class to the
status code that tells the orchestrator what to do (``dockvol._csi.errors``).

They are not in the public tree (``dockvol._sdk.errors``): only the etcd registry raises them
(a driver at most passes one on from ``HostContext.cluster.acquire``), and a driver author has
no use for them; a public class would be a promise to drivers that nothing here needs yet.
"""

from __future__ import annotations

from .._sdk.errors import DriverError, InUse


class HeldElsewhere(InUse, DriverError):
    """Another node holds the single-node volume: "in use" for every front end (CSI answers
    FAILED_PRECONDITION, not INTERNAL), and still a DriverError for the callers that catch those."""


class InUseElsewhere(InUse, DriverError):
    """Containers on other nodes use the volume, so it cannot be removed: "in use" for every
    front end (CSI's DeleteVolume answers FAILED_PRECONDITION), as :class:`HeldElsewhere`."""


class EtcdUnreachable(DriverError):
    """This node cannot reach etcd (or its lease lapsed), so it cannot do what needs the
    cluster: a passing condition, the same request succeeds once etcd answers (CSI UNAVAILABLE)."""


class Contended(DriverError):
    """Another node changed the same volume while this one did: nothing is wrong with the
    request, it lost a race and may be sent again (CSI ABORTED)."""
