"""The kubernetes backend's work: the API client, pod resize, rollouts, OOM-kill counting, HPAs.

Only this package and :mod:`chaosmem.targets.kubernetes` import the ``kubernetes`` client, so the
local backend (and every rollback of local changes) works where it is not installed.
"""
