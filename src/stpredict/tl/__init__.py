"""Tools: SpatialData in, SpatialData out.

Training (``tl.train``) and dense prediction (``tl.predict_dense``) arrive with the model.
"""

__all__: list[str] = []
