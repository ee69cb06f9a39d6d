"""Curation of mined pairs: consistency filtering and hard negatives (data quality)."""
