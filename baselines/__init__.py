"""Baseline unlearning algorithms."""
