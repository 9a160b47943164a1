"""`atlas serve`: serve an exported policy over openpi's websocket protocol.

    atlas serve --checkpoint DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--device cuda]

Prints the server's URL (`ws://HOST:PORT`) on stdout once it listens; SIGTERM or Ctrl-C stops it.
This module stays light (argparse only at import) because `atlas --help` builds every parser.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

API_KEY_ENV = "ATLAS_SERVE_API_KEY"


def add_serve_args(p: argparse.ArgumentParser) -> None:
    """The options of `atlas serve`."""
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="policy from save_pretrained")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: loopback only; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"refuse clients without this key (openpi-client's api_key; default ${API_KEY_ENV})",
    )
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument(
        "--threads", type=int, help="CPU threads of torch (default: torch's; 1 suits tiny models)"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_address(host: str, port: int) -> None:
    """Bind host:port once and let go: a taken port fails now, not after minutes of loading."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's own socket
        probe.bind((host, port))


def _argument_error(args: argparse.Namespace) -> str | None:
    """The first bad option, as one line naming it; None when all are usable."""
    if not 0 <= args.port <= 65535:
        return f"--port must be in 0..65535, got {args.port}"
    if args.threads is not None and args.threads < 1:
        return f"--threads must be >= 1, got {args.threads}"
    if not Path(args.checkpoint).is_dir():
        return f"--checkpoint {args.checkpoint}: no such directory (an export of save_pretrained)"
    try:
        _check_address(args.host, args.port)
    except OSError as e:
        return _listen_error(args, e)
    return None


def _listen_error(args: argparse.Namespace, e: OSError) -> str:
    reason = e.strerror or str(e)
    if isinstance(e, socket.gaierror):
        hint = "--host must be an address or a name of this machine"
    else:
        hint = "pick another --port, or 0 for a free one"
    return f"cannot listen on {args.host}:{args.port}: {reason} ({hint})"


def run_serve_command(args: argparse.Namespace) -> int:
    """Load the policy, then serve until stopped. Returns 0, or 2 when it cannot start."""
    error = _argument_error(args)
    if error:
        log.error("error: %s", error)
        return 2
    import torch

    from atlas.errors import user_errors
    from atlas.models.policy import AtlasVLAPolicy
    from atlas.serving.observation import spec_from_policy
    from atlas.serving.server import PolicyServer, run_server

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        policy = AtlasVLAPolicy.from_pretrained(args.checkpoint).to(torch.device(device)).eval()
    except (*user_errors(), RuntimeError) as e:  # RuntimeError: weights that do not fit, no CUDA
        log.error(
            "error: cannot load the policy from %s: %s: %s", args.checkpoint, type(e).__name__, e
        )
        return 2
    spec = spec_from_policy(policy, name="/".join(Path(args.checkpoint).resolve().parts[-2:]))
    if not _is_loopback(args.host) and not args.api_key:
        log.warning(
            "listening on %s without --api-key: anyone who reaches it can drive the policy",
            args.host,
        )
    logging.getLogger("websockets").setLevel(logging.WARNING)  # we log connections ourselves

    def on_ready(url: str) -> None:
        log.info(
            "serving %s on %s (%s, chunks of %d, cameras %s); SIGTERM or Ctrl-C stops",
            spec.name,
            url,
            device,
            spec.action_horizon,
            ", ".join(spec.cameras),
        )
        print(url, flush=True)  # stdout: the address, for scripts

    try:
        run_server(PolicyServer(policy, spec, args.api_key), args.host, args.port, on_ready)
    except OSError as e:  # taken between the check and the bind
        log.error("error: %s", _listen_error(args, e))
        return 2
    return 0
