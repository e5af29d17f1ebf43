"""Recipients: who an email may go to, and how they say they want no more.

- ``addresses``: an address as relay compares it (``normalise``), the scopes and reasons of a
  suppression, the ``Suppression`` record and the ``SuppressionList`` a store keeps;
- ``tokens``: the one-click unsubscribe token, an HMAC over (address, category) that is checked
  without the database;
- ``links``: the link and the ``List-Unsubscribe`` headers (RFC 8058) an email of a category
  carries.

A leaf below the sinks and the store: both use it, neither owns it.
"""
