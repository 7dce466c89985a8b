"""The `naiad` command.

    naiad serve [--config naiad.toml] [tritonserver flags...]
    naiad config check FILE [tritonserver flags...]
    naiad config show [--config FILE] [tritonserver flags...]
    naiad --version
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from . import allocator, flags, logs, startup
from .config import NaiadConfig, as_dict, load
from .schema import ConfigError
from .version import TRITON_COMPATIBLE_VERSION, __version__

log = logging.getLogger("naiad.kernel")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="naiad",
        description="naiad: a Triton-compatible inference server for Python users.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version",
                        version=f"naiad {__version__} (Triton {TRITON_COMPATIBLE_VERSION} compatible)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server", allow_abbrev=False)
    serve.add_argument("--config", metavar="FILE", help="naiad TOML config file")
    flags.add_to_parser(serve)

    config = sub.add_parser("config", help="check or show a config", allow_abbrev=False)
    csub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate a config file (and flags) without starting", allow_abbrev=False)
    check.add_argument("file", metavar="FILE")
    flags.add_to_parser(check)
    show = csub.add_parser("show", help="print the effective config as JSON", allow_abbrev=False)
    show.add_argument("--config", metavar="FILE")
    flags.add_to_parser(show)
    csub.add_parser("reference", help="print the TOML reference (Markdown) for every section")
    return parser


def _load(path: str | None, args: argparse.Namespace) -> tuple[NaiadConfig, list[str]]:
    overrides, notes = flags.to_overrides(args)
    return load(path, overrides), notes


def _error(message: str) -> int:
    print(f"naiad: error: {message}", file=sys.stderr)
    return 2


def serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    try:
        config, notes = _load(args.config, args)
    except ConfigError as exc:
        return _error(str(exc))
    logs.configure(config.log)
    allocator.ensure(config.server.allocator, list(argv))  # may re-execute the process
    log.info("naiad %s (Triton %s compatible), allocator: %s", __version__, TRITON_COMPATIBLE_VERSION,
             allocator.active_allocator())
    for note in notes:
        if note.startswith("Warning: "):
            print(note, file=sys.stderr)  # tritonserver prints its flag warnings on stderr
        else:
            log.info("%s", note)
    models = config.services.get("models")
    init_error = startup.repository_error(config.server.model_repository) if models and models.enabled else None
    if init_error is not None and config.server.exit_on_error:
        print(init_error.creating_server(), file=sys.stderr)
        return 2

    from .kernel import Kernel, exit_now
    from .loop import run

    async def _main() -> int:
        return await Kernel(config, init_error=init_error, hard_exit=True).serve()

    exit_now(run(_main()))  # the shutdown is bounded: so is the exit


def config_command(args: argparse.Namespace) -> int:
    if args.config_command == "reference":
        print(reference_markdown())
        return 0
    path = args.file if args.config_command == "check" else args.config
    try:
        config, notes = _load(path, args)
    except ConfigError as exc:
        return _error(str(exc))
    if args.config_command == "check":
        enabled = ", ".join(s.name for s in config.enabled_services()) or "none"
        print(f"{path}: ok (services: {enabled})")
        for note in notes:
            print(f"note: {note}")
    else:
        print(json.dumps(as_dict(config), indent=2, default=str))
    return 0


def reference_markdown() -> str:
    """Every config key with its default and its tritonserver flag, from the schemas."""
    from .config import BUILTIN_SERVICES, CacheConfig, LogConfig, ServerConfig
    from .importer import import_from_string
    from .schema import reference

    sections: list[tuple[str, type]] = [("server", ServerConfig), ("log", LogConfig), ("cache", CacheConfig)]
    enabled: dict[str, bool] = {}
    for name, spec in BUILTIN_SERVICES.items():
        cls = import_from_string(spec)
        enabled[f"services.{name}"] = getattr(cls, "enabled_by_default", True)
        sections.append((f"services.{name}", cls.Config))
    out = []
    for title, cls in sections:
        out.append(f"#### `[{title}]`\n")
        out.append("| key | default | Triton flag | meaning |")
        out.append("| --- | --- | --- | --- |")
        if title.startswith("services."):
            out.append(f"| `enabled` | `{enabled[title]}` | `--allow-...` where Triton has one | run this service |")
        for key, default, flag, doc in reference(cls, ""):
            out.append(f"| `{key}` | `{default}` | {f'`{flag}`' if flag else ''} | {doc} |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the error
        return int(exc.code or 0)
    if args.command == "serve":
        return serve(args, argv)
    if args.command == "config":
        return config_command(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
