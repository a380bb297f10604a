"""Kafka-to-UserFlux stream connector."""

__version__ = "0.1.0"
