"""An embedded, pure-Python MQTT 3.1.1 broker (amqtt) for the demo and for trying the product on one machine.

It exists so `edgectl demo` needs nothing installed beyond the Python packages: no Mosquitto. It listens on
loopback by default, allows anonymous clients and keeps retained messages and last wills in memory.
It must never be used in production (no authentication, no ACL, no persistence) and never binds anything but
what the caller asked for. amqtt is imported here and nowhere else.

Run: `python -m control_plane.adapters.embedded_broker --host 127.0.0.1 --port 1883` (stops on SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import BrokerError

log = logging.getLogger("embedded_broker")


class BrokerStartError(Exception):
    """The broker could not start (port taken, address not local); the text says which address and why."""


class _DropStartupTraceback(logging.Filter):
    """amqtt logs a traceback when it cannot bind; BrokerStartError already says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883


def broker_config(address: BrokerAddress) -> dict[str, Any]:
    """amqtt's configuration: one TCP listener, anonymous clients, and no $SYS topics or packet logging."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{address.host}:{address.port}"}},
        "timeout_disconnect_delay": 0,
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve_until(address: BrokerAddress, stop: asyncio.Event) -> None:
    """Start the broker, wait for `stop`, then shut it down (clients see their connections closed)."""
    broker = Broker(broker_config(address))
    try:
        await broker.start()
    except BrokerError as exc:
        raise BrokerStartError(f"cannot listen on {address.host}:{address.port}: {exc.__cause__ or exc}") from exc
    log.info("embedded MQTT broker listening on %s:%d", address.host, address.port)
    try:
        await stop.wait()
    finally:
        await broker.shutdown()
        log.info("embedded MQTT broker stopped")


async def _main(address: BrokerAddress) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve_until(address, stop)


def _parse_args(argv: list[str]) -> BrokerAddress:
    parser = argparse.ArgumentParser(
        prog="python -m control_plane.adapters.embedded_broker",
        description="Embedded MQTT 3.1.1 broker for demos (anonymous, in-memory; not for production).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="TCP port to listen on (default 1883)")
    args = parser.parse_args(argv)
    return BrokerAddress(host=args.host, port=args.port)


def main(argv: list[str] | None = None) -> int:
    address = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # amqtt logs every connection at INFO and every bad client at ERROR with a traceback; keep ours readable.
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("amqtt.broker").addFilter(_DropStartupTraceback())
    try:
        asyncio.run(_main(address))
    except BrokerStartError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
