"""Command line: ``voicegw serve --config PATH``, ``voicegw check-config PATH``, ``voicegw config-schema``, and
the API commands (``voicegw call|assistant|logs ...``, see gateway.cli_api)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gateway.cli_api import add_commands as add_api_commands
from gateway.cli_api import run as run_api_command
from gateway.config import ConfigError, config_json_schema, load_config


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import run

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"voicegw: invalid configuration: {exc}", file=sys.stderr)
        return 2
    return run(config, args.config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(f"{args.path}: invalid: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.path}: OK ({len(config.assistants)} assistants, {len(config.numbers)} numbers, "
        f"{len(config.trunks)} trunks; SIP on {config.sip.listen})"
    )
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicegw", description="Self-hosted voice-AI SIP gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: the embedded default config)")
    serve.set_defaults(func=_cmd_serve)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path")
    check.set_defaults(func=_cmd_check_config)
    schema = sub.add_parser("config-schema", help="print the JSON schema of the config")
    schema.set_defaults(func=_cmd_config_schema)
    add_api_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "api_func", None) is not None:
        return run_api_command(args)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
