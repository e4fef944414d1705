"""Tools: SpatialData in, SpatialData out."""

from ._train import train

__all__ = ["train"]
