"""Push delivery of pathway events: subscriptions, the outbox, and the worker that sends it.

Workflow code calls :func:`enqueue` in its own transaction; the gateway process
runs :class:`gateway.delivery.worker.DeliveryWorker` to send what is queued.
"""

from gateway.delivery.outbox import Queued, drop_pending, enqueue, sync_subscriptions

__all__ = ["Queued", "drop_pending", "enqueue", "sync_subscriptions"]
