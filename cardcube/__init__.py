"""cardcube: Sentinel-1/2 CARD scenes as time-first Zarr v3 cubes for CAP checks by monitoring.

The public Python API lives in the packages ``ingest``, ``catalog`` and ``cube``; this package holds
what they share (specs, grids, storage resolution, errors), the synthetic scene generator and the CLI.
"""

__version__ = "0.1.0"
