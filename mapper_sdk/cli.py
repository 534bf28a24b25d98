"""The ``mapper-sdk`` command: ``validate``, ``run`` and ``version``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mapper_sdk import loader
from mapper_sdk._registry import Registry
from mapper_sdk._version import __version__
from mapper_sdk.bus import EventBus
from mapper_sdk.bus.console import ConsoleBus
from mapper_sdk.errors import ConfigError
from mapper_sdk.runtime import MapperRuntime

log = logging.getLogger("mapper_sdk")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapper-sdk", description="KubeEdge-compatible device mapper runtime."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check DeviceModel/Device YAML files")
    validate.add_argument("paths", nargs="+", type=Path, help="files or directories")
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors")
    run = sub.add_parser("run", help="run devices and print their twin reports")
    run.add_argument("--devices", type=Path, help="directory of CRD YAML files")
    run.add_argument(
        "--dmi",
        metavar="EDGECORE_SOCKET",
        help="take devices from EdgeCore over DMI gRPC (KubeEdge >= 1.15), e.g. "
        "/etc/kubeedge/dmi.sock; needs --protocol and the 'dmi' extra",
    )
    run.add_argument(
        "--mapper-socket",
        help="the socket this mapper serves DMI on (default /etc/kubeedge/<protocol>.sock)",
    )
    run.add_argument("--protocol", help="run only the devices of this protocol")
    run.add_argument(
        "--mqtt-url",
        help="EdgeCore's MQTT broker, e.g. tcp://127.0.0.1:1883 or mqtts://host:8883 "
        "(credentials from MAPPER_MQTT_USERNAME / MAPPER_MQTT_PASSWORD[_FILE]); "
        "without it, messages are printed instead of published",
    )
    run.add_argument("--node", default="edge-node", help="the edge node name (membership topics)")
    run.add_argument(
        "--id-style",
        choices=["namespaced", "name"],
        default="namespaced",
        help="device ids in topics: namespace/name (KubeEdge >= 1.16.2) or name only (older)",
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".mapper-state"),
        help="where the outbox and desired values (MQTT) or the last known devices (DMI) are "
        "persisted (default: ./.mapper-state)",
    )
    run.add_argument(
        "--confirm",
        choices=["auto", "result", "puback"],
        default="auto",
        help="when a report leaves the outbox: EdgeCore's twin/update/result, PUBACK, or auto",
    )
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub.add_parser("version", help="print the version and the installed drivers")
    opcua = sub.add_parser("opcua", help="OPC-UA tools: browse URL (needs mapper-sdk-opcua)")
    opcua.add_argument("tool", choices=["browse"])
    opcua.add_argument("args", nargs=argparse.REMAINDER, help="see: mapper-sdk opcua browse -h")
    return parser


def _validate(paths: Sequence[Path], strict: bool) -> int:
    problems = loader.validate_paths(paths, Registry.from_entry_points())
    for problem in problems:
        print(problem, file=sys.stderr if problem.severity == "error" else sys.stdout)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{errors} error(s), {warnings} warning(s)")
    return 1 if errors or (strict and warnings) else 0


def _opcua(argv: list[str]) -> int:
    try:  # the tool lives in the OPC-UA driver's distribution, imported only when asked for
        from mapper_opcua.browse import main as browse
    except ImportError as exc:
        print(f"mapper-sdk opcua needs the OPC-UA driver: pip install mapper-sdk-opcua ({exc})")
        return 2
    return browse(argv)


def _make_bus(args: argparse.Namespace) -> EventBus:
    if not args.mqtt_url:
        return ConsoleBus()
    from mapper_sdk.bus.mqtt import MqttEventBus  # imports paho only when asked for
    from mapper_sdk.bus.mqtt_settings import ConfirmMode, MqttSettings
    from mapper_sdk.bus.topics import IdStyle

    settings = MqttSettings.from_url(
        args.mqtt_url,
        node=args.node,
        id_style=IdStyle(args.id_style),
        confirm=ConfirmMode(args.confirm),
    ).with_env_credentials()
    return MqttEventBus(settings, state_dir=args.state_dir)


async def _run(args: argparse.Namespace) -> int:
    if args.dmi:
        return await _run_dmi(args)
    if args.devices is None:
        raise ConfigError("run needs --devices DIR (YAML CRDs) or --dmi SOCKET (EdgeCore)")
    devices_dir: Path = args.devices
    protocol: str | None = args.protocol
    registry = Registry.from_entry_points()
    result = loader.load_paths([devices_dir])
    bound, problems = loader.bind_all(result, registry)
    for problem in result.problems + problems:
        log.log(logging.ERROR if problem.severity == "error" else logging.WARNING, "%s", problem)
    if protocol is not None:
        bound = [d for d in bound if d.protocol == protocol]
    if not bound:
        log.error("no runnable device in %s", devices_dir)
        return 1
    stop = _stop_event()
    async with MapperRuntime(_make_bus(args), registry=registry) as runtime:
        applied = await runtime.apply(bound)
        log.info("running %d device(s); Ctrl-C to stop", len(applied.started))
        await stop.wait()
        log.info("stopping")
    return 0


async def _run_dmi(args: argparse.Namespace) -> int:
    """One protocol per process, devices from EdgeCore: KubeEdge's own deployment model."""
    if not args.protocol:
        raise ConfigError("--dmi needs --protocol NAME: EdgeCore routes devices by protocol")
    try:
        from mapper_sdk.dmi.link import DmiLink
    except ImportError as exc:
        raise ConfigError(
            f"DMI needs the 'dmi' extra: pip install 'mapper-sdk[dmi]' ({exc})"
        ) from exc
    registry = Registry.from_entry_points()
    link = DmiLink(
        args.protocol,
        registry=registry,
        mapper_socket=args.mapper_socket,
        edgecore_socket=args.dmi,
        state_dir=args.state_dir,
    )
    runtime = MapperRuntime(link, registry=registry)
    link.attach(runtime)
    stop = _stop_event()
    async with runtime:
        log.info("serving DMI for protocol %r; registering with %s", args.protocol, args.dmi)
        await stop.wait()
        log.info("stopping")
    return 0


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        registry = Registry.from_entry_points()
        print(f"mapper-sdk {__version__}; drivers: {', '.join(registry.names()) or 'none'}")
        return 0
    if args.command == "validate":
        return _validate(args.paths, args.strict)
    if args.command == "opcua":
        return _opcua(args.args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"mapper-sdk: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
