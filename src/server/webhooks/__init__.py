"""Webhook delivery: the SSRF guard, Standard Webhooks signatures and the
outbox sender (the operations live in domain/webhooks.py)."""
