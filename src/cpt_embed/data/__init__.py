"""Corpora in, records and pairs out: readers, pair mining, shards."""
