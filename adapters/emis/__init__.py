"""EMIS-style GP extracts (DESIGN §5.1): a folder or zip of CSV tables into FHIR R4.

``read(data, index)`` yields one :class:`~adapters.common.Mapped` or
:class:`~adapters.common.Quarantined` per source row. The practice
(Organization), its users (Practitioner + PractitionerRole) and patients
(Patient + carer RelatedPerson) come first; consultations (Encounter),
observations (Observation, or Condition for problems), drug records
(MedicationStatement) and issues (MedicationRequest) are then streamed.
"""

from adapters.emis.reader import read

__all__ = ["read"]
