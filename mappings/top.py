"""The Treatment Outcomes Profile (TOP) as a FHIR Questionnaire, and the reading of a
TOP QuestionnaireResponse, from the data file ``codes/top.yaml``.

A response carries one item per TOP item (``linkId`` = the item id; ``valueInteger`` for
days 0-28, ratings 0-20 and amounts 0 or more; ``valueBoolean`` for yes/no) and the item
``timepoint`` (``valueCoding.code`` start | review | exit | post-exit). Items may be left
out (the form's "not answered").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from mappings.codes import CODES_DIR

TIMEPOINT_SYSTEM = "https://pathway.scot/CodeSystem/top-timepoint"
RANGES = {"days": (0, 28), "rating": (0, 20), "amount": (0, 1000)}


@dataclass(frozen=True)
class TopItem:
    id: str
    section: str
    text: str
    type: str  # days | rating | amount | yes-no
    better: str  # lower | higher


@dataclass(frozen=True)
class TopForm:
    url: str
    title: str
    timepoints: tuple[str, ...]
    review_interval_weeks: int
    sections: tuple[tuple[str, str], ...]
    items: tuple[TopItem, ...]

    def item(self, item_id: str) -> TopItem | None:
        return next((i for i in self.items if i.id == item_id), None)


@lru_cache(maxsize=1)
def top_form() -> TopForm:
    document = yaml.safe_load((CODES_DIR / "top.yaml").read_text(encoding="utf-8"))
    items = tuple(TopItem(i["id"], s["id"], i["text"], i["type"], i["better"]) for s in document["sections"] for i in s["items"])
    return TopForm(
        document["url"], document["title"], tuple(document["timepoints"]), int(document["review_interval_weeks"]),
        tuple((s["id"], s["title"]) for s in document["sections"]), items,
    )


def questionnaire() -> dict[str, Any]:
    """The TOP Questionnaire resource (FHIR R4)."""
    form = top_form()
    groups = []
    for section_id, title in form.sections:
        questions = []
        for item in (i for i in form.items if i.section == section_id):
            question: dict[str, Any] = {"linkId": item.id, "text": item.text, "type": "boolean" if item.type == "yes-no" else "integer"}
            if item.type in RANGES:
                low, high = RANGES[item.type]
                question["extension"] = [
                    {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": low},
                    {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": high},
                ]
            questions.append(question)
        groups.append({"linkId": section_id, "text": title, "type": "group", "item": questions})
    timepoint = {
        "linkId": "timepoint", "text": "Treatment stage", "type": "choice", "required": True,
        "answerOption": [{"valueCoding": {"system": TIMEPOINT_SYSTEM, "code": t}} for t in form.timepoints],
    }
    return {
        "resourceType": "Questionnaire", "id": "top", "url": form.url, "name": "TreatmentOutcomesProfile", "title": form.title,
        "status": "active", "subjectType": ["Patient"], "item": [timepoint, *groups],
    }


def _answers(response: dict[str, Any]) -> dict[str, Any]:
    """linkId -> the first answer's value, from top-level items and one level of groups."""
    found: dict[str, Any] = {}
    for item in response.get("item", []):
        for nested in [item, *item.get("item", [])]:
            for answer in nested.get("answer", [])[:1]:
                value = next((v for k, v in answer.items() if k.startswith("value")), None)
                found[nested.get("linkId")] = value
    return found


def read_top(response: dict[str, Any]) -> tuple[str, dict[str, int | bool]]:
    """(timepoint, item id -> value) of a TOP response; ValueError naming the item that is wrong."""
    form = top_form()
    answers = _answers(response)
    timepoint = answers.pop("timepoint", None)
    code = timepoint.get("code") if isinstance(timepoint, dict) else None
    if code not in form.timepoints:
        raise ValueError(f"item timepoint must be a valueCoding with code {' | '.join(form.timepoints)}, not {timepoint!r}")
    values: dict[str, int | bool] = {}
    for link_id, value in answers.items():
        item = form.item(str(link_id))
        if item is None:
            raise ValueError(f"item {link_id!r} is not a TOP item (see the Questionnaire {form.url})")
        if item.type == "yes-no":
            if not isinstance(value, bool):
                raise ValueError(f"item {item.id}: answer valueBoolean (yes/no), not {value!r}")
        else:
            low, high = RANGES[item.type]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"item {item.id}: answer a valueInteger from {low} to {high}, not {value!r}")
        values[item.id] = value
    if not values:
        raise ValueError("a TOP reading needs at least one answered item besides the timepoint")
    return str(code), values
