"""GELU variants and the Triton model repositories they render to."""

from gelu_rollout.variants.catalog import (
    CATALOG,
    HIDDEN,
    INPUTS,
    OUTPUT_BUCKETS,
    WEIGHT_SEED,
    VariantInfo,
    reference_outputs,
)
from gelu_rollout.variants.repository import (
    REPOSITORY_PATHS,
    Faults,
    render_repository,
    repository_revision,
    write_repository,
)

__all__ = [
    "CATALOG",
    "HIDDEN",
    "INPUTS",
    "OUTPUT_BUCKETS",
    "REPOSITORY_PATHS",
    "WEIGHT_SEED",
    "Faults",
    "VariantInfo",
    "reference_outputs",
    "render_repository",
    "repository_revision",
    "write_repository",
]
