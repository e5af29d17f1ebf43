"""Workflows: delays, send windows, cancel-on-event, digests, once and throttle.

They are states and rows in the store, decided at ingest in the commit that stores the event,
never timers in memory: a delayed send is a delivery due later (``scheduled``); a cancel or a
suppression is a status with its reason; a digest is one open batch row per (rule, key), its
events ``batched`` deliveries; once/throttle keep the sends taken per key. A restart forgets
nothing, and several replicas share them through the database's own constraints.

- ``windows``: the days and hours a send may go out, and its next opening (``zoneinfo``).
- ``spec``: the runtime types ``rules.yaml``'s keys compile to (``relay.config.workflow``).
- ``plan``: an event's deliveries and workflow steps, for ingest (``relay.store.steps``).

The worker completes them: it makes due scheduled deliveries pending (``promote_due``), moves a
delivery that comes due outside its send window to the window's opening (a retry, a replay, a
reload that changed the window), and renders a digest over its batch's events.
"""
