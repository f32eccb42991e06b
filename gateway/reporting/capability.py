"""The MeasureReport entry of the CapabilityStatement: searched (summaries computed from the
store on request), never read by id, written or kept."""

from __future__ import annotations

from typing import Any

MEASURE_REPORT_CAPABILITY: dict[str, Any] = {
    "type": "MeasureReport",
    "documentation": "The partnership's reports (measure treatment-waiting-times, mat-1) for one quarter, computed on request; "
    "for the partnership lead, IG officers and the HSCP only",
    "interaction": [{"code": "search-type"}],
    "searchParam": [
        {"name": "measure", "type": "reference", "documentation": "https://pathway.scot/Measure/treatment-waiting-times or .../mat-1 (or the id)"},
        {"name": "period", "type": "date", "documentation": "dates within one quarter; default the last complete quarter"},
    ],
}
