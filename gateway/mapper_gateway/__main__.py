"""The ``mapper-gateway`` command: ``run``, ``demo`` and ``version``.

Every setting of ``GatewaySettings`` is a flag (``--mqtt-url``, ``--api``...), an environment
variable (``MAPPER_GATEWAY_MQTT_URL``...) and a config-file key; ``--help`` lists them all
from the settings model, so the three can never disagree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from pydantic import ValidationError

from mapper_gateway._version import __version__
from mapper_gateway.app import create_app
from mapper_gateway.gateway import Gateway
from mapper_gateway.settings import ENV_PREFIX, GatewaySettings
from mapper_gateway.tls import CertificateReloader, check_tls
from mapper_sdk import ConfigError, Registry

log = logging.getLogger("mapper_gateway")

_SECRET_FIELDS = {"token"}  # never a flag: a command line is visible to every local user
_METAVARS = {
    "api": "HOST:PORT",
    "dmi": "SOCKET",
    "mqtt_url": "URL",
    "devices": "DIR",
    "tls_cert": "PEM",
    "tls_key": "PEM",
    "tls_reload_interval": "SECONDS",
    "audit_file": "FILE",
    "token_file": "FILE",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapper-gateway", description="KubeEdge-compatible device gateway."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    epilog = (
        f"Every flag is also an environment variable {ENV_PREFIX}<NAME> and a key of the "
        f"config file. The API token comes from {ENV_PREFIX}TOKEN, --token-file or the config "
        "file's 'token'; without one, a token is generated and printed at start."
    )
    for name, text in (
        ("run", "run every device of every installed driver, with the REST API"),
        ("demo", "run simulated devices with an embedded broker and print the dashboard URL"),
    ):
        command = sub.add_parser(name, help=text, description=text, epilog=epilog)
        command.add_argument(
            "--config", type=Path, help=f"YAML or TOML settings file [env {ENV_PREFIX}CONFIG]"
        )
        _add_settings(command)
    sub.add_parser("version", help="print the version and the installed drivers")
    return parser


def _add_settings(parser: argparse.ArgumentParser) -> None:
    for name, field in GatewaySettings.model_fields.items():
        if name in _SECRET_FIELDS:
            continue
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        shown = "none" if default in (None, []) else str(default)
        text = f"{field.description} [env {ENV_PREFIX}{name.upper()}; default: {shown}]"
        text = text.replace("%", "%%")  # argparse formats help with %
        if field.annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        elif "list[" in str(field.annotation):
            parser.add_argument(flag, action="append", default=None, metavar="NAME", help=text)
        else:
            parser.add_argument(flag, default=None, metavar=_METAVARS.get(name, "VALUE"), help=text)


def load_settings(args: argparse.Namespace) -> GatewaySettings:
    values = {
        name: getattr(args, name)
        for name in GatewaySettings.model_fields
        if getattr(args, name, None) is not None
    }
    config = args.config or (
        Path(os.environ[f"{ENV_PREFIX}CONFIG"]) if os.environ.get(f"{ENV_PREFIX}CONFIG") else None
    )
    return GatewaySettings.load(values, config)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway stops it, then closes devices."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


async def serve(settings: GatewaySettings, *, demo: bool = False, out: TextIO = sys.stdout) -> int:
    """Run until SIGINT or SIGTERM; the devices are stopped after the API. With HTTPS, a
    renewed certificate is loaded at every ``tls_reload_interval`` and on SIGHUP."""
    check_tls(settings)  # before any device starts, so a bad pair fails at once and clearly
    if not settings.loopback_only and not settings.tls:
        log.warning(
            "the API on %s is plain HTTP beyond loopback (--insecure-http): the token and every "
            "value cross the network in clear; serve HTTPS with --tls-cert and --tls-key",
            settings.api,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        reloader = CertificateReloader.for_settings(settings)  # before uvicorn loads the pair
        if reloader is not None and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, reloader.request)
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        if demo:
            from mapper_gateway.demo import demo_devices

            settings = await stack.enter_async_context(demo_devices(settings))
        gateway = await stack.enter_async_context(Gateway(settings))
        server = _Server(_uvicorn_config(settings, create_app(gateway)))
        serving = asyncio.create_task(server.serve(), name="http")
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait([serving, listening], return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if serving.done():
            with contextlib.suppress(BaseException):
                serving.result()
            raise ConfigError(f"cannot serve the API on {settings.api}")
        announce(settings, gateway, out)
        if reloader is not None and server.config.ssl is not None:
            await stack.enter_async_context(reloader.watch(server.config.ssl))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([serving, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        log.info("stopping")
        server.should_exit = True
        await serving
    return 0


def _uvicorn_config(settings: GatewaySettings, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        lifespan="off",  # the gateway's lifecycle is ours, around the server
        access_log=False,  # a dashboard URL carries its token in the query string
        server_header=False,
        log_config=None,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=2,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )


def announce(settings: GatewaySettings, gateway: Gateway, out: TextIO) -> None:
    """Tell the person at the terminal where everything is."""
    host = settings.api_host if ":" not in settings.api_host else f"[{settings.api_host}]"
    base = f"{'https' if settings.tls else 'http'}://{host}:{settings.api_port}"
    lines = [f"mapper-gateway {__version__}: API on {base} (OpenAPI: {base}/docs)"]
    if gateway.generated_token is not None:
        lines.append(
            f"API token (generated; set {ENV_PREFIX}TOKEN to choose one): {gateway.generated_token}"
        )
        lines.append(f"dashboard: {base}/?token={gateway.generated_token}")
    else:
        lines.append(f"dashboard: {base}/?token=<your token>")
    if gateway.broker is not None:
        lines.append(
            f"watch the bus: mosquitto_sub -h {gateway.broker.host} -p {gateway.broker.port} "
            "-t '$hw/events/device/#' -v"
        )
    if gateway.files is not None:
        lines.append(f"devices: {gateway.files.directory} (edit a file: the gateway reloads it)")
    print("\n".join(lines), file=out, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        names = ", ".join(Registry.from_entry_points().names()) or "none"
        print(f"mapper-gateway {__version__}; drivers: {names}")
        return 0
    try:
        settings = load_settings(args)
    except (ValidationError, ValueError) as exc:
        print(f"mapper-gateway: invalid settings: {_describe(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(serve(settings, demo=args.command == "demo"))
    except ConfigError as exc:
        print(f"mapper-gateway: {exc}", file=sys.stderr)
        return 2


def _describe(exc: ValidationError | ValueError) -> str:
    """The problems, one a line, without the values given: one of them may be a secret."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "\n  " + "\n  ".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
