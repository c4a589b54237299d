"""The ``geometry:`` section of the pipeline configuration.

User-facing units: mm, px, Å, keV, degrees.  Conversion to pyFAI's metres and
radians happens in :mod:`braggflow.geometry` only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GeometryConfig(BaseModel):
    """Detector geometry as a beamline scientist states it.

    Either ``poni`` (a pyFAI PONI file) or the explicit values are given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    poni: str | None = Field(None, description="pyFAI PONI file; when set, the values below are ignored")
    distance_mm: float | None = Field(None, description="sample-detector distance along the beam, mm")
    beam_center_row: float | None = Field(
        None, description="direct-beam position on the detector, row, px (pixel centres on integers)"
    )
    beam_center_col: float | None = Field(None, description="direct-beam position on the detector, column, px")
    pixel_size_mm: float | None = Field(None, description="pixel size, mm (square pixels) ")
    wavelength_A: float | None = Field(None, description="X-ray wavelength, Å (or give energy_keV)")
    energy_keV: float | None = Field(None, description="X-ray energy, keV (or give wavelength_A)")
    rot1_deg: float = Field(0.0, description="pyFAI rot1 detector tilt, degrees")
    rot2_deg: float = Field(0.0, description="pyFAI rot2 detector tilt, degrees")
    rot3_deg: float = Field(0.0, description="pyFAI rot3 detector rotation, degrees")
    incidence_angle_deg: float | None = Field(
        None, description="grazing-incidence angle of the beam on the sample surface, degrees"
    )
    tilt_angle_deg: float = Field(0.0, description="sample tilt about the beam (grazing incidence), degrees")
    sample_orientation: int = Field(
        4, ge=1, le=8,
        description="pyFAI sample orientation (EXIF code 1-8) of the surface normal on the frame; "
        "4: normal towards row 0 (up in a frame shown with row 0 on top), q_xy > 0 towards higher columns",
    )
    distance_err_mm: float = Field(
        0.0, ge=0,
        description="1-sigma uncertainty of the sample-detector distance, mm "
        "(propagated into refined lattice parameters)",
    )
