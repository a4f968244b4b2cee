"""Autoscaling: how fast a HorizontalPodAutoscaler reacted, and replicas over the run."""
