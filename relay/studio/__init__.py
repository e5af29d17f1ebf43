"""``relay studio``: a local web page that renders every rule against the sample events (and
pasted or stored ones) as their recipients would see them, and follows the files live.

``workspace`` loads the project and renders events through ``relay.config.samples.preview``;
``exhibits`` turns each rendered send into what its sink type shows (an email, a Slack message,
an HTTP request, a SQL statement); ``slack`` draws Slack's mrkdwn; ``app`` is the Starlette app
with its Jinja pages and the small script in ``static/``.
"""
