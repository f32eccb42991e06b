"""EMIS-style GP extracts (DESIGN §5.1): a folder or zip of CSV tables into FHIR R4.

``read(data, ids, index, foreign)`` yields one :class:`~adapters.common.Mapped` or
:class:`~adapters.common.Quarantined` per source row. The practice and its
users come first (read for the references to them: the directory itself comes
from ``conf/``), then patients (Patient + carer RelatedPerson); consultations (Encounter),
observations (Observation, or Condition for problems), drug records
(MedicationStatement) and issues (MedicationRequest) are then streamed.
"""

from adapters.emis.reader import read

__all__ = ["read"]
