"""The timeline's ``replicas`` source: the HPA named in ``configuration["chaosmem_hpa"]``.

Registered with :func:`chaosmem.timeline.register_source` when this module is imported (the
control does); it costs nothing in a run without ``chaosmem_hpa``. The kubernetes client is
imported only when there is an HPA to watch.
"""

from __future__ import annotations

from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.timeline import Source, SourceSetup, register_source

__all__ = ["HPA_KEY", "ReplicasSource"]

HPA_KEY = "chaosmem_hpa"


class ReplicasSource:
    key = "replicas"

    def __init__(self, namespace: str, name: str, configuration: Any) -> None:
        from chaosmem.kube.client import connect
        from chaosmem.targets.kubernetes import client_settings

        self.namespace, self.name = namespace, name
        self.api = connect(client_settings(configuration))

    def sample(self) -> dict[str, int]:
        from chaosmem.kube.hpa import read_replicas

        return read_replicas(self.api, self.namespace, self.name)


@register_source("replicas")
def _replicas(setup: SourceSetup) -> Source | None:
    spec = (setup.configuration or {}).get(HPA_KEY)
    if spec is None:
        return None
    if not isinstance(spec, dict) or not all(
        isinstance(spec.get(k), str) and spec.get(k) for k in ("namespace", "name")
    ):
        raise InvalidArgument(
            HPA_KEY, spec, 'an object such as {"namespace": "shop", "name": "orders"}'
        )
    return ReplicasSource(spec["namespace"], spec["name"], setup.configuration)
