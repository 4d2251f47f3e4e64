"""The `cove` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cove", description="sandboxes for AI agents")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the whole platform")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info")
    image = sub.add_parser("image", help="build the base image now (done on first need too)")
    image.add_argument("name", nargs="?", default="base")
    admin = sub.add_parser("admin", help="balances and usage (works while the server runs)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    top_up = admin_sub.add_parser("top-up", help="add dollars to a workspace's balance")
    top_up.add_argument("workspace")
    top_up.add_argument("amount", help="dollars, e.g. 25.00")
    usage = admin_sub.add_parser("usage", help="balance and usage per workspace, as JSON")
    usage.add_argument("workspace", nargs="?")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "serve":
        return _serve(args.host, args.port, args.log_level)
    if args.command == "admin":
        return _admin(args)
    return _build_image(args.name)


def _public_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _serve(host: str, port: int, log_level: str) -> int:
    import uvicorn

    from cove.config import Settings
    from cove.runtime.preflight import preflight
    from cove.server import create_app

    problem = preflight()
    if problem:
        print(f"cove: {problem}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env(public_url=_public_url(host, port))
    except ValueError as exc:
        print(f"cove: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # cove is the edge; no X-Forwarded-* rewriting per request
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; a no-op handler here makes
    # a clean stop exit 0 instead of dying by the signal.
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, lambda *_: None)
    server.run()
    return 0 if server.started else 1


def _build_image(name: str) -> int:
    from cove.config import Settings
    from cove.runtime.base import RuntimeError_
    from cove.runtime.images import ensure_image

    try:
        ensure_image(Settings.from_env(), name)
    except RuntimeError_ as exc:
        print(f"cove: {exc.reason}", file=sys.stderr)
        return 1
    return 0


def _admin(args: argparse.Namespace) -> int:
    """Straight to the database at COVE_DATA_DIR: balances live there, not in the server."""
    import asyncio
    import json

    from cove.config import Settings
    from cove.domain.errors import CoveError
    from cove.domain.pricing import format_usd, parse_usd
    from cove.services.billing import Billing, Policy
    from cove.store.db import create_schema, make_engine
    from cove.store.ledger import LedgerRepo

    async def run() -> object:
        engine = make_engine(Settings.from_env().database_url)
        try:
            await create_schema(engine)
            billing = Billing(LedgerRepo(engine), Policy())
            if args.admin_command == "usage":
                return await billing.usage(args.workspace)
            balance = await billing.top_up(args.workspace, parse_usd(args.amount))
            return {"workspace": args.workspace, "balance": format_usd(balance)}
        finally:
            await engine.dispose()

    try:
        print(json.dumps(asyncio.run(run()), indent=2))
    except (CoveError, ValueError) as exc:
        print(f"cove: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
