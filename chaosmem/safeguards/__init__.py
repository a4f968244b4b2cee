"""Probes made for chaostoolkit-addons' safeguards control: lines a run must not cross."""
