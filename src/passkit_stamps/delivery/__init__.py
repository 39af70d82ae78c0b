"""Delivery of what the outbox holds (pass updates, e-mails)."""
