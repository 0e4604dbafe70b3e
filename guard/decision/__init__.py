"""Turning hitting probabilities into decisions: policies, and the per-choice guard."""
