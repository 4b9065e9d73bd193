"""The local stack behind the demo and the end-to-end tests (emulator, pods, Prometheus)."""
