"""Outbound network access to addresses we did not configure ourselves."""
