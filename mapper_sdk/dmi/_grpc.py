"""Small gRPC plumbing shared by the DMI link's server and client parts."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from mapper_sdk.errors import EventBusError

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

_MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the terminating NUL on Linux


def serialize(message: Message) -> bytes:
    return message.SerializeToString()


def method_handler(
    behaviour: Callable[[Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
    request_cls: type[Req],
    response_cls: type[Resp],
) -> grpc.RpcMethodHandler[Req, Resp]:
    """A unary-unary handler of ``request_cls`` answered with a ``response_cls``."""
    del response_cls  # for the reader and the type checker: the handler returns this type
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=request_cls.FromString,
        response_serializer=serialize,
    )


def unary(
    channel: grpc.aio.Channel, service: str, method: str, response_cls: type[Resp]
) -> grpc.aio.UnaryUnaryMultiCallable[Message, Resp]:
    """The callable of ``/service/method`` on ``channel``."""
    return channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=serialize,
        response_deserializer=response_cls.FromString,
    )


def prepare_socket(path: str) -> None:
    """Make room for our socket: create the directory, remove a stale socket file."""
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise EventBusError(
            f"socket path {path!r} is longer than {_MAX_UNIX_PATH} bytes, "
            "the limit of a unix socket address"
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise EventBusError(f"{path} exists and is not a socket; refusing to replace it")
    # Left by a mapper that did not shut down cleanly (or by a previous run of this one):
    # binding fails while the file exists. EdgeCore talks to the last mapper registered.
    os.unlink(path)


async def cancel(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel the tasks given and wait until they are done."""
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    await asyncio.gather(*live, return_exceptions=True)
