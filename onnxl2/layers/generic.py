"""Any other reader (Gather, Add, Mul, a weight read by several nodes or inside a subgraph):
the weight is quantized on its own, without input moments or a factor pair."""
from __future__ import annotations

from .base import LayerKind


class GenericLayer(LayerKind):
    """The base behaviour: no site."""
