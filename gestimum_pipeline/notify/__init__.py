"""Notifications to people: the alert webhook client (no Dagster)."""
