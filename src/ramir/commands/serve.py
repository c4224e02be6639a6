"""``ramir serve``: a local web app to restore photos in the browser."""

from __future__ import annotations

import argparse
import logging
import signal

from ramir.commands._common import (
    add_common,
    check_tile_options,
    device_from_args,
    model_load_kwargs,
    model_path,
)
from ramir.options import WEB_MAX_PIXELS, WEB_MAX_UPLOAD_MB

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="start the local web app",
        description="Start a local web app: drop an image, optionally add a synthetic "
        "degradation, restore it and compare before/after. Works offline and binds to "
        "127.0.0.1 unless told otherwise.",
    )
    add_common(
        p,
        model=True,
        dino=True,
        quiet="only warnings in the log (the address is still printed)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0 = any free port)")
    p.add_argument("--tile", type=int, default=512, help="tile size for large images (0 = off)")
    p.add_argument("--tile-overlap", type=int, default=32)
    p.add_argument("--max-pixels", type=int, default=WEB_MAX_PIXELS)
    p.add_argument("--max-upload-mb", type=float, default=WEB_MAX_UPLOAD_MB)
    # the defaults are WebConfig's (ramir.webapp loads PyTorch: not imported here)
    p.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="requests handled at once, a thread each; more get 503 (default 32)",
    )
    p.add_argument(
        "--max-uploads",
        type=int,
        metavar="N",
        help="uploads received at once; more get 503 before their body is read (default 4)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        metavar="S",
        help="seconds a client has to send its request line and headers (default 10)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="longest silence of a client while it uploads or downloads (default 30)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # refused at start-up, before the model is loaded, not in every request (0: whole images)
    check_tile_options(args.tile, args.tile_overlap)
    from ramir.checkpoint import load_model
    from ramir.inference.restore import check_dino, input_channels
    from ramir.webapp import RestoreService, WebConfig, make_server

    device = str(device_from_args(args))
    path = model_path(args.model)
    model = load_model(path, arch=args.arch, **model_load_kwargs(args))
    input_channels(model)  # a model that cannot restore photos is refused before serving
    check_dino(model)  # as is a RAM++ RestormerRFR without its DINOv2 (--dino DIR)
    config = WebConfig(
        max_pixels=args.max_pixels,
        max_upload_mb=args.max_upload_mb,
        tile=args.tile or None,
        tile_overlap=args.tile_overlap,
        **{
            key: value
            for key in ("max_connections", "max_uploads", "header_timeout", "idle_timeout")
            if (value := getattr(args, key, None)) is not None
        },
    )
    service = RestoreService(model, config, device=device, name=path.name)
    server = make_server(service, args.host, args.port)
    host, port = server.server_address[:2]

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl+C: temporary files deleted

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        print(f"ramir serve: {path.name} on http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        service.close()
    return 0
