"""Extraction rules: plain plan facts in, lineage (`model.WriteLineage`) out. No py4j here."""
