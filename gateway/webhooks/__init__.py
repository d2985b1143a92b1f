"""Server messages (Vapi webhooks): built from calls, queued in a durable SQLite outbox, delivered at least
once with retries. See :mod:`gateway.webhooks.dispatcher` (what and where), :mod:`gateway.webhooks.outbox`
(durability, ordering), :mod:`gateway.webhooks.delivery` (signed POSTs, back-off) and
:mod:`gateway.webhooks.messages` (Vapi shapes)."""

from gateway.webhooks.delivery import DeliveryWorker
from gateway.webhooks.dispatcher import Destination, WebhookDispatcher, wants
from gateway.webhooks.outbox import Outbox, OutboxEntry, OutboxMessage, RetryPolicy
from gateway.webhooks.service import Webhooks

__all__ = [
    "DeliveryWorker",
    "Destination",
    "Outbox",
    "OutboxEntry",
    "OutboxMessage",
    "RetryPolicy",
    "WebhookDispatcher",
    "Webhooks",
    "wants",
]
