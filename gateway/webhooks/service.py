"""The server-message machinery of one gateway, assembled: the outbox in the storage file, the dispatcher
(a call observer) and the delivery worker. The composition root (gateway.app) opens it, registers
:attr:`Webhooks.dispatcher` with the call manager, runs :meth:`Webhooks.run` in the server's TaskGroup and
awaits :meth:`Webhooks.stop` once the calls have drained."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gateway.webhooks.delivery import DeliveryWorker, retry_policy
from gateway.webhooks.dispatcher import WebhookDispatcher
from gateway.webhooks.outbox import Outbox

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, WebhookConfig
    from gateway.observability.metrics import Metrics

__all__ = ["Webhooks"]

STOP_GRACE_SECONDS = 2.0


class Webhooks:
    def __init__(self, outbox: Outbox, dispatcher: WebhookDispatcher, worker: DeliveryWorker) -> None:
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.worker = worker

    @classmethod
    def open(cls, config: GatewayConfig, metrics: Metrics | None = None, *,
             rng: random.Random | None = None) -> Webhooks:
        """Open (create) the outbox at ``storage.path``; its directory is created when missing."""
        outbox = Outbox(config.storage.path)
        worker = DeliveryWorker(outbox, config.webhooks, rng=rng or random.Random(), metrics=metrics)
        dispatcher = WebhookDispatcher(config.webhooks, outbox, wake=worker.wake)
        if metrics is not None:
            metrics.webhook_outbox_depth.set(outbox.depth)
        return cls(outbox, dispatcher, worker)

    def reconfigure(self, config: WebhookConfig) -> None:
        """Config reload: timeouts, back-off and the signing secret apply to messages from now on."""
        self.dispatcher.config = config
        self.worker.config = config
        self.worker.policy = retry_policy(config)

    async def run(self) -> None:
        """Deliver until :meth:`stop` (a task in the server's TaskGroup)."""
        await self.worker.run()

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Give deliveries in flight ``grace`` seconds, write everything buffered, close the database."""
        try:
            await self.worker.stop(grace)
        finally:
            self.outbox.close()
