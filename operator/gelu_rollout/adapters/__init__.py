"""Adapters to the outside world: Prometheus, Triton, Kubernetes; each with a fake."""
