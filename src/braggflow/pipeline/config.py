"""The pipeline configuration: versioned, validated, documented.

One :class:`Config` holds every option of ``braggflow run``.  It is read from
YAML (``-c CONFIG.yaml``), overridden on the command line
(``--set find.threshold_sigma=6`` or the named options), stored as text in the
results file, and printed with a comment per key by
``braggflow config --default``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from braggflow.correct.options import CorrectConfig
from braggflow.errors import ConfigError
from braggflow.find.options import FindConfig
from braggflow.geometry.config import GeometryConfig
from braggflow.integrate.options import IntegrateConfig
from braggflow.io.options import SeriesConfig
from braggflow.locate.options import LocateConfig
from braggflow.schema import HIT_MIN_PEAKS

CONFIG_VERSION = 1

__all__ = [
    "CONFIG_VERSION",
    "CorrectConfig",
    "FindConfig",
    "FindOptions",
    "LocateConfig",
    "IntegrateConfig",
    "FramesConfig",
    "HIT_MIN_PEAKS",
    "Config",
    "config_from_dict",
    "load_config",
    "apply_overrides",
    "default_config_yaml",
    "read_config",
    "with_input_geometry",
    "config_keys",
    "did_you_mean",
]


class FindOptions(FindConfig):
    """The ``find`` section: the finder's options (:class:`braggflow.find.options.FindConfig`) and the limits on
    the peaks kept after finding (:mod:`braggflow.pipeline.selection`)."""

    max_size: int | None = Field(
        None, ge=1, description="largest peak kept, pixels above threshold (npix): larger regions are dropped "
        "(diffuse streaks, shadow edges; dials.find_spots max_spot_size); null: no limit")
    d_min: float | None = Field(
        None, gt=0, description="high-resolution limit, Å: peaks with a smaller d-spacing are dropped (dials "
        "d_min); needs the geometry; null: none")
    d_max: float | None = Field(
        None, gt=0, description="low-resolution limit, Å: peaks with a larger d-spacing are dropped (beam stop "
        "scatter); needs the geometry; null: none")

    @model_validator(mode="after")
    def _shell(self):
        if self.d_min is not None and self.d_max is not None and not self.d_min < self.d_max:
            raise ValueError(f"d_min {self.d_min} must be below d_max {self.d_max} (Å)")
        return self


class FramesConfig(BaseModel):
    """The ``frames`` section: the per-frame summary of the frames table (``/entry/frames``).

    A frame is a hit when it has at least ``hit_min_peaks`` peaks, the rule of
    OM/OnDA's crystallography monitor (``min_num_peaks_for_hit``, 10 in its
    example configurations for the LCLS CXI beamline and for Pilatus files):
    a frame with a few peaks is more often noise, a zinger the finder let
    through or diffuse scatter than a diffraction pattern.  The web dashboard
    counts hits with the same default.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    hit_min_peaks: int = Field(
        HIT_MIN_PEAKS, ge=1, description="a frame with at least this many peaks is a hit (the frames table's hit "
        "column; OM's min_num_peaks_for_hit)")
    veto_empty: bool = Field(
        False, description="store the peaks of hits only: the peaks of other frames are counted (n_peaks), not "
        "stored (OM's veto of non-hits)")
    skip_empty: float | None = Field(
        None, gt=0, le=1, description="with find.method learned: a frame whose learned p_empty reaches this is "
        "skipped (its frames-table row kept, n_peaks 0; its features not localized, integrated or stored); null: "
        "every frame processed (braggflow watch --skip-empty: 0.7, which skips <= 1 % of simulated frames with "
        "features; docs/detector.md)")


class Config(BaseModel):
    """Every option of the pipeline.

    Sections: ``series``, ``correct``, ``find``, ``locate``, ``integrate``, ``frames``, ``geometry``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: int = Field(CONFIG_VERSION, description="config format version")
    series: SeriesConfig = Field(default_factory=SeriesConfig)
    correct: CorrectConfig = Field(default_factory=CorrectConfig)
    find: FindOptions = Field(default_factory=FindOptions)
    locate: LocateConfig = Field(default_factory=LocateConfig)
    integrate: IntegrateConfig = Field(default_factory=IntegrateConfig)
    frames: FramesConfig = Field(default_factory=FramesConfig)
    geometry: GeometryConfig | None = Field(None, description="detector geometry (see 'geometry' keys), or null")

    @model_validator(mode="after")
    def _skip_needs_learned(self):
        if self.frames.skip_empty is not None and self.find.method != "learned":
            raise ValueError(f"frames.skip_empty needs find.method 'learned' (the learned p_empty), not "
                             f"{self.find.method!r}")
        return self

    def to_yaml(self) -> str:
        """The config as YAML text (round-trips through :func:`load_config`)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        hint = did_you_mean(loc) if err.get("type") == "extra_forbidden" else ""
        parts.append(f"{loc}: {err['msg']}{hint}")
    return f"{source}: invalid configuration: " + "; ".join(parts)


