"""The API client, and API errors turned into messages that say what to do next.

The client comes from chaostoolkit-kubernetes' ``create_k8s_api_client(secrets)`` so that
KUBECONFIG, ``KUBERNETES_CONTEXT`` and in-cluster config behave as Chaos Toolkit users already
expect. NB, two quirks of it (documented in docs/kubernetes.md): a colon-separated KUBECONFIG
(``a:b``) fails its existence check, so it falls through to ``KUBERNETES_HOST`` (default
``http://localhost``); in-cluster config is used only when ``CHAOSTOOLKIT_IN_POD=true``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from chaosk8s import create_k8s_api_client
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from chaosmem.errors import ChaosmemError

__all__ = ["REQUEST_TIMEOUT", "Api", "KubeError", "NotFound", "api_error", "connect"]

#: Seconds for one API request (connect, read): a hung API server must not hang the experiment.
REQUEST_TIMEOUT = (5.0, 30.0)


class KubeError(ChaosmemError):
    """The API server answered with an error (or not at all)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """What was asked for does not exist: a namespace, a pod, a container, a selector's match."""


class Api:
    """The typed API groups chaosmem uses, over one client."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)

    def call(self, method: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
        """Call a typed API method and return its raw JSON body.

        Raw, not model objects: models drop fields newer than the client, and kubernetes 37's
        strict model validation refuses them. NB: for a dict body the client sends PATCH as
        ``application/strategic-merge-patch+json`` (``rest.py`` turns its default json-patch into
        that), which is what merges ``containers`` by name.
        """
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
        except ApiException as exc:
            raise api_error(exc, what) from None
        except HTTPError as exc:
            host = getattr(self.client.configuration, "host", "?")
            raise KubeError(
                f"{what}: the API server at {host} did not answer ({type(exc).__name__}); "
                "check KUBECONFIG / KUBERNETES_CONTEXT (a change may or may not have landed)"
            ) from None
        return json.loads(response.data)


def api_error(exc: ApiException, what: str) -> KubeError:
    """A :class:`KubeError` carrying the API server's own message (its ``Status`` body)."""
    message, reason = str(exc.reason or ""), ""
    try:
        status = json.loads(exc.body or "{}")
        message = status.get("message") or message
        reason = status.get("reason") or ""
    except (ValueError, AttributeError):
        pass
    kind = NotFound if exc.status == 404 else KubeError
    return kind(f"{what}: {exc.status} {message}", status=exc.status, reason=reason)


def connect(secrets: Mapping[str, Any] | None = None) -> Api:
    """An :class:`Api` from the user's kubeconfig, context or in-cluster config."""
    try:
        return Api(create_k8s_api_client(dict(secrets) if secrets else None))
    except Exception as exc:  # config loading raises many kinds; all mean the same to the user
        raise ChaosmemError(
            f"cannot build a Kubernetes client ({type(exc).__name__}: {exc}); set KUBECONFIG to "
            "one readable file (not a colon-separated list), KUBERNETES_CONTEXT to pick a "
            "context, or CHAOSTOOLKIT_IN_POD=true inside a pod"
        ) from None
