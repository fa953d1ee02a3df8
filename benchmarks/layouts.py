"""The layouts compared: the same pixels as cardcube's cube, as two other Zarr layouts, and as the COGs.

* ``time-first sharded``: the cube as :func:`ingest.job.ingest` writes it (the default);
* ``time-first unsharded``: the same arrays and chunks, each chunk its own object (no sharding codec);
* ``space-first``: one date per chunk, 512 x 512 pixels (the COG block), as a naive scene-by-scene
  conversion writes;
* ``COG + rasterio`` and ``COG + odc-stac``: the original per-scene COGs, read with rasterio windows
  (a thread pool) or with ``odc.stac.load`` - what users would pick instead today.

The two extra Zarr layouts are benchmark-local copies of the ingested cube: the ledger, catalog and
coordinates are copied as they are, and every band array is rewritten with zarr-python with the same
values, dtype, compressor and attributes but other chunks and no shards. So all three Zarr layouts are
read through the same cardcube API (readers take the chunk grid from each array's metadata), and the
differences measured are the layout's alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zarr
from zarr.storage import LocalStore

from cardcube.spec import ChunkLayout
from cardcube.synth import SynthResult
from cube import layout as cube_layout
from cube.ledger import CubeVersion, read_version
from ingest.job import IngestResult, ingest

COG_BLOCK = 512  # the synthetic COGs' block size, which a naive conversion would keep
COG_DIR = "scenes/sentinel-2-l2a"


@dataclass(frozen=True)
class Layout:
    """One way of storing the data: ``reader`` says which code reads it, ``data`` which copy it reads."""

    key: str
    title: str
    reader: str  # "zarr" (the cardcube API), "cog-rasterio" or "cog-odc"
    data: str  # key of the data copy ("cube", "cube-unsharded", "cube-space-first", "cogs")
    description: str


LAYOUTS: tuple[Layout, ...] = (
    Layout("tf-sharded", "time-first sharded", "zarr", "cube",
           "cardcube default: time-first chunks packed into shards (one object per shard)"),
    Layout("tf-unsharded", "time-first unsharded", "zarr", "cube-unsharded",
           "same chunks as the default, one object per chunk"),
    Layout("space-first", "space-first", "zarr", "cube-space-first",
           f"one date per chunk, {COG_BLOCK} x {COG_BLOCK} px, one object per chunk"),
    Layout("cog-rasterio", "COG + rasterio", "cog-rasterio", "cogs",
           "per-scene COGs, rasterio windowed reads in a thread pool"),
    Layout("cog-odc", "COG + odc-stac", "cog-odc", "cogs", "per-scene COGs, odc.stac.load"),
)
BASELINE = "cog-rasterio"  # ratios are computed against this layout


def layout(key: str) -> Layout:
    return next(lay for lay in LAYOUTS if lay.key == key)


@dataclass(frozen=True)
class DataCopy:
    """A copy of the data on disk: ``root`` is what readers open, ``files`` what the page cache holds."""

    key: str
    root: Path
    files: Path
    objects: int
    bytes: int

    def to_dict(self) -> dict:
        return {"data": self.key, "objects": self.objects, "bytes": self.bytes}


def _census(path: Path) -> tuple[int, int]:
    sizes = [f.stat().st_size for f in path.rglob("*") if f.is_file()]
    return len(sizes), sum(sizes)


def data_copy(key: str, root: Path, files: Path | None = None) -> DataCopy:
    files = files or root
    n, size = _census(files)
    return DataCopy(key, root, files, n, size)


def ingest_cube(items: Path, root: Path, *, chunks: ChunkLayout | None = None, catalog: bool = True) -> IngestResult:
    """The cardcube cube of ``items`` (S2, with its STAC catalog unless ``catalog=False``), as users get it."""
    return ingest(items, root, collection="s2", chunks=chunks, progress=False, catalog=catalog)


ChunkRule = Callable[[zarr.Array], tuple[int, int, int]]


def unsharded_chunks(array: zarr.Array) -> tuple[int, int, int]:
    """The cube's own inner chunks, stored one object each."""
    return tuple(array.chunks)


def space_first_chunks(array: zarr.Array) -> tuple[int, int, int]:
    """One date per chunk, a COG block of pixels."""
    return (1, COG_BLOCK, COG_BLOCK)


def rechunk(src: Path, dst: Path, rule: ChunkRule, *, collection: str = "s2") -> None:
    """Copy the cube at ``src`` to ``dst`` with every band array rewritten unsharded in ``rule``'s chunks."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    source, target = LocalStore(src, read_only=True), LocalStore(dst)
    version = read_version(source, collection)

    def copy(tile: str, resolution: int, name: str, hot: bool) -> None:
        path = cube_layout.array_path(collection, tile, resolution, name, hot=hot)
        old = zarr.open_array(source, path=path, mode="r", zarr_format=3)
        shutil.rmtree(dst / path)
        new = zarr.create_array(
            target, name=path, shape=old.shape, dtype=old.dtype, chunks=rule(old), shards=None,
            compressors=old.compressors, fill_value=old.fill_value,
            dimension_names=old.metadata.dimension_names, attributes=old.attrs.asdict(),
        )
        rows, cols = _footprint(version, tile, resolution)
        state = version.tiles[tile]
        # the committed dates only: cold blocks, and the live hot slots (compacted slots are never read)
        for t in ([h.slot for h in state.hot] if hot else [slice(0, len(state.cold))]):
            new[t, rows, cols] = old[t, rows, cols]  # outside the scenes' footprint everything is fill value

    arrays = [(tile, band.resolution, band.name, hot)
              for tile in version.tiles for band in version.spec.bands for hot in (False, True)]
    with ThreadPoolExecutor(4) as pool:  # blosc and the file writes release the GIL
        list(pool.map(lambda a: copy(*a), arrays))


def _footprint(version: CubeVersion, tile: str, resolution: int) -> tuple[slice, slice]:
    """Rows and cols (at ``resolution``) of the union of the windows the tile's scenes were written to."""
    wins = [version.scenes[a.scene_id].windows[resolution] for a in version.tiles[tile].acquisitions]
    return (slice(min(r for r, _, _, _ in wins), max(r + h for r, _, h, _ in wins)),
            slice(min(c for _, c, _, _ in wins), max(c + w for _, c, _, w in wins)))


def derive(region: SynthResult, cube: Path, work: Path) -> dict[str, DataCopy]:
    """Every data copy the layouts read: the ingested ``cube``, two re-chunked copies of it in ``work``
    (anything stored beside the cube is copied too), and the COGs."""
    rechunk(cube, work / "cube-unsharded", unsharded_chunks)
    rechunk(cube, work / "cube-space-first", space_first_chunks)
    os.sync()  # written pages must be clean before they can be evicted for cold reads
    copies = {key: data_copy(key, work / key) for key in ("cube-unsharded", "cube-space-first")}
    copies["cube"] = data_copy("cube", cube)
    copies["cogs"] = data_copy("cogs", region.out_dir, region.out_dir / COG_DIR)
    return copies
