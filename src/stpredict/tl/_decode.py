"""``tl.decode_map``: chosen genes of a latent map as an image element, for viewers that draw channels."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np
from spatialdata import SpatialData
from spatialdata.models import Image2DModel
from spatialdata.transformations import get_transformation

from .. import _docs
from .._core import ElementWriter
from .._core._latent import decode_lazy, head_name, map_head
from .._core._validate import check_name, check_names

__all__ = ["decode_map"]


@_docs.doc_params(overwrite=_docs.overwrite)
def decode_map(
    sdata: SpatialData,
    values: str,
    genes: Sequence[str],
    *,
    key_added: str | None = None,
    overwrite: bool = False,
) -> str:
    """Write chosen genes of a latent map as an image element of genes, for spatialdata-plot and napari.

    :func:`stpredict.tl.predict_dense` with ``map_as="latent"`` stores the network's last features and its linear
    head (``tables[f"{{values}}_head"]``). stpredict's own readers decode genes from it; viewers that draw an
    image's channels (``sdata.pl.render_images(..., channel="ERBB2")``, napari) need the genes as channels: this
    writes them, every pyramid level decoded from the same latent level (a gene at a coarser level is the head of the
    latent means, which is the mean of the gene), computed lazily and written when ``sdata`` is backed. Pixels
    where nothing was predicted stay 0. At the tissue's edge a pixel of a coarser level that also covers glass is
    the head of a mean that counts the glass as latent 0 (the full resolution, which stpredict's own readers use,
    is exact everywhere).

    Parameters
    ----------
    sdata
        SpatialData with a latent map.
    values
        Name of the latent map's image element, e.g. ``"pixnet_dense"``.
    genes
        Genes to decode (a few: each is a channel of the new element, float32).
    key_added
        Name of the new image element. Default ``f"{{values}}_genes"``.
    {overwrite}

    Returns
    -------
    The name of the image element: ``(c=genes, y, x)`` float32, multiscale, placed as the latent map is.

    Examples
    --------
    ::

        stp.tl.predict_dense(sdata, model, map_as="latent")
        stp.tl.decode_map(sdata, "pixnet_dense", ["ERBB2", "CD74"])
        sdata.pl.render_images("pixnet_dense_genes", channel="ERBB2").pl.show()

    """
    values = check_name("values", values)
    check_names("values", values, available=list(sdata.images), kind="image")
    head = map_head(sdata, values)
    if head is None:
        raise ValueError(
            f"{values!r} is not a latent map (there is no table {head_name(values)!r} with its head): its channels "
            "are drawn as they are. Latent maps come from `tl.predict_dense(..., map_as='latent')`."
        )
    weight, bias, all_genes = head
    genes = check_names("genes", genes)
    missing = [g for g in genes if g not in all_genes]
    if missing:
        raise KeyError(f"Genes {missing} are not in the latent map {values!r} (e.g. {all_genes[:5]}).")
    idx = [all_genes.index(g) for g in genes]
    weight, bias = weight[idx], bias[idx]
    key_added = check_name("key_added", f"{values}_genes" if key_added is None else key_added)
    if key_added in (values, head_name(values)):
        raise ValueError(
            f"key_added={key_added!r} would replace the latent map or its head; choose another name."
        )

    el = sdata.images[values]
    levels = [el[k]["image"] for k in el.children] if hasattr(el, "children") else [el]
    base = levels[0].transpose("c", "y", "x")
    factors = [levels[i - 1].sizes["y"] // lvl.sizes["y"] for i, lvl in enumerate(levels) if i > 0]
    out = Image2DModel.parse(
        da.zeros(
            (len(genes), *base.shape[1:]), dtype=np.float32, chunks=(len(genes), *base.data.chunksize[1:])
        ),
        dims=("c", "y", "x"),
        c_coords=list(genes),
        scale_factors=factors or None,
        transformations=get_transformation(el, get_all=True),
    )
    nodes = list(out.children) if factors else [None]
    for node_name, lvl in zip(nodes, levels, strict=True):
        data = decode_lazy(lvl.transpose("c", "y", "x").data, weight, bias)
        if node_name is None:
            out = out.copy(data=data)
        else:
            node = out[node_name]
            img = node["image"]
            if img.shape != data.shape:
                raise ValueError(
                    f"The latent map's level {node_name} has shape {lvl.shape}; a {tuple(factors)} pyramid of "
                    f"its full resolution has {img.shape}."
                )
            node.dataset = node.to_dataset().assign(image=img.copy(data=data))
    with ElementWriter(sdata, [key_added], overwrite=overwrite, by="tl.decode_map") as w:
        w.add(key_added, out)
    return key_added
