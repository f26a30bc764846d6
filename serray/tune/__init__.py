"""Hyperparameter search: search spaces, Tuner wiring, resume."""
