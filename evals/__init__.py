"""Evaluation: margins, KLoM, membership inference, accuracy, LDS."""
