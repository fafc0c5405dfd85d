"""Synthetic DeepLesion-format cohort with records, outcomes and a hidden truth.

:func:`generate` writes a folder laid out like the public DeepLesion release (``DL_info.csv``
and ``Images_png/``) plus ``records.csv``, ``outcomes.csv``, ``studies.csv`` and ``truth.json``;
the pipeline never reads ``truth.json``, the quality tests score against it.

The cohort is built to be honest rather than easy (docs/design.md): lesions are
drawn into an analytic CT phantom whose anatomy follows the position along the body; the eight
lesion types have overlapping appearance, size and location distributions; about 3% of the
given labels are wrong; records miss values; lesions are followed over one to three studies as
they grow, shrink under treatment and regrow, or appear, each at a rate that depends on its
type, look and patient, and readers record their diameters with error (the dynamics, and
:func:`true_long_mm` to score forecasts against the truth, are in
:mod:`~patientgraph.synth.dynamics`); survival follows a proportional-hazards model with
planted imaging and record effects beside decoys. Every random draw comes from a stream keyed
by (seed, patient, purpose, ...), so the output does not depend on the order or number of
processes rendering it.

Slices are painted by compiled pixel loops (:mod:`~patientgraph.synth.raster`), their CT noise
is drawn through a normal quantile table and they are encoded by the writer itself. Since
that change the pixels written for a seed differ from those of earlier versions (same
anatomy, lesions and noise level; other noise draws); the tables and ``truth.json`` are
unchanged.

Modules, one concept each: :mod:`~patientgraph.synth.params` (every constant of the cohort,
the random streams), :mod:`~patientgraph.synth.anatomy` (the body phantom),
:mod:`~patientgraph.synth.lesions` (lesion looks, shapes, sites and painting),
:mod:`~patientgraph.synth.dynamics` (lesion trajectories and reader error),
:mod:`~patientgraph.synth.cohort` (patients, studies, rows, labels, records and outcomes),
:mod:`~patientgraph.synth.slices` (rendering a slice), :mod:`~patientgraph.synth.raster`
(the compiled pixel loops it paints and blurs with) and :mod:`~patientgraph.synth.writer`
(the slices and tables on disk, :func:`generate`).
"""

from patientgraph.synth.cohort import _plan_patient
from patientgraph.synth.dynamics import true_long_mm
from patientgraph.synth.params import (
    DL_COLUMNS,
    FOV_MM,
    MAX_LONG_MM,
    SIZE_RANGE_MM,
    SLICE_INTERVALS_MM,
)
from patientgraph.synth.writer import _write_png16, _write_tables, generate

__all__ = [
    "DL_COLUMNS",
    "FOV_MM",
    "MAX_LONG_MM",
    "SIZE_RANGE_MM",
    "SLICE_INTERVALS_MM",
    "_plan_patient",
    "_write_png16",
    "_write_tables",
    "generate",
    "true_long_mm",
]
