"""Who made the scenes a cube is built from: providers, licence, keywords and the source collections.

The source collection (``sentinel-2-l2a``, ``sentinel-1-card-bs``) is published without items: the cube's
tile items are derived from its scenes, and its links say where the scenes can be found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

import pystac

from catalog.keys import JSON_MEDIA_TYPE
from cube.ledger import SceneRecord

LICENSE = "other"  # STAC 1.1 spelling of a non-SPDX licence, described by the "license" link
LICENSE_URL = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"
ESA = pystac.Provider("European Space Agency (ESA)", roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.LICENSOR],
                      url="https://www.esa.int", description="Copernicus Sentinel data, on behalf of the EU")
CDSE = pystac.Provider("Copernicus Data Space Ecosystem", roles=[pystac.ProviderRole.HOST],
                       url="https://dataspace.copernicus.eu")
CARDCUBE = pystac.Provider("cardcube", roles=[pystac.ProviderRole.PROCESSOR, pystac.ProviderRole.HOST],
                           description="time-first Zarr v3 cubes of the scenes for CAP checks by monitoring")


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the catalog says about one source collection of scenes."""

    id: str
    title: str
    description: str
    constellation: str
    instruments: tuple[str, ...]
    keywords: tuple[str, ...]
    about_url: str
    stac_url: str | None = None
    instrument_mode: str = ""  # SAR sources: the mode every scene was taken in (sar:instrument_mode)
    frequency_band: str = ""  # SAR sources: the radar band (sar:frequency_band)

    def links(self, *, via: bool = True) -> list[pystac.Link]:
        """The licence, the documentation and (when public, and ``via``: the scenes were read from it) the
        provider's STAC collection of the scenes."""
        links = [
            pystac.Link("license", LICENSE_URL, media_type="application/pdf", title="Legal notice on the use of "
                        "Copernicus Sentinel Data and Service Information"),
            pystac.Link("about", self.about_url, media_type="text/html", title=f"{self.title}: documentation"),
        ]
        if self.stac_url and via:
            links.append(pystac.Link("via", self.stac_url, media_type=JSON_MEDIA_TYPE,
                                     title=f"{self.title} at the Copernicus Data Space Ecosystem STAC"))
        return links


SOURCES: dict[str, SourceInfo] = {
    s.id: s
    for s in (
        SourceInfo(
            id="sentinel-2-l2a",
            title="Sentinel-2 Level-2A",
            description="Sentinel-2 MSI Level-2A bottom-of-atmosphere reflectance scenes with the scene "
            "classification, on the MGRS tiling grid, as distributed by the Copernicus programme.",
            constellation="sentinel-2",
            instruments=("msi",),
            keywords=("Copernicus", "Sentinel-2", "MSI", "Level-2A", "surface reflectance", "optical"),
            about_url="https://sentiwiki.copernicus.eu/web/s2-products",
            stac_url="https://stac.dataspace.copernicus.eu/v1/collections/sentinel-2-l2a",
        ),
        SourceInfo(
            id="sentinel-1-card-bs",
            title="Sentinel-1 CARD backscatter",
            description="Sentinel-1 IW Copernicus analysis-ready (CEOS ARD) normalised radar backscatter "
            "(gamma0, VV and VH) on the MGRS tiling grid.",
            constellation="sentinel-1",
            instruments=("c-sar",),
            keywords=("Copernicus", "Sentinel-1", "SAR", "C-band", "backscatter", "gamma0", "CEOS-ARD"),
            about_url="https://sentiwiki.copernicus.eu/web/s1-products",
            instrument_mode="IW",
            frequency_band="C",
        ),
    )
}


def source_info(source_id: str) -> SourceInfo:
    """The description of source collection ``source_id``; unknown ids get a plain, truthful default."""
    known = SOURCES.get(source_id)
    if known is not None:
        return known
    return SourceInfo(id=source_id, title=source_id, description=f"Source scenes of collection {source_id}.",
                      constellation="", instruments=(), keywords=("Copernicus",),
                      about_url="https://dataspace.copernicus.eu")


