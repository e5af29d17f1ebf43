"""relay: a verified, durable notification relay for Clerk (Svix) webhooks."""

__version__ = "0.1.0"
