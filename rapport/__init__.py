"""Rapport: measure return on relationships from social interaction events."""

__version__ = "0.1.0"