@dataclass(frozen=True, slots=True)
class Processing:
    """What ingest did to scenes' pixels beyond reading them, from the ledger (:class:`~cube.ledger.SceneRecord`
    ``warped`` and ``converted``, the slices of a pass included): how many were resampled onto the tile grid
    (``ingest --warp``), by which methods and from which CRSs, and how many converted from linear power to dB.
    The catalog says it, since a STAC client or an auditor reads the catalog, not the ledger."""

    scenes: int = 0
    warped: int = 0
    methods: tuple[str, ...] = ()
    source_crs: tuple[str, ...] = ()
    converted: int = 0

    @classmethod
    def of(cls, records: Iterable[SceneRecord]) -> Processing:
        records = list(records)
        hows = [[how for piece in (r, *r.parts) for how in piece.warped.values()] for r in records]
        return cls(scenes=len(records), warped=sum(map(bool, hows)),
                   methods=tuple(sorted({str(h["resampling"]) for hs in hows for h in hs if "resampling" in h})),
                   source_crs=tuple(sorted({str(h["crs"]) for hs in hows for h in hs if "crs" in h})),
                   converted=sum(any(piece.converted for piece in (r, *r.parts)) for r in records))

    def sentence(self, what: str) -> str:
        """E.g. "3 of its 5 dates were resampled onto the tile grid (ingest --warp, bilinear from EPSG:32632); 3
        were converted from linear power to dB." for ``what`` "its {} dates"; "" when nothing was done."""
        said, whole = [], what.format(self.scenes)
        if self.warped:
            how = " from ".join(filter(None, (", ".join(self.methods), ", ".join(self.source_crs))))
            said.append(f"{self.warped} of {whole} {_were(self.warped)} resampled onto the tile grid "
                        f"(ingest --warp{', ' + how if how else ''})")
        if self.converted:
            said.append(f"{self.converted} {'' if self.warped else f'of {whole} '}{_were(self.converted)} converted "
                        "from linear power to dB")
        return "; ".join(said) + "." if said else ""

    def fields(self) -> dict[str, int | list[str]]:
        """The counts and lists as item properties (``cardcube:warped_dates`` ...), those of something done."""
        fields = {"cardcube:warped_dates": self.warped, "cardcube:resampling": list(self.methods),
                  "cardcube:source_crs": list(self.source_crs), "cardcube:converted_dates": self.converted}
        return {k: v for k, v in fields.items() if v}


def _were(n: int) -> str:
    return "was" if n == 1 else "were"


def file_host(href: str) -> str:
    """Where a scene's file was read: ``scheme://host`` of a URL, "" for a local path."""
    parsed = urlparse(href)
    return f"{parsed.scheme}://{parsed.netloc}" if parsed.scheme not in ("", "file") and parsed.netloc else ""


def _cdse_host(host: str) -> bool:
    """Whether ``host`` (:func:`file_host`) is the Copernicus Data Space Ecosystem's (its S3 bucket ``eodata``)."""
    netloc = urlparse(host).netloc
    return netloc == "eodata" or netloc.endswith(".copernicus.eu")


def build_source_collection(info: SourceInfo, *, start: datetime | None, end: datetime | None,
                            bbox: list[float] | None, read_from: Sequence[str] = (),
                            hosts: Sequence[str] = (), processing: Processing | None = None) -> pystac.Collection:
    """The STAC collection of the source scenes, with the extent the cube holds of them (no items).
    ``read_from``: the STAC collections the scenes were read from (none known: the scenes' own records predate
    it); ``hosts``: where their files were (:func:`file_host`). Read from another collection than the Copernicus
    Data Space Ecosystem's (Earth Search's ``sentinel-2-c1-l2a``), or from files at another host (Planetary
    Computer's collection is also called ``sentinel-2-l2a``), it names neither that host nor its collection as
    where the scenes are found, and says where they were read. Local files say nothing of their host.
    ``processing``: what was done to the scenes' pixels, said in the description (the scenes of an item of no tile
    were not on the tiling grid the description names)."""
    elsewhere = sorted(set(read_from) - {info.id})
    other_hosts = sorted(h for h in set(hosts) if h and not _cdse_host(h))
    said = ([f"the STAC collection(s) {', '.join(elsewhere)}"] if elsewhere else []) + (
        [f"files at {', '.join(other_hosts)}"] if other_hosts else [])
    description = info.description + (f" This cube's scenes were read from {' and '.join(said)}." if said else "")
    done = processing.sentence("this cube's {} scenes") if processing else ""
    description += f" {done}" if done else ""
    from_cdse = (not read_from or info.id in read_from) and not other_hosts
    extent = pystac.Extent(pystac.SpatialExtent([bbox or [-180.0, -90.0, 180.0, 90.0]]),
                           pystac.TemporalExtent([[start, end]]))
    summaries = pystac.Summaries({"constellation": [info.constellation], "instruments": list(info.instruments)}
                                 if info.constellation else {})
    collection = pystac.Collection(
        id=info.id, title=info.title, description=description, extent=extent, license=LICENSE,
        keywords=list(info.keywords), providers=[ESA, CDSE] if from_cdse else [ESA], summaries=summaries,
    )
    collection.add_links(info.links(via=from_cdse))
    return collection
