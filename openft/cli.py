"""The `openft` command: `serve`, `worker` and the tools."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from pathlib import Path

from openft.config import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="openft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API (and one embedded worker)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8000)")
    commands.add_parser("worker", help="run a standalone worker on the same database and data directory")
    commands.add_parser(
        "gc", help="remove temporaries, orphan blobs, expired files and uploads, finished resume states"
    )
    data = commands.add_parser("data", help="training data tools").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="check a training file before uploading it")
    check.add_argument("files", type=Path, nargs="+", metavar="FILE")
    check.add_argument("--model", default=None, help="base model to count tokens with (default: the embedded one)")
    check.add_argument("--epochs", type=int, default=None, help="epochs to bill (default: what 'auto' would pick)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--no-timing", action="store_true", help="skip measuring training speed on this machine")
    jobs = commands.add_parser("jobs", help="fine-tuning job tools").add_subparsers(dest="jobs_command", required=True)
    follow = jobs.add_parser("follow", help="print a job's events as they arrive until it ends")
    follow.add_argument("job_id")
    follow.add_argument("--base-url", default=None, help="default: $OPENAI_BASE_URL or http://127.0.0.1:8000/v1")
    follow.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY or 'local'")
    models = commands.add_parser("models", help="model tools").add_subparsers(dest="models_command", required=True)
    export = models.add_parser("export", help="download a fine-tuned model or checkpoint into a folder")
    export.add_argument("model", help="a fine-tuned model (ft:...) or a checkpoint (...:ckpt-step-N)")
    export.add_argument(
        "--format",
        choices=["merged", "peft", "gguf"],
        default="merged",
        help="merged (default): standalone; peft: the adapter; gguf: for llama.cpp and Ollama",
    )
    export.add_argument("--out", type=Path, default=None, help="folder to create (default: ./<model>-<format>)")
    export.add_argument("--base-url", default=None, help="default: $OPENAI_BASE_URL or http://127.0.0.1:8000/v1")
    export.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY or 'local'")
    arguments = parser.parse_args(argv)
    settings = Settings()
    try:  # fail at start, not on the first request
        _ = settings.key_organizations, settings.registered_base_models
    except ValueError as error:
        print(f"openft: {error}", file=sys.stderr)
        sys.exit(2)
    quiet_tool = arguments.command in ("data", "jobs", "models")
    logging.basicConfig(
        level="WARNING" if quiet_tool else settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if arguments.command == "serve":
        sys.exit(serve_command(settings, arguments.host or settings.host, arguments.port or settings.port))
    if arguments.command == "worker":
        sys.exit(worker_command(settings))
    if arguments.command == "gc":
        sys.exit(gc_command(settings))
    if arguments.command == "data":
        sys.exit(data_check_command(settings, arguments))
    if arguments.command == "jobs":
        sys.exit(follow_command(arguments))
    if arguments.command == "models":
        sys.exit(export_command(arguments))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_command(settings: Settings, host: str, port: int) -> int:
    if settings.single_user and not is_loopback(host):
        print(
            f"openft: refusing to listen on {host} without API keys. Set OPENFT_API_KEYS=key:organization "
            "(comma-separated pairs), or listen on 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    from openft.api.app import create_app
    from openft.api.http_protocol import RequestLimits, limited_protocol
    from openft.service import build_services

    services = build_services(settings)
    app = create_app(services)
    # uvicorn's httptools protocol, with bounded headers and read timeouts (api/http_protocol.py);
    # no WebSocket routes, so no upgrade hands a connection to a protocol without those limits.
    http = limited_protocol(RequestLimits.from_settings(settings))
    config = uvicorn.Config(app, host=host, port=port, log_level=settings.log_level.lower(), http=http, ws="none")
    try:
        # Bind before anything else starts: a second `openft serve` on a busy port must not
        # start a worker (which could claim a job) or load models before it fails.
        sock = config.bind_socket()
    except SystemExit:  # uvicorn has logged why (address in use, ...)
        services.close()
        return 3
    key_hint = "any key" if settings.single_user else "one of the keys in OPENFT_API_KEYS"
    url_host = f"[{host}]" if ":" in host else host
    print(
        f"openft is serving on http://{url_host}:{port}/v1 (data in {settings.data_dir.resolve()})\n"
        f"Point the official SDK at it:\n"
        f"    from openai import OpenAI\n"
        f'    client = OpenAI(base_url="http://{url_host}:{port}/v1", api_key="...")  # {key_hint}\n'
        f"or export OPENAI_BASE_URL=http://{url_host}:{port}/v1\n"
        f"Dashboard: http://{url_host}:{port}/dashboard/",
        flush=True,
    )
    services.chat.preload()
    worker = services.new_worker() if settings.embedded_worker else None
    if worker is not None:
        worker.start()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C (uvicorn.run swallows it too): a normal way to stop
        pass
    finally:
        if worker is not None:
            worker.stop()
        services.close()
    return 0


def worker_command(settings: Settings) -> int:
    import signal
    import threading

    from openft.service import build_services

    services = build_services(settings)
    worker = services.new_worker()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    worker.start()
    print(f"openft worker {worker.id} is running on {settings.resolved_database_url}", flush=True)
    stop.wait()
    worker.stop()
    services.close()
    return 0


def gc_command(settings: Settings) -> int:
    from openft.service import build_services
    from openft.service.gc import GarbageCollector

    services = build_services(settings)
    try:
        print(f"openft gc: {GarbageCollector(services.database, services.blobs, settings).collect()}")
    finally:
        services.close()
    return 0


def data_check_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """Exit status 0 when every file is usable, 1 when one has errors, 2 when one can't be read."""
    from openft.errors import NotFound
    from openft.service.data_report import check_training_file, format_report
    from openft.service.models import BaseModelRegistry

    missing = [str(path) for path in arguments.files if not path.is_file()]
    if missing:
        print(f"openft: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    base_models = BaseModelRegistry(settings)
    model = arguments.model or settings.embedded_model_id
    try:
        reports = [
            check_training_file(
                path,
                model=model,
                epochs=arguments.epochs,
                measure=not arguments.no_timing,
                settings=settings,
                base_models=base_models,
            )
            for path in arguments.files
        ]
    except NotFound as error:
        print(f"openft: {error.message}", file=sys.stderr)
        return 2
    if arguments.json:
        documents = [report.as_dict() for report in reports]
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    else:
        print("\n\n".join(format_report(report) for report in reports))
    return 1 if any(report.n_errors for report in reports) else 0


def follow_command(arguments: argparse.Namespace) -> int:
    import os

    import openai

    from openft.follow import follow

    client = openai.OpenAI(
        base_url=arguments.base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1",
        api_key=arguments.api_key or os.environ.get("OPENAI_API_KEY") or "local",
    )
    try:
        return follow(client, arguments.job_id)
    except openai.APIStatusError as error:
        print(f"openft: {error.message}", file=sys.stderr)
        return 2
    except openai.APIConnectionError as error:
        print(f"openft: cannot reach the server: {error}", file=sys.stderr)
        return 2


def export_command(arguments: argparse.Namespace) -> int:
    import os

    import httpx

    from openft.export_download import ExportFailed, download_export

    try:
        out = download_export(
            arguments.base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1",
            arguments.api_key or os.environ.get("OPENAI_API_KEY") or "local",
            arguments.model,
            arguments.format,
            arguments.out,
        )
    except ExportFailed as error:
        print(f"openft: {error}", file=sys.stderr)
        return 2
    except httpx.HTTPError as error:
        print(f"openft: cannot download the export: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0
