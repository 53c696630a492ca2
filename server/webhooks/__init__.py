"""Outbound webhooks: Standard Webhooks signing and the outbox sender."""
