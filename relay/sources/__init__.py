"""Sources: where webhooks come in. See ``relay.sources.base`` for the contract."""
