"""Ingest: partner extracts in (API and command line), mapped by adapters/, kept here."""
