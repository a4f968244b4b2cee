"""Allocation stress: memory that grows at a chosen rate and mix of block sizes, charged to a target.

``engine.py`` is the stressor process itself (standard library only, run by path);
``supervisor.py`` starts it inside the target's cgroup and watches it; ``stopping.py`` finds and
ends stressors by id (the ledger's undo); ``actions.py`` is the Chaos Toolkit face.
"""
