"""Evaluation: the protocol (results.json / results.md) and its figures."""
