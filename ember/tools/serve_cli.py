"""``ember serve``: OpenVINO Model Server's flags over :class:`ember.serve.Server`.

    ember serve --model_path models/resnet --model_name resnet --rest_port 8000 --port 9000
    ember serve --config_path config.json --rest_port 8000
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ember.errors import EmberError


def server_config(args: argparse.Namespace) -> Any:
    """The typed :class:`~ember.serve.ServerConfig` the flags describe (no server started)."""
    from ember.serve import BatchingConfig, ModelConfig, ServerConfig, VersionPolicy, load_config_file

    if bool(args.config_path) == bool(args.model_path):
        raise EmberError("ember serve: give either --config_path or --model_path (with --model_name)")
    if args.config_path:
        models = load_config_file(args.config_path)
    else:
        if not args.model_name:
            raise EmberError("ember serve: --model_path needs --model_name")
        try:
            plugin = json.loads(args.plugin_config) if args.plugin_config else {}
        except json.JSONDecodeError as e:
            raise EmberError(f"ember serve: --plugin_config is not JSON: {e}") from None
        models = [ModelConfig(
            name=args.model_name, base_path=Path(args.model_path).expanduser().resolve(),
            version_policy=VersionPolicy.from_json(args.model_version_policy, args.model_name),
            target_device=args.target_device, plugin_config=plugin, nireq=args.nireq,
            batching=BatchingConfig(args.max_batch_size, args.max_queue_delay_us),
            max_queue_size=args.max_queue_size)]
    if not args.rest_port and not args.port:
        raise EmberError("ember serve: --rest_port and --port are both 0: nothing would listen")
    if args.model_path and not models[0].base_path.is_dir():
        # OVMS exits when its single model's path is missing; a config file's models may appear later
        raise EmberError(f"ember serve: --model_path {args.model_path} is not a folder "
                         "(expected <model_path>/<version>/model.xml or model.onnx)")
    return ServerConfig(models=tuple(models), host=args.host, rest_port=args.rest_port or None,
                        grpc_port=args.port or None, poll_wait_seconds=args.file_system_poll_wait_seconds,
                        max_request_bytes=args.max_request_bytes, grpc_workers=args.grpc_workers,
                        shutdown_grace_seconds=args.shutdown_grace_seconds,
                        config_path=Path(args.config_path).resolve() if args.config_path else None)


def cmd_serve(args: argparse.Namespace) -> int:
    from ember.serve import Server, require_extra

    require_extra()
    config = server_config(args)
    logging.getLogger("ember.serve").setLevel(min(logging.INFO, logging.getLogger().level or logging.INFO))
    if args.access_log:
        logging.getLogger("ember.serve.access").setLevel(logging.INFO)
    else:
        logging.getLogger("ember.serve.access").setLevel(logging.WARNING)
    server = Server(config)
    server.serve_forever()
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``ember serve``."""
    p = subparsers.add_parser("serve", help="serve models over KServe v2 REST and gRPC (OVMS-compatible flags)",
                              description='A KServe v2 model server. Needs the extra: pip install "ember[serve]".')
    p.add_argument("--model_path", help="model repository folder: <model_path>/<version>/model.xml|.onnx")
    p.add_argument("--model_name", help="the name clients use")
    p.add_argument("--config_path", help="OVMS config.json with model_config_list (several models)")
    p.add_argument("--port", type=int, default=9000, help="gRPC port (0: off; default 9000)")
    p.add_argument("--rest_port", type=int, default=8000, help="REST port (0: off; default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--target_device", default="CPU", help="device for --model_path (default CPU)")
    p.add_argument("--plugin_config", help='device properties as JSON, e.g. \'{"PERFORMANCE_HINT": "THROUGHPUT"}\'')
    p.add_argument("--nireq", type=int, default=0, help="parallel inference requests (default: the device's optimum)")
    p.add_argument("--model_version_policy", help='e.g. \'{"latest": {"num_versions": 2}}\', \'{"all": {}}\'')
    p.add_argument("--max_batch_size", type=int, default=1,
                   help="dynamic batching: join concurrent requests up to this many rows (1: off)")
    p.add_argument("--max_queue_delay_us", type=int, default=1000,
                   help="dynamic batching: longest wait for more requests, in microseconds")
    p.add_argument("--max_queue_size", type=int, default=256,
                   help="requests queued per model version before answering 503")
    p.add_argument("--max_request_bytes", type=int, default=64 * 1024 * 1024, help="larger bodies get 413")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="how often to look for new/removed versions (0: never)")
    p.add_argument("--grpc_workers", type=int, default=64, help="gRPC handler threads")
    p.add_argument("--shutdown_grace_seconds", type=float, default=30.0,
                   help="on SIGTERM, how long requests in flight may take to finish")
    p.add_argument("--access_log", action=argparse.BooleanOptionalAction, default=True,
                   help="one JSON line per request on the ember.serve.access logger (default on)")
    p.set_defaults(func=cmd_serve)
