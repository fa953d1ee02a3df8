"""The static STAC catalog of a cube, and query routing to its Zarr stores."""
