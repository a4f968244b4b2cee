"""Prometheus: PromQL probes (a value, a status ratio, OOM kills from kube-state-metrics) and a
timeline source that records chosen queries over the run.

``client`` speaks to the server (settings from configuration and secrets, distinct errors),
``promql`` builds and validates the queries, ``probes`` holds the activities, ``source`` the
timeline source.
"""
