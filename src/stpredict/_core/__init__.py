"""The torch-free core every layer builds on (private; the public names are re-exported by ``pp``/``tl``/``model``).

- :mod:`._mpp`: the pixel-size contract (micron coordinate systems);
- :mod:`._image`: pyramid levels and the one window reader (:class:`Pyramid`), the default H&E;
- :mod:`._footprints`: footprints from shapes, the footprint × pixel operator, points-in-shapes;
- :mod:`._aggregate`: the one sparse aggregation loop over (dask) images;
- :mod:`._latent`: latent maps (a model's last features) and the linear head that reads genes from them;
- :mod:`._recipe`: gene choice and count normalisation;
- :mod:`._elements`: tables linked to shapes, rows matched by footprint;
- :mod:`._store`: the one element writer: checked names, staged transactional writes and their recovery
  (:mod:`._store_meta`: the provenance registry and the store's own files; :mod:`._table_write`: tables written
  through the fast path);
- :mod:`._metrics`: per-gene PCC and PCC@F/S/M;
- :mod:`._files`: the checks of the paths users pass (missing, a folder for a file or the reverse, truncated).
"""

from ._aggregate import accumulate_blocks, aggregate_footprints
from ._elements import drop_none, match_rows, shapes_table
from ._footprints import (
    Cover,
    Footprints,
    covered,
    describe_shapes,
    footprint_diameters,
    footprint_matrix,
    labels_footprints,
    shapes_footprints,
    table_footprints,
    tiles_cover,
)
from ._image import (
    Pyramid,
    check_he,
    check_rgb,
    default_image_key,
    default_scale_factors,
    full_resolution,
    parse_rgb_image,
    section_name,
    section_names,
)
from ._metrics import pcc_per_gene, summarize_pcc
from ._mpp import add_micron_cs, get_mpp, is_micron_cs, micron_cs_name, pixel_and_micron_transforms, set_mpp
from ._recipe import Recipe, gene_counts, normalize_counts, recipe_from_table, select_genes
from ._store import ElementWriter, check_new_names, file_sha256, recover_store, written_elements

__all__ = [
    "Cover",
    "ElementWriter",
    "Footprints",
    "Pyramid",
    "Recipe",
    "accumulate_blocks",
    "add_micron_cs",
    "aggregate_footprints",
    "check_he",
    "check_new_names",
    "check_rgb",
    "covered",
    "default_image_key",
    "default_scale_factors",
    "describe_shapes",
    "drop_none",
    "file_sha256",
    "footprint_diameters",
    "footprint_matrix",
    "full_resolution",
    "gene_counts",
    "get_mpp",
    "is_micron_cs",
    "labels_footprints",
    "match_rows",
    "micron_cs_name",
    "normalize_counts",
    "parse_rgb_image",
    "pcc_per_gene",
    "pixel_and_micron_transforms",
    "recipe_from_table",
    "recover_store",
    "section_name",
    "section_names",
    "select_genes",
    "set_mpp",
    "shapes_footprints",
    "shapes_table",
    "summarize_pcc",
    "table_footprints",
    "tiles_cover",
    "written_elements",
]
