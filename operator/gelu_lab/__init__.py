"""The lab the operator is tested and shown in: sandbox, demo, benchmarks."""
