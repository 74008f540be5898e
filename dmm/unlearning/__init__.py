"""Unlearning algorithms: Datamodel Matching and its variants, on the shared interface."""

from dmm.unlearning import matching  # noqa: F401  (registers dmm, dm-direct, om)
from dmm.unlearning.base import METHODS, Method, Problem, Result, get_method

__all__ = ["METHODS", "Method", "Problem", "Result", "get_method"]
