"""Names that identify the GeluModelRollout custom resource."""

from typing import Final

GROUP: Final = "gelu.dev"
VERSION: Final = "v1alpha1"
KIND: Final = "GeluModelRollout"
PLURAL: Final = "gelumodelrollouts"
SHORT_NAME: Final = "gmr"
API_VERSION: Final = f"{GROUP}/{VERSION}"
