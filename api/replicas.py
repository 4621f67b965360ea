"""Every model-server replica behind the gateway's gRPC target, for the calls that must reach each
one rather than whichever the channel's round robin picks next.

A promotion is such a call: TF Serving moves an existing label only to a version it has loaded,
so each replica must load the version (step 1) before any replica is told the label (step 2). A
replica that skipped step 1 and read only the final config would refuse it on every later poll
and keep serving the old label (docs/gateway.md, "Promotion").

The replicas are the addresses the target resolves to: an ``ipv4:``/``ipv6:`` list, or the DNS
name's addresses (a Kubernetes headless Service lists one per ready pod). A Unix socket or a name
that does not resolve is one replica: the target itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import grpc

from api.serving_client import ServingClient

if TYPE_CHECKING:
    from api.serving_tls import TLS


def _host_port(authority: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` to its parts; None without a numeric port."""
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


def _address_target(host: str, port: int) -> str:
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _name_of(target: str) -> tuple[str, int] | None:
    """The DNS name and port of a ``host:port``, ``dns:host:port`` or ``dns://[authority]/host:port``
    target; None for targets that name no host (``unix:``, ``ipv4:`` lists, …)."""
    if target.startswith("dns:"):
        target = target.removeprefix("dns:")
        if target.startswith("//"):
            target = target[2:].partition("/")[2]
    elif _scheme(target) is not None:
        return None
    return _host_port(target)


def _scheme(target: str) -> str | None:
    head, sep, rest = target.partition(":")
    # "name:8500" has a port where a scheme would have its path; "[::1]:8500" is an address.
    return head if sep and not rest.isdigit() and not target.startswith("[") else None


async def replica_targets(target: str) -> list[str]:
    """One gRPC target per replica behind ``target``, in a stable order."""
    scheme = _scheme(target)
    if scheme in ("ipv4", "ipv6"):
        addresses = target.partition(":")[2].split(",")
        return [f"{scheme}:{address}" for address in addresses if address]
    named = _name_of(target)
    if named is None:
        return [target]
    host, port = named
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return [target]
    found = sorted({str(info[4][0]) for info in infos})
    return [_address_target(address, port) for address in found] or [target]


@asynccontextmanager
async def reachable_replicas(
    client: ServingClient, model: str, tls: TLS | None
) -> AsyncIterator[list[ServingClient]]:
    """A client per replica that answers (a ``GetModelStatus`` of ``model``), closed on leaving.

    One replica: ``client`` itself. An address that refuses the call (a pod shutting down, the
    IPv6 address of a server listening on IPv4 only) is left out; the channel's round robin sends
    it no traffic either. None answering: ``[client]``, whose calls then fail as usual.
    """
    targets = await replica_targets(client.target)
    if len(targets) <= 1:
        yield [client]
        return
    named = _name_of(client.target)
    if tls is not None and tls.server_name is None and named is not None:
        # Addresses are dialled directly: the certificate still names the host.
        tls = dataclasses.replace(tls, server_name=named[0])
    async with AsyncExitStack() as stack:
        replicas = []
        for target in targets:
            replica = ServingClient(
                target,
                client.timeout_s,
                retries=1,
                metadata_timeout_s=client.metadata_timeout_s,
                tls=tls,
            )
            stack.push_async_callback(replica.close)
            replicas.append(replica)
        answers = await asyncio.gather(*(_answers(replica, model) for replica in replicas))
        reachable = [replica for replica, ok in zip(replicas, answers, strict=True) if ok]
        # None answering: calls through the shared channel fail as the promotion expects.
        yield reachable or [client]


async def _answers(replica: ServingClient, model: str) -> bool:
    try:
        await replica.model_status(model)
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.NOT_FOUND  # up, without the model yet
    return True
