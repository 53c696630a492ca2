"""Traces and structured logs: what an operator reads to explain a message."""