def config_keys() -> list[str]:
    """Every dotted config key (``find.min_snr``, ``geometry.distance_mm``, ...) and section name."""
    keys = []
    for name, field in Config.model_fields.items():
        keys.append(name)
        section = field.annotation
        for candidate in getattr(section, "__args__", (section,)):  # GeometryConfig | None
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys.extend(f"{name}.{key}" for key in candidate.model_fields)
    return keys


def did_you_mean(key: str) -> str:
    """``" (did you mean 'find.min_snr'?)"`` for a misspelt config key, or ``""`` when nothing is close.

    The closest keys by :func:`difflib.get_close_matches` (ratio >= 0.6), among
    the keys of the same section first, else among all keys.
    """
    import difflib

    keys = config_keys()
    section = key.split(".")[0]
    same = [k for k in keys if k.startswith(section + ".")]
    close = difflib.get_close_matches(key, same, n=2) or difflib.get_close_matches(key, keys, n=2)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(k) for k in close) + "?)"


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a config is YAML text)") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    if "cluster" in data:  # where a run's workers come from, not what it computes: validated, kept apart
        from braggflow.pipeline.cluster import load_cluster_config

        load_cluster_config(path)
        data = {key: value for key, value in data.items() if key != "cluster"}
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
            try:
                pairs[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                message = " ".join(str(exc).split())
                raise ConfigError(f"--set {item!r}: the value is not a YAML scalar or list ({message})") from None
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
                raise ConfigError(f"unknown config key {key!r}{did_you_mean(key)}")
            node = node[p]
        if parts[-1] not in node and not (parts[0] == "geometry"):
            raise ConfigError(f"unknown config key {key!r}{did_you_mean(key)}")
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


def read_config(path) -> Config | None:
    """The :class:`Config` a results file was made with.

    Parameters
    ----------
    path : str or Path
        A braggflow results file.

    Returns
    -------
    config : Config or None
        None when the file records no configuration.

    Raises
    ------
    InputFileError
        If the file is not a readable results file.
    ConfigError
        If the stored configuration is not valid.
    """
    from braggflow.io.results import read_process

    text = read_process(path).get("config", "")
    if not text:
        return None
    return config_from_dict(yaml.safe_load(text), source=f"{path}::/entry/process/config")


#: Geometry keys that a geometry without a PONI file needs (one of wavelength_A, energy_keV).
_GEOMETRY_NEEDED = ("distance_mm", "beam_center_row", "beam_center_col", "pixel_size_mm")


def with_input_geometry(config: Config, sources: list[str]) -> tuple[Config, str | None]:
    """The config with the geometry the inputs' metadata record, where neither a PONI nor the keys give it.

    The values of a NeXus/Eiger master file (NXdetector, NXbeam) or of a
    miniCBF header (:func:`braggflow.io.metadata.read_geometry_metadata`)
    fill the ``geometry`` keys that are not set; a PONI file or keys that are
    set override them.

    Parameters
    ----------
    config : Config
    sources : list of str
        The series' input files.

    Returns
    -------
    config : Config
        With ``geometry`` filled from the metadata (the same object when nothing was taken from it).
    source : str or None
        Where the geometry comes from: ``"poni: FILE"``, ``"config"``,
        ``"metadata: FILE (...)"`` (``"... and config"`` when keys were set
        too), or None without a geometry.

    Raises
    ------
    InputFileError
        If the metadata hold values that cannot be read.
    """
    from braggflow.io.metadata import read_geometry_metadata

    given = config.geometry
    if given is not None and given.poni:
        return config, f"poni: {given.poni}"
    set_keys = {} if given is None else {k: v for k, v in given.model_dump().items()
                                          if v is not None and k in GeometryConfig.model_fields}
    has_wavelength = "wavelength_A" in set_keys or "energy_keV" in set_keys
    if given is not None and all(k in set_keys for k in _GEOMETRY_NEEDED) and has_wavelength:
        return config, "config"
    metadata = read_geometry_metadata(sources)
    if metadata is None:
        return config, None if given is None else "config"
    taken = {k: v for k, v in metadata.values.items()
             if k not in set_keys and not (k == "wavelength_A" and has_wavelength)}
    if not taken:
        return config, None if given is None else "config"
    merged = GeometryConfig(**{**(given.model_dump() if given is not None else {}), **taken})
    explicit = [k for k in set_keys if k in _GEOMETRY_NEEDED or k in ("wavelength_A", "energy_keV")]
    source = metadata.source + (" and config" if explicit else "")
    return config.model_copy(update={"geometry": merged}), source
