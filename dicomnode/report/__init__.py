"""The node's output objects: Spanish draft report SRs and presentation states.

See ``docs/report-objects.md`` for the choice of IODs and templates.
"""

from dicomnode.report.builder import build_report_objects, select_sources
from dicomnode.report.measurement_report import FindingsMeasurementReport
from dicomnode.report.narrative import BasicTextSR, NarrativeReport
from dicomnode.report.presentation_state import FindingsPresentationState
from dicomnode.report.provenance import DISCLAIMER_ES

__all__ = [
    "DISCLAIMER_ES",
    "BasicTextSR",
    "FindingsMeasurementReport",
    "FindingsPresentationState",
    "NarrativeReport",
    "build_report_objects",
    "select_sources",
]
