"""The pipeline configuration: versioned, validated, documented.

One :class:`Config` holds every option of ``braggflow run``.  It is read from
YAML (``-c CONFIG.yaml``), overridden on the command line
(``--set find.threshold_sigma=6`` or the named options), stored as text in the
results file, and printed with a comment per key by
``braggflow config --default``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from braggflow.errors import ConfigError
from braggflow.geometry.config import GeometryConfig

CONFIG_VERSION = 1

__all__ = [
    "CONFIG_VERSION",
    "CorrectConfig",
    "FindConfig",
    "LocateConfig",
    "IntegrateConfig",
    "Config",
    "config_from_dict",
    "load_config",
    "apply_overrides",
    "default_config_yaml",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorrectConfig(_Section):
    """Frame corrections (:mod:`braggflow.correct`)."""

    dark: str | None = Field(None, description="dark frame file (subtracted), or null")
    flat: str | None = Field(None, description="flat-field file (frames are divided by it, normalised to mean 1), or null")
    mask: str | None = Field(None, description="mask file (nonzero/True = bad pixel), or null")
    detector: str | None = Field(
        "auto",
        description="pyFAI detector name whose gap mask is added ('auto': by frame shape; null: none)",
    )
    gap_margin: int = Field(
        1, ge=0, description="also mask this many px beside the detector's module gaps (Pilatus module-edge pixels "
        "read ~1.2x their neighbours and make lines of false peaks without a flat field); 0: gaps only")
    flag_values: list[float] = Field(
        default_factory=lambda: [-1.0, -2.0],
        description="pixel values that mark bad pixels (Pilatus: -1 gaps, -2 bad); masked",
    )
    saturation: float | None = Field(
        None, description="counts at which a pixel saturates (peaks touching it are flagged); null: dtype maximum for integer frames"
    )
    minval: float | None = Field(None, description="pixels below this value are set to zero (published BraggNN practice), or null")
    binning: Literal[1, 2] = Field(1, description="bin 2x2 pixels into one (1: no binning)")
    gain: float = Field(1.0, gt=0, description="detector gain, ADU per photon; used for every Poisson error")


class FindConfig(_Section):
    """Peak finding (:mod:`braggflow.find`)."""

    method: Literal["components", "persistence"] = Field(
        "components", description="'components': connected components with watershed splitting; 'persistence': topological persistence"
    )
    threshold: float | None = Field(None, description="absolute threshold above background, counts; null: threshold_sigma x robust noise")
    threshold_sigma: float = Field(5.0, gt=0, description="threshold in units of the frame's robust noise (used when threshold is null)")
    tile: int = Field(64, ge=8, description="tile size in px for the background and noise estimate")
    min_size: int | None = Field(
        None, ge=1, description="minimum pixels above threshold for a peak; null: 2, or 1 on sparse frames (see sparse)")
    min_separation: float = Field(2.0, ge=1, description="minimum distance between two peaks' maxima, px")
    split_sigma: float = Field(
        4.0, gt=0, description="components: two maxima stay separate peaks when the dip between them exceeds this many "
        "sigma of its noise (tile noise and Poisson at the saddle)")
    min_persistence: float | None = Field(None, description="persistence method: minimum persistence, counts; null: threshold")
    min_snr: float | None = Field(
        None, ge=0, description="minimum score (detection SNR) to keep a peak; null: 3, or 0 on sparse frames")
    local_snr_below: float = Field(
        10.0, ge=0, description="components: a peak whose SNR is below this is measured again against the median of a "
        "ring of pixels 3 px around its region instead of the tile level, and dropped unless its highest pixel passes "
        "the threshold and its SNR passes min_snr above that level (noise on the wings of a bright peak); 0: off")
    sparse: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="frames thresholded upstream (most pixels exactly 0, e.g. HEXRD frame-caches): every nonzero pixel already passed a threshold, so single-pixel peaks are kept (min_size and min_snr, when null, become 1 and 0); 'auto': when over half the pixels are 0",
    )
    max_peaks: int | None = Field(None, description="keep at most this many peaks per frame (highest score first), or null")


class LocateConfig(_Section):
    """Sub-pixel localization (:mod:`braggflow.locate`)."""

    method: Literal["com", "gauss", "pvoigt", "braggnn"] = Field(
        "com", description="centre of mass, 2D Gaussian fit, 2D pseudo-Voigt fit, or the BraggNN CNN"
    )
    patch_size: int = Field(11, ge=3, description="patch side in px (odd)")
    model: str | None = Field(None, description="braggnn: shipped model name or model file; null: best shipped model")
    device: str = Field("cpu", description="braggnn: torch device ('cpu', 'cuda')")
    batch_size: int = Field(1024, ge=1, description="braggnn: patches per inference batch")
    saturated: Literal["fit", "method"] = Field(
        "fit",
        description="peaks with saturated pixels: 'fit' = 2D Gaussian fit without those pixels (com and braggnn "
        "cannot extrapolate a clipped core); 'method' = the method above",
    )
    extended: Literal["region", "patch"] = Field(
        "region",
        description="peaks whose region does not fit in the patch (streaks, large spots): 'region' = intensity-weighted "
        "centroid of the whole region (method 'region'); 'patch' = the method above on the truncated patch",
    )


class IntegrateConfig(_Section):
    """Peak intensities (:mod:`braggflow.integrate`)."""

    radius: float | None = Field(None, description="integration radius in px; null: the peak's own region grown by 1 px")
    background_width: float = Field(3.0, gt=0, description="width of the background annulus, px")


class Config(BaseModel):
    """Every option of the pipeline.

    Sections: ``correct``, ``find``, ``locate``, ``integrate``, ``geometry``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: int = Field(CONFIG_VERSION, description="config format version")
    correct: CorrectConfig = Field(default_factory=CorrectConfig)
    find: FindConfig = Field(default_factory=FindConfig)
    locate: LocateConfig = Field(default_factory=LocateConfig)
    integrate: IntegrateConfig = Field(default_factory=IntegrateConfig)
    geometry: GeometryConfig | None = Field(None, description="detector geometry (see 'geometry' keys), or null")

    def to_yaml(self) -> str:
        """The config as YAML text (round-trips through :func:`load_config`)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return f"{source}: invalid configuration: " + "; ".join(parts)


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Validate a nested dict into a :class:`Config`.

    Raises
    ------
    ConfigError
        Naming ``source`` and each invalid key.
    """
    version = data.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise ConfigError(f"{source}: config version {version} is not supported (expected {CONFIG_VERSION})")
    geometry = data.get("geometry")
    if isinstance(geometry, dict) and all(
        value is None or value == GeometryConfig.model_fields[key].default
        for key, value in geometry.items() if key in GeometryConfig.model_fields
    ) and set(geometry) <= set(GeometryConfig.model_fields):
        data = {**data, "geometry": None}  # the template's all-default section means "no geometry"
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | Path | None) -> Config:
    """Read a YAML config file; ``None`` gives the defaults.

    Parameters
    ----------
    path : str or Path or None

    Returns
    -------
    config : Config

    Raises
    ------
    ConfigError
        If the file is missing, not YAML, or has unknown or invalid keys.
    """
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return config_from_dict(data, source=str(path))


