"""Ingest: CARD scenes into time-first Zarr v3 cubes, incremental and crash-safe."""
