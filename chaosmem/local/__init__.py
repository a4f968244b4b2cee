"""Services chaosmem starts itself, each in a memory cgroup of its own."""
