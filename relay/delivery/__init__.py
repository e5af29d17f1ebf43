"""Delivery: the retry policy and the worker loop."""
