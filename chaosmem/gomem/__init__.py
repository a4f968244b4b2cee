"""Go runtime memory: MemStats read from a service (expvar or Prometheus text), the health rules
drawn from the source article, and the timeline source that puts Go's view beside the cgroup's.

``memstats`` reads one snapshot, ``health`` judges a series of them, ``probes`` holds the
activities, ``source`` the timeline source, ``evidence`` the pprof captures before a kill,
``gctrace`` the ``GODEBUG=gctrace=1`` log parser.
"""
