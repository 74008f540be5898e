"""Unlearning algorithms: Datamodel Matching and its variants, on the shared interface."""

from dmm.unlearning.base import METHODS, Method, Problem, Result, get_method

__all__ = ["METHODS", "Method", "Problem", "Result", "get_method"]
