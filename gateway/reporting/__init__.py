"""Reporting the partnership owes (issue 16): drug and alcohol treatment waiting times against
the national standard, data completeness before sign-off, TOP and Outcome Star change, and
MAT 1 evidence; all computed from the stored FHIR resources, rendered as CSV and as FHIR
Measure / MeasureReport."""
