"""Hyper-parameter search over the train spec: search space from the schema, trials as ``rtdetr train`` runs."""
