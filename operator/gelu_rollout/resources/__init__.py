"""Kubernetes objects the operator owns, rendered from a rollout by pure functions."""
