"""The crops of a Dutch declaration (BRP-like codes) and the agronomy that drives their signals.

Each :class:`Crop` says how common it is, when it is sown and harvested and how its canopy develops in
growing degree days (GDD) after sowing. The numbers are plausible for clay polders in the Netherlands;
they aim at realistic signal shapes, not at agronomic accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Crop:
    """One crop type. GDD thresholds count degree days above ``gdd_base`` since sowing.

    ``green_mid``/``green_width``: the logistic rise of green cover; ``senesce_mid``/``senesce_width``:
    its logistic decline (green turns to dry matter); ``harvest_gdd``: harvest when reached (``None``
    for grassland and for crops harvested by calendar, see ``harvest_window``). ``dry_max`` is the
    fraction of senesced canopy still standing; ``biomass_mid`` the GDD at half biomass, which the radar
    sees (it lags green cover for tall crops).
    """

    code: int
    name: str
    english: str
    share: float
    kind: str  # "grass", "arable" or "fallow"
    gdd_base: int = 5
    sowing_window: tuple[str, str] | None = None  # "MM-DD" in the season year ("-" prefix: year before)
    green_max: float = 0.9
    green_mid: float = 500.0
    green_width: float = 80.0
    senesce_mid: float = 1e9
    senesce_width: float = 80.0
    harvest_gdd: float | None = None
    harvest_window: tuple[str, str] | None = None
    dry_max: float = 0.6
    biomass_mid: float = 600.0
    biomass_max: float = 1.0  # relative to silage maize at its peak
    soil_roughness: float = 0.0  # dB added to radar over bare soil (ridges of potatoes, ploughed land)


CROPS: tuple[Crop, ...] = (
    Crop(265, "Grasland, blijvend", "permanent grassland", 0.50, "grass", gdd_base=0, green_max=0.93,
         biomass_max=0.35),
    Crop(266, "Grasland, tijdelijk", "temporary grassland", 0.05, "grass", gdd_base=0, green_max=0.94,
         biomass_max=0.35),
    Crop(259, "Maïs, snij-", "silage maize", 0.15, "arable", gdd_base=10, sowing_window=("04-20", "05-15"),
         green_max=0.95, green_mid=250.0, green_width=50.0, senesce_mid=860.0, senesce_width=70.0,
         harvest_window=("09-10", "10-10"), dry_max=0.7, biomass_mid=380.0, biomass_max=1.0,
         soil_roughness=0.5),
    Crop(233, "Tarwe, winter-", "winter wheat", 0.09, "arable", gdd_base=0, sowing_window=("-10-05", "-11-05"),
         green_max=0.93, green_mid=950.0, green_width=200.0, senesce_mid=2420.0, senesce_width=110.0,
         harvest_gdd=2800.0, dry_max=0.8, biomass_mid=1500.0, biomass_max=0.55),
    Crop(236, "Gerst, zomer-", "spring barley", 0.03, "arable", gdd_base=0, sowing_window=("03-10", "04-05"),
         green_max=0.88, green_mid=620.0, green_width=110.0, senesce_mid=1350.0, senesce_width=100.0,
         harvest_gdd=1700.0, dry_max=0.8, biomass_mid=850.0, biomass_max=0.45),
    Crop(2014, "Aardappelen, consumptie", "ware potato", 0.07, "arable", gdd_base=5,
         sowing_window=("04-05", "05-05"), green_max=0.93, green_mid=480.0, green_width=70.0,
         senesce_mid=1250.0, senesce_width=90.0, harvest_gdd=1500.0, dry_max=0.35, biomass_mid=600.0,
         biomass_max=0.6, soil_roughness=1.5),
    Crop(256, "Bieten, suiker-", "sugar beet", 0.06, "arable", gdd_base=5, sowing_window=("03-25", "04-20"),
         green_max=0.96, green_mid=620.0, green_width=80.0, senesce_mid=1e9, harvest_window=("09-25", "11-20"),
         dry_max=0.0, biomass_mid=700.0, biomass_max=0.7),
    Crop(262, "Uien, zaai-", "sown onion", 0.03, "arable", gdd_base=5, sowing_window=("03-20", "04-15"),
         green_max=0.62, green_mid=700.0, green_width=110.0, senesce_mid=1200.0, senesce_width=80.0,
         harvest_gdd=1420.0, dry_max=0.3, biomass_mid=800.0, biomass_max=0.25, soil_roughness=0.5),
    Crop(662, "Braakland, zwart", "black fallow", 0.02, "fallow", gdd_base=5, sowing_window=("03-01", "03-01"),
         green_max=0.45, green_mid=650.0, green_width=160.0, dry_max=0.3, biomass_mid=800.0,
         biomass_max=0.2),
)
CROPS_BY_CODE: dict[int, Crop] = {c.code: c for c in CROPS}
GRASSLAND_CODES = tuple(c.code for c in CROPS if c.kind == "grass")
ARABLE_CODES = tuple(c.code for c in CROPS if c.kind == "arable")


def crop(code: int) -> Crop:
    """The crop with BRP-like ``code``."""
    try:
        return CROPS_BY_CODE[int(code)]
    except KeyError:
        raise ValueError(f"unknown crop code {code}; known: {sorted(CROPS_BY_CODE)}") from None
