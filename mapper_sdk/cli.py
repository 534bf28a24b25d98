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
from mapper_sdk.bus.console import ConsoleBus
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
    run.add_argument("--devices", required=True, type=Path, help="directory of CRD YAML files")
    run.add_argument("--protocol", help="run only the devices of this protocol")
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub.add_parser("version", help="print the version and the installed drivers")
    return parser


def _validate(paths: Sequence[Path], strict: bool) -> int:
    problems = loader.validate_paths(paths, Registry.from_entry_points())
    for problem in problems:
        print(problem, file=sys.stderr if problem.severity == "error" else sys.stdout)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{errors} error(s), {warnings} warning(s)")
    return 1 if errors or (strict and warnings) else 0


async def _run(devices_dir: Path, protocol: str | None) -> int:
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with MapperRuntime(ConsoleBus(), registry=registry) as runtime:
        applied = await runtime.apply(bound)
        log.info("running %d device(s); Ctrl-C to stop", len(applied.started))
        await stop.wait()
        log.info("stopping")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        registry = Registry.from_entry_points()
        print(f"mapper-sdk {__version__}; drivers: {', '.join(registry.names()) or 'none'}")
        return 0
    if args.command == "validate":
        return _validate(args.paths, args.strict)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_run(args.devices, args.protocol))


if __name__ == "__main__":
    raise SystemExit(main())
