"""Plotting.

``pl.expression_map`` arrives with dense prediction.
"""

__all__: list[str] = []
