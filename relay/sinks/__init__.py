"""Sinks: where rendered messages go. See ``relay.sinks.base`` for the contract."""
