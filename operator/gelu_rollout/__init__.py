"""gelu-rollout: canary rollouts of GELU model variants on Triton, decided on evidence."""

__version__ = "0.1.0"
