"""The web console's HTTP side (aiohttp): the page, the live event stream and the change API.

Routes (JSON errors are ``{"error": "one line"}``, the line `kws` would print):

====================  =======  ===========================================================
``/``                 GET      the page (``static/index.html``; ``/static/`` its files)
``/api/state``        GET      what the page shows: info, status, words, last minute of hops,
                               recent detections, cost per hop
``/api/events``       GET      the same, live: server-sent events (``events`` module)
``/api/preview``      POST     takes (multipart ``take``, optional ``word``): waveform and what
                               the model heard in each, before enrolling; changes nothing
``/api/enroll``       POST     token; multipart ``word``, ``take`` x n, ``update``
``/api/forget``       POST     token; JSON ``{"word"}``
``/api/threshold``    POST     token; JSON ``{"word", "threshold", "min_exit"?}``
====================  =======  ===========================================================

Safe by default: bound to 127.0.0.1 unless ``--host`` says otherwise, and then it answers only
to requests addressed to a loopback name (a web page elsewhere cannot reach it through DNS
rebinding); changes need the token (``auth``), checked before a request body is read; request
bodies are limited (``--max-upload-mb``). One worker thread runs the model work (previews,
enrolment, reloads) one job at a time, beside the listener's own thread.
"""
from __future__ import annotations

import asyncio
import functools
import json
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from aiohttp import web

from bnnkws.app.serve import auth, changes
from bnnkws.app.serve.events import HISTORY_S, Hub, sse
from bnnkws.app.serve.live import Listener
from bnnkws.app.serve.takes import Upload
from bnnkws.kws.policy import delta_value

STATIC = Path(__file__).parent / "static"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
KEEPALIVE_S = 15.0
WATCH_S = 2.0  # how often the bundle is checked for changes made outside the page


@dataclass
class Settings:
    host: str
    port: int
    token: str
    token_file: Optional[str] = None
    read_only: Optional[str] = None  # why changes are refused (the shipped bundle), or None
    max_upload_bytes: int = 16 * 1024 * 1024

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_NAMES or self.host.startswith("127.")


