"""A short human-readable summary of a SpatialData: what ``stpredict info`` prints."""

from __future__ import annotations

from spatialdata import SpatialData

__all__ = ["summary"]


def summary(sdata: SpatialData) -> str:
    """A short human-readable summary: images with pixel sizes, tables with sizes and what they hold."""
    from .._core import full_resolution, get_mpp
    from .._core._latent import head_name, map_head

    lines = []
    for key, el in sdata.images.items():
        arr = full_resolution(el)
        dims = dict(zip(arr.dims, arr.shape, strict=True))
        try:
            mpp = f"{get_mpp(sdata, key):.4f} µm/px"
            extent = f", {dims['x'] * get_mpp(sdata, key) / 1000:.2f} x {dims['y'] * get_mpp(sdata, key) / 1000:.2f} mm"
        except ValueError:
            mpp, extent = "pixel size unknown", ""
        latent = (
            f" (a latent map: {len(head[2])} genes through its head, table {head_name(key)!r})"
            if (head := map_head(sdata, key)) is not None
            else ""
        )
        lines.append(
            f"image  {key}: {dims['c']} x {dims['y']} x {dims['x']} (c, y, x) {arr.dtype}, {mpp}{extent}{latent}"
        )
    annotated = set()
    for t in sdata.tables.values():
        region = t.uns.get("spatialdata_attrs", {}).get("region")
        annotated |= set(region) if isinstance(region, list | tuple) else {region}
    for key, el in sdata.labels.items():
        arr = full_resolution(el)
        dims = " x ".join(str(n) for n in arr.shape)
        what = " (a bin-id raster: a table's footprints)" if key in annotated else ""
        lines.append(f"labels {key}: {dims} ({', '.join(arr.dims)}) {arr.dtype}{what}")
    for key, gdf in sdata.shapes.items():
        lines.append(f"shapes {key}: {len(gdf)} footprints")
    for key, t in sdata.tables.items():
        region = t.uns.get("spatialdata_attrs", {}).get("region", "-")
        region = ", ".join(map(str, region)) if isinstance(region, list | tuple) else str(region)
        lines.append(f"table  {key}: {t.n_obs} obs x {t.n_vars} genes, {_values(t)}, linked to {region}")
    return "\n".join(lines)


def _values(table) -> str:
    """What a table's ``X`` holds, honestly: counts (with their total), predictions, or other values."""
    import numpy as np

    from .._constants import UNS_KEY

    if not table.n_obs or not table.n_vars:
        return "empty"
    X = table.X
    rec = table.uns.get(UNS_KEY, {})
    if X is None and isinstance(rec, dict) and isinstance(rec.get("X"), dict):
        return f"predicted log1p-normalised values: the pixels of the map {rec['X'].get('map')!r} (not stored twice)"
    if X is None:
        return "no X"
    if isinstance(rec, dict) and "recipe" in rec:
        return f"predicted log1p-normalised values (mean {float(np.asarray(X.mean())):.3g})"
    sample = X[: min(table.n_obs, 1000)]
    sample = sample.toarray() if hasattr(sample, "toarray") else np.asarray(sample)
    if np.issubdtype(sample.dtype, np.integer) or np.array_equal(sample, np.round(sample)):
        return f"{int(np.asarray(X.sum()))} counts"
    return f"non-integer values (mean {float(np.asarray(X.mean())):.3g})"
