"""`kws serve`: a web console for a headless device (live detections, enrolment, thresholds)."""
from __future__ import annotations

import sys

from bnnkws.app.cli import CLIError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 16.0
# The command users typed: the Pi runner (deploy's run_pi.py) reuses this module under its own name.
COMMAND = "kws serve"


def register(subparsers) -> None:
    from bnnkws.app.commands.listen import add_detection_args
    from bnnkws.app.listener.sources import DEFAULT_BLOCK_MS

    p = subparsers.add_parser(
        "serve",
        help="a web console: live detections and enrolment from a browser (the serve extra)",
        description=(
            "Run the same listener as `kws listen` (microphone, or --input FILE in real time) "
            "and serve a page that shows it live: each detection, a timeline of the last "
            "minute (keyword probability per hop, gated hops, exit used), the cost per hop and "
            "real-time factor, and the bundle's words with their thresholds. From the page, "
            "record takes with the browser's microphone or upload files, see what the model "
            "heard in each, then enrol, forget or re-threshold words through the functions of "
            "`kws enroll`, `kws forget` and `kws words --set`; the listener picks the changed "
            "bundle up without a restart. Changes need the token printed at start-up; watching "
            "needs none. Needs aiohttp: pip install 'bnn-kws[serve]'."),
    )
    p.add_argument("bundle", nargs="?", default=None, metavar="BUNDLE",
                   help="bundle directory; enrolment changes it in place (atomically). Default: "
                        "the bundle shipped with the package, served read-only (copy it to "
                        "enrol: cp -r .../default_bundle mine)")
    src = p.add_argument_group("audio source")
    src.add_argument("--device", default=None,
                     help="input device: index or (part of) its name, see `kws listen "
                          "--list-devices` (default: the system's default input)")
    src.add_argument("--input", metavar="FILE", default=None,
                     help="stream this sound file in real time instead of the microphone (a "
                          "machine without one)")
    src.add_argument("--loop", action="store_true",
                     help="with --input: start the file again when it ends (a demo that keeps "
                          "running)")
    src.add_argument("--block-ms", type=float, default=DEFAULT_BLOCK_MS,
                     help="audio block size in milliseconds (default: %(default)s)")
    web = p.add_argument_group("web console")
    web.add_argument("--host", default=DEFAULT_HOST,
                     help="address to listen on (default: %(default)s, this machine only; "
                          "0.0.0.0 serves the network in clear text: prefer an SSH tunnel)")
    web.add_argument("--port", type=int, default=DEFAULT_PORT,
                     help="TCP port (default: %(default)s; 0 picks a free one, printed)")
    web.add_argument("--token-file", metavar="FILE", default=None,
                     help="read the token that changes need from the first line of FILE "
                          "instead of making a new one at each start")
    web.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                     help="largest request body (all takes of one enrolment together) in MB "
                          "(default: %(default)s)")
    add_detection_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    try:
        import aiohttp  # noqa: F401
    except ImportError as e:
        raise CLIError("kws serve needs aiohttp, the `serve` extra: pip install 'bnn-kws[serve]'"
                       " (in a Pi package: sh install_pi.sh installs it)") from e
    from bnnkws.app.commands.listen import resolve_bundle
    from bnnkws.app.listener.sources import SourceError
    from bnnkws.app.serve import auth, server

    if args.loop and args.input is None:
        raise CLIError("--loop only applies to --input FILE")
    if args.input is not None and not Path(args.input).is_file():
        raise CLIError(f"input file not found: {args.input}")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise CLIError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    bundle = resolve_bundle(args.bundle)
    read_only = None
    if args.bundle is None:
        read_only = (f"this is the bundle shipped with the package ({bundle}); to enrol, "
                     f"serve a copy: cp -r {bundle} mine && {COMMAND} mine")
    try:
        token = auth.token_from(args.token_file)
    except auth.TokenError as e:
        raise CLIError(str(e)) from e
    settings = server.Settings(host=args.host, port=args.port, token=token,
                               token_file=args.token_file, read_only=read_only,
                               max_upload_bytes=int(args.max_upload_mb * 2 ** 20))
    try:
        return server.run(bundle, args, settings, loop_input=args.loop)
    except SourceError as e:
        hint = "" if args.input else (f"\nTo stream a recording instead: {COMMAND} --input "
                                      "clip.wav")
        raise CLIError(f"{e}{hint}") from e
    except (FileNotFoundError, ValueError) as e:  # unreadable --input (AudioError names it)
        raise CLIError(str(e)) from e


if __name__ == "__main__":  # pragma: no cover
    from bnnkws.app.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
