"""Tighten and restore memory limits; probe limit, usage and OOM kills."""
