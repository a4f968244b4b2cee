"""Replay captured production traffic (goreplay, HAR, JSON lines) at a chosen speed or rate.

``capture`` reads captures as streams, ``schedule`` times and rewrites them, ``replay`` sends
them and accounts for every request, ``results`` is the state-dir layout other code reads;
``actions``/``probes`` are the thin Chaos Toolkit faces, ``worker`` runs a background replay.
"""

from chaosmem.traffic.native import activate as _activate

# The compiled replay engine, when a fresh build exists (see chaosmem.traffic.native).
_activate(__path__)
