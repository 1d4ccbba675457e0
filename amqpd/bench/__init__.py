"""``amqpd bench``: a load generator for amqpd and any AMQP 0-9-1 broker.

Its own small client (``client``, ``frames``) drives publishers and
consumers in separate processes (``publisher``, ``consumer``, ``fleet``);
``scenarios`` and ``operations`` define what is measured, ``runner`` runs
one repeat and cleans up, ``session`` orders the repeats over one or more
brokers (alternating them), ``results`` and ``report`` write JSON lines and
tables, and ``cli`` is the command. See docs/performance.md.
"""