class RequestError(ValueError):
    """A request the API cannot use (missing field, bad number); the message says which."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": one_line(message)}, status=status)


def manifest_signature(bundle: Path):
    """Identity of the bundle's manifest file; a swapped-in bundle has another."""
    try:
        st = (bundle / "manifest.json").stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Console:
    """The running console: the listener and its hub, the bundle, the settings, the worker."""

    def __init__(self, settings: Settings, listener: Listener, hub: Hub):
        self.settings = settings
        self.listener = listener
        self.hub = hub
        self.bundle = listener.bundle_path
        self.args = listener.args
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kws-serve-work")
        self.lock: Optional[asyncio.Lock] = None  # one change at a time (made on the loop)
        self._signature = manifest_signature(self.bundle)
        self._preview = None  # (signature, Detector) for previews, apart from the listener's

    # -- helpers ------------------------------------------------------------------------------
    async def work(self, fn, *args, **kwargs):
        """Run ``fn`` on the worker thread (model work must not block the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def info(self) -> dict:
        d, a = self.listener.detector, self.args
        return {"bundle": str(self.bundle), "source": self.listener.describe(),
                "backend": getattr(d, "backend", "?"),
                "delta": delta_value(a.delta if a.delta is not None else getattr(d, "delta", 0.0)),
                "exits": len(getattr(d, "exits", []) or []), "labels": list(d.labels),
                "gate": a.gate, "hop_ms": a.hop_ms, "threshold": a.threshold,
                "average_window_ms": a.average_window_ms, "history_s": HISTORY_S,
                "read_only": self.settings.read_only, "token_header": auth.HEADER,
                "max_upload_mb": round(self.settings.max_upload_bytes / 2 ** 20, 1)}

    def _words(self) -> dict:
        return changes.word_rows(self.bundle, self.args.threshold)

    def _reload(self) -> dict:
        self.listener.reload()
        self._signature = manifest_signature(self.bundle)
        return self._words()

    async def after_change(self) -> None:
        """The bundle changed: the listener adopts it, the pages get the new words."""
        words = await self.work(self._reload)
        self.hub.publish("words", words)
        self.hub.publish("info", self.info())

    async def watch(self) -> None:
        """Pick up changes made outside the page (`kws enroll` in a shell)."""
        while True:
            await asyncio.sleep(WATCH_S)
            sig = manifest_signature(self.bundle)
            if sig is None or sig == self._signature or self.lock.locked():
                continue
            async with self.lock:
                try:
                    await self.after_change()
                except Exception as e:  # noqa: BLE001 - a half-written bundle: next time
                    print(f"kws serve: bundle changed but cannot be loaded yet: {one_line(e)}",
                          file=sys.stderr, flush=True)

    def _preview_detector(self):
        from bnnkws.deploy.runtime import Detector

        sig = manifest_signature(self.bundle)
        if self._preview is None or self._preview[0] != sig:
            self._preview = (sig, Detector(self.bundle, backend=self.args.backend))
        return self._preview[1]

    def _run_preview(self, uploads, word):
        from bnnkws.app.serve.takes import preview

        det = self._preview_detector()
        return preview(det.bundle, uploads, word, detector=det)

    def check_token(self, request) -> None:
        if self.settings.read_only:
            raise web.HTTPForbidden(text=self.settings.read_only)
        if not auth.allowed(self.settings.token, request.headers.get(auth.HEADER)):
            where = (f"the one in {self.settings.token_file}" if self.settings.token_file
                     else "the one `kws serve` printed at start-up")
            raise web.HTTPForbidden(text=f"wrong or missing token: changes need the token "
                                         f"({where}); nothing was changed")

    # -- handlers -----------------------------------------------------------------------------
    async def index(self, request):
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def state(self, request):
        return web.json_response(self.hub.snapshot())

    async def events(self, request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        sub = self.hub.subscribe()
        try:
            await resp.write(sse("hello", self.hub.snapshot()))
            while not sub.dropped:
                try:
                    msg = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    msg = b": keep-alive\n\n"
                if not msg:
                    break
                await resp.write(msg)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.hub.unsubscribe(sub)
        return resp

    async def _form(self, request):
        """(fields, uploads) of a multipart request; aiohttp enforces the size limit."""
        form = await request.post()
        uploads = [Upload(f.filename or "", f.file.read()) for f in form.getall("take", [])
                   if isinstance(f, web.FileField)]
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return fields, uploads

    async def preview(self, request):
        fields, uploads = await self._form(request)
        return web.json_response(await self.work(self._run_preview, uploads,
                                                 fields.get("word", "")))

    async def enroll(self, request):
        self.check_token(request)
        async with self.lock:
            fields, uploads = await self._form(request)
            word = fields.get("word", "").strip()
            if not word:
                raise RequestError("the word to enrol is empty")
            update = fields.get("update", "").lower() in ("1", "true", "on", "yes")
            result = await self.work(changes.enrol, self.bundle, word, uploads, update)
            await self.after_change()
        return web.json_response(result)

    async def _json(self, request) -> dict:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the request body is not JSON ({e})") from e
        if not isinstance(data, dict) or not str(data.get("word", "")).strip():
            raise RequestError("the request names no word")
        return data

    async def forget(self, request):
        self.check_token(request)
        async with self.lock:
            data = await self._json(request)
            result = await self.work(changes.forget, self.bundle, str(data["word"]).strip())
            await self.after_change()
        return web.json_response(result)

    async def threshold(self, request):
        self.check_token(request)
        async with self.lock:
            data = await self._json(request)
            thr, me = data.get("threshold"), data.get("min_exit")
            try:
                thr = None if thr in (None, "") else float(thr)
                me = None if me in (None, "") else int(me)
            except (TypeError, ValueError) as e:
                raise RequestError(f"threshold must be a number in [0, 1] and min_exit an "
                                   f"exit number (got {thr!r}, {me!r})") from e
            result = await self.work(changes.set_threshold, self.bundle,
                                     str(data["word"]).strip(), thr, me)
            await self.after_change()
        return web.json_response(result)

    # -- the application ----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._local_only, self._errors],
                              client_max_size=self.settings.max_upload_bytes)
        r = app.router
        r.add_get("/", self.index)
        r.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        r.add_get("/api/state", self.state)
        r.add_get("/api/events", self.events)
        r.add_post("/api/preview", self.preview)
        r.add_post("/api/enroll", self.enroll)
        r.add_post("/api/forget", self.forget)
        r.add_post("/api/threshold", self.threshold)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app) -> None:
        self.hub.close()

    @web.middleware
    async def _local_only(self, request, handler):
        if self.settings.loopback:
            try:
                name = request.url.host or ""
            except ValueError:  # a Host header that is no host name
                name = ""
            if name not in LOOPBACK_NAMES and not name.startswith("127."):
                return json_error(403, f"this console answers to localhost only (it is bound "
                                       f"to {self.settings.host}), not to {request.host!r}; "
                                       f"use an SSH tunnel or --host to serve a network")
        return await handler(request)

    @web.middleware
    async def _errors(self, request, handler):
        from bnnkws.app.cli import CLIError

        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            mb = self.settings.max_upload_bytes / 2 ** 20
            return json_error(413, f"upload too large: at most {mb:g} MB per request "
                                   f"(kws serve --max-upload-mb); nothing was changed")
        except web.HTTPException as e:
            if not request.path.startswith("/api/") or e.status < 400:
                raise
            return json_error(e.status, e.text or e.reason)
        except (ValueError, FileNotFoundError, CLIError) as e:
            # the errors `kws enroll` / `kws forget` / `kws words` turn into one line
            return json_error(400, str(e))

    # -- running ------------------------------------------------------------------------------
    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        self.hub.bind(loop)
        self.lock = asyncio.Lock()
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port)
            try:
                await site.start()
            except OSError as e:
                from bnnkws.app.cli import CLIError

                raise CLIError(f"cannot serve on {self.settings.host}:{self.settings.port}: "
                               f"{e.strerror or e}") from e
            port = runner.addresses[0][1]
            self.hub.publish("words", await self.work(self._words))
            self.hub.publish("info", self.info())
            self._banner(port)
            self.listener.start()
            watcher = asyncio.create_task(self.watch())
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            watcher.cancel()
        finally:
            self.listener.stop()
            self.hub.close()
            await runner.cleanup()
            self.executor.shutdown(wait=False, cancel_futures=True)
        print("kws serve: stopped", file=sys.stderr, flush=True)
        return 0

    def _banner(self, port: int) -> None:
        host = self.settings.host
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else \
            (f"[{host}]" if ":" in host else host)
        url = f"http://{shown}:{port}/"
        print(f"kws serve: {url}  (bundle {self.bundle}; {self.listener.describe()})", flush=True)
        if self.settings.read_only:
            print(f"  read-only: {self.settings.read_only}", flush=True)
        elif self.settings.token_file:
            print(f"  changes (enrol, forget, thresholds) need the token in "
                  f"{self.settings.token_file}", flush=True)
        else:
            print(f"  changes (enrol, forget, thresholds) need the token {self.settings.token}"
                  f"  (or open {url}#token={self.settings.token})", flush=True)
        if not self.settings.loopback:
            print(f"  warning: serving on {host}: anyone on the network can watch, and the token "
                  f"travels in clear text (plain HTTP); an SSH tunnel to 127.0.0.1 is safer",
                  file=sys.stderr, flush=True)
        print("  Ctrl-C to stop", flush=True)


def run(bundle, args, settings: Settings, loop_input: bool = False) -> int:
    """Load the bundle, open the source, serve until Ctrl-C / SIGTERM (CLIError on a bad
    bundle, source or address)."""
    hub = Hub(args.hop_ms)
    listener = Listener(bundle, args, hub, loop=loop_input)
    listener.load()
    listener.open()
    try:
        return asyncio.run(Console(settings, listener, hub).main())
    finally:
        if listener.source is not None:
            listener.source.close()
