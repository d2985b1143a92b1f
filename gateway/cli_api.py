"""The CLI's API commands, in the spirit of Vapi's CLI: ``voicegw call create|list|get|end``,
``voicegw assistant list|create|get|update|delete`` and ``voicegw logs calls <id>``.

They talk to a running gateway's HTTP API (``--api``, default ``$VOICEGW_API_URL`` or
``http://127.0.0.1:8080``; ``--api-key``, default ``$VOICEGW_API_KEY``). Output is a human-readable table by
default and the API's JSON with ``--json``. ``call create`` follows the call while it rings and prints each
status change (``--no-wait`` returns at once). Exit status: 0 done, 1 the API refused or failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

DEFAULT_API = "http://127.0.0.1:8080"
FOLLOW_POLL_SECONDS = 0.5


class ApiFailure(Exception):
    """The API answered with an error, or could not be reached; the message is for the user."""


class Api:
    def __init__(self, base_url: str, api_key: str | None, *, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=15.0, transport=transport)

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self.client.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise ApiFailure(f"cannot reach the gateway API at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise ApiFailure(f"{method} {path}: HTTP {response.status_code}: {_error_text(response)}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiFailure(f"{method} {path}: the API answered something that is not JSON") from None


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    detail = payload.get("detail", payload.get("message", payload)) if isinstance(payload, dict) else payload
    if isinstance(detail, list):  # FastAPI validation errors: name each field path
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return detail if isinstance(detail, str) else json.dumps(detail)


# ---------------------------------------------------------------------------------------------- output


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], out: TextIO) -> None:
    """``columns``: (header, dotted key). Missing values print as '-'."""
    cells = [[_cell(_dig(row, key)) for _, key in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(columns)]
    print("  ".join(h.upper().ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)
    if not rows:
        print("(none)", file=out)


def _dig(row: dict[str, Any], key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))[:40]
    return str(value)


CALL_COLUMNS = (("id", "id"), ("type", "type"), ("status", "status"), ("customer", "customer.number"),
                ("assistant", "assistantId"), ("created", "createdAt"), ("ended reason", "endedReason"))
ASSISTANT_COLUMNS = (("id", "id"), ("name", "name"), ("model", "model.provider"), ("voice", "voice.provider"),
                     ("updated", "updatedAt"))


def _show(obj: Any, args: argparse.Namespace, columns: Sequence[tuple[str, str]], out: TextIO) -> None:
    if args.json:
        print(json.dumps(obj, indent=2), file=out)
    elif isinstance(obj, list):
        _table(obj, columns, out)
    elif isinstance(obj, dict):
        width = max((len(k) for k in obj), default=0)
        for key, value in obj.items():
            if key in ("artifact", "messages", "assistant") and not args.verbose:
                continue
            print(f"{key.ljust(width)}  {_cell(value) if isinstance(value, (dict, list)) else value}", file=out)
        transcript = obj.get("transcript") or _dig(obj, "artifact.transcript")
        if transcript and not args.json:
            print("\ntranscript:\n" + "\n".join("  " + line for line in str(transcript).splitlines()), file=out)


def _items(payload: Any) -> list[dict[str, Any]]:
    """A list response, bare or wrapped (``{"results": [...]}``)."""
    if isinstance(payload, dict):
        for key in ("results", "items", "data", "events"):
            if isinstance(payload.get(key), list):
                return list(payload[key])
    return list(payload) if isinstance(payload, list) else []


def _read_json_or_yaml(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ApiFailure(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ApiFailure(f"{path} is neither JSON nor YAML: {exc}") from None


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiFailure(f"{what} {item!r} must look like key=value")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------- commands


def call_create(api: Api, args: argparse.Namespace, out: TextIO, *, sleep: Callable[[float], None]) -> int:
    body: dict[str, Any] = {}
    if args.assistant_file:
        body["assistant"] = _read_json_or_yaml(args.assistant_file)
    elif args.assistant_id:
        body["assistantId"] = args.assistant_id
    else:
        raise ApiFailure("give --assistant-id or --assistant-file")
    customer: dict[str, Any] = {}
    if args.number:
        customer["number"] = args.number
    if args.sip_uri:
        customer["sipUri"] = args.sip_uri
    if not customer:
        raise ApiFailure("give --number or --sip-uri")
    body["customer"] = customer
    if args.trunk:
        body["phoneNumberId"] = args.trunk
    if args.var:
        body["assistantOverrides"] = {"variableValues": _pairs(args.var, "--var")}
    if args.name:
        body["name"] = args.name
    call = api.request("POST", "/call", body=body)
    if args.no_wait or not isinstance(call, dict):
        _show(call, args, CALL_COLUMNS, out)
        return 0
    return _follow(api, call, args, out, sleep=sleep)


def _follow(api: Api, call: dict[str, Any], args: argparse.Namespace, out: TextIO, *,
            sleep: Callable[[float], None]) -> int:
    """Print each status change until the call is answered (in-progress) or over; ``--until-ended`` waits
    for the end. Progress goes to stderr with ``--json`` so stdout stays one JSON document."""
    progress = sys.stderr if args.json else out
    call_id = call["id"]
    print(f"call {call_id}: {call.get('status')}", file=progress, flush=True)
    last = call.get("status")
    deadline = time.monotonic() + args.timeout
    while True:
        status = call.get("status")
        if status == "ended" or (status in ("in-progress", "forwarding") and not args.until_ended):
            break
        if time.monotonic() > deadline:
            print(f"call {call_id}: still {status} after {args.timeout:g} s; not waiting any longer",
                  file=progress)
            break
        sleep(FOLLOW_POLL_SECONDS)
        call = api.request("GET", f"/call/{call_id}")
        if call.get("status") != last:
            last = call.get("status")
            suffix = f" ({call['endedReason']})" if call.get("endedReason") else ""
            print(f"call {call_id}: {last}{suffix}", file=progress, flush=True)
    _show(call, args, CALL_COLUMNS, out)
    return 0


def call_list(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.assistant_id:
        params["assistantId"] = args.assistant_id
    _show(_items(api.request("GET", "/call", params=params)), args, CALL_COLUMNS, out)
    return 0


def call_get(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _show(api.request("GET", f"/call/{args.id}"), args, CALL_COLUMNS, out)
    return 0


def call_end(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _show(api.request("DELETE", f"/call/{args.id}"), args, CALL_COLUMNS, out)
    return 0


def assistant_list(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _show(_items(api.request("GET", "/assistant", params={"limit": args.limit})), args, ASSISTANT_COLUMNS, out)
    return 0


def assistant_create(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    body = _read_json_or_yaml(args.file)
    if args.name:
        body["name"] = args.name
    _show(api.request("POST", "/assistant", body=body), args, ASSISTANT_COLUMNS, out)
    return 0


def assistant_get(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _show(api.request("GET", f"/assistant/{args.id}"), args, ASSISTANT_COLUMNS, out)
    return 0


def assistant_update(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _show(api.request("PATCH", f"/assistant/{args.id}", body=_read_json_or_yaml(args.file)), args,
          ASSISTANT_COLUMNS, out)
    return 0


def assistant_delete(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _show(api.request("DELETE", f"/assistant/{args.id}"), args, ASSISTANT_COLUMNS, out)
    return 0


def logs_calls(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    entries = _items(api.request("GET", f"/call/{args.id}/logs"))
    if args.json:
        print(json.dumps(entries, indent=2), file=out)
        return 0
    for entry in entries:
        stamp = entry.get("time") or entry.get("timestamp") or "-"
        kind = entry.get("type") or entry.get("event") or "-"
        rest = {k: v for k, v in entry.items() if k not in ("time", "timestamp", "type", "event", "callId")}
        detail = " ".join(f"{k}={_cell(v) if isinstance(v, (dict, list)) else v}" for k, v in rest.items())
        print(f"{stamp}  {kind:<18} {detail}".rstrip(), file=out)
    if not entries:
        print("(no log entries)", file=out)
    return 0


# ---------------------------------------------------------------------------------------------- parser


def add_commands(sub: Any) -> None:
    """Add ``call``, ``assistant`` and ``logs`` to the ``voicegw`` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", default=os.environ.get("VOICEGW_API_URL", DEFAULT_API),
                        help="gateway API base URL (default: $VOICEGW_API_URL or %(default)s)")
    common.add_argument("--api-key", default=os.environ.get("VOICEGW_API_KEY") or None,
                        help="bearer token (default: $VOICEGW_API_KEY)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    common.add_argument("-v", "--verbose", action="store_true", help="show nested objects too")

    call = sub.add_parser("call", help="place, list, inspect and end calls").add_subparsers(
        dest="action", required=True)
    create = call.add_parser("create", parents=[common], help="place an outbound call")
    create.add_argument("--assistant-id", help="assistant name from the config, or a stored assistant id")
    create.add_argument("--assistant-file", help="inline assistant (JSON/YAML file, - for stdin)")
    create.add_argument("--number", help="customer number to dial through a trunk")
    create.add_argument("--sip-uri", help="customer SIP URI to dial directly")
    create.add_argument("--trunk", help="trunk name (Vapi phoneNumberId)")
    create.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                        help="assistantOverrides.variableValues entry (repeatable)")
    create.add_argument("--name")
    create.add_argument("--no-wait", action="store_true", help="return once the call is created")
    create.add_argument("--until-ended", action="store_true", help="follow the call until it ends")
    create.add_argument("--timeout", type=float, default=120.0, help="stop following after this many seconds")
    create.set_defaults(api_func=call_create)
    lst = call.add_parser("list", parents=[common], help="list calls, newest first")
    lst.add_argument("--limit", type=int, default=20)
    lst.add_argument("--assistant-id")
    lst.set_defaults(api_func=call_list)
    for name, func, text in (("get", call_get, "show a call"), ("end", call_end, "hang up a live call")):
        p = call.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.set_defaults(api_func=func)

    assistant = sub.add_parser("assistant", help="manage stored assistants").add_subparsers(
        dest="action", required=True)
    alist = assistant.add_parser("list", parents=[common], help="list stored assistants")
    alist.add_argument("--limit", type=int, default=100)
    alist.set_defaults(api_func=assistant_list)
    acreate = assistant.add_parser("create", parents=[common], help="store an assistant (Vapi JSON/YAML)")
    acreate.add_argument("--file", required=True, help="assistant JSON/YAML file, - for stdin")
    acreate.add_argument("--name")
    acreate.set_defaults(api_func=assistant_create)
    for name, func, text in (("get", assistant_get, "show an assistant"),
                             ("delete", assistant_delete, "delete an assistant")):
        p = assistant.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.set_defaults(api_func=func)
    aupdate = assistant.add_parser("update", parents=[common], help="update an assistant (fields merged)")
    aupdate.add_argument("id")
    aupdate.add_argument("--file", required=True)
    aupdate.set_defaults(api_func=assistant_update)

    logs = sub.add_parser("logs", help="what happened on a call").add_subparsers(dest="action", required=True)
    lcalls = logs.add_parser("calls", parents=[common], help="a call's event log")
    lcalls.add_argument("id")
    lcalls.set_defaults(api_func=logs_calls)


def run(args: argparse.Namespace, *, out: TextIO = sys.stdout, transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep) -> int:
    api = Api(args.api, args.api_key, transport=transport)
    try:
        if args.api_func is call_create:
            created: int = call_create(api, args, out, sleep=sleep)
            return created
        result: int = args.api_func(api, args, out)
        return result
    except ApiFailure as exc:
        print(f"voicegw: {exc}", file=sys.stderr)
        return 1
    finally:
        api.client.close()