def apply_overrides(config: Config, overrides: dict[str, Any] | list[str]) -> Config:
    """Return a copy of ``config`` with dotted keys replaced.

    Parameters
    ----------
    config : Config
    overrides : dict of {"section.key": value} or list of "section.key=value"
        String values are parsed as YAML scalars (``6`` -> int, ``null`` -> None).
        ``None`` values in a dict are skipped (option not given).

    Returns
    -------
    config : Config

    Raises
    ------
    ConfigError
        For an unknown key or an invalid value.
    """
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
            key, value = item.split("=", 1)
            pairs[key.strip()] = yaml.safe_load(value)
        overrides = pairs
    data = config.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        parts = key.split(".")
        node = data
        for p in parts[:-1]:
            if node.get(p) is None and p == "geometry":
                node[p] = {}
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config key {key!r}")
            node = node[p]
        if parts[-1] not in node and not (parts[0] == "geometry"):
            raise ConfigError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return config_from_dict(data, source="command line")


def default_config_yaml() -> str:
    """The default config as YAML, with each key's description as a comment.

    Returns
    -------
    text : str
    """
    lines = [f"# braggflow configuration (version {CONFIG_VERSION}); every key can be set on the",
             "# command line as --set SECTION.KEY=VALUE.", f"version: {CONFIG_VERSION}"]

    def emit(model_cls: type[BaseModel], values: dict[str, Any], indent: str) -> None:
        for name, field in model_cls.model_fields.items():
            if name == "version":
                continue
            value = values.get(name)
            desc = field.description or ""
            if isinstance(value, dict) or name == "geometry":
                sub = GeometryConfig if name == "geometry" else field.annotation
                lines.append(f"{indent}# {desc}" if desc else f"{indent}# {name}")
                lines.append(f"{indent}{name}:")
                emit(sub, value or sub().model_dump(mode="json"), indent + "  ")
            else:
                dumped = yaml.safe_dump(value, default_flow_style=True).strip()
                if dumped.endswith("\n...") or dumped.endswith("..."):
                    dumped = dumped.replace("\n...", "").replace("...", "").strip()
                lines.append(f"{indent}{name}: {dumped}  # {desc}")

    emit(Config, Config().model_dump(mode="json"), "")
    return "\n".join(lines) + "\n"
