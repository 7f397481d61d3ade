"""``fitkit serve``: an exported artifact behind HTTP (FastAPI + uvicorn, the extra
``fitkit[serve]``). This module starts the server and prints the line that says where it
listens; the routes are app.py's, batching batcher.py's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from ..export import require

READY = "fitkit serve: listening on"  # the line a supervisor (or a test) waits for


def serve(
    path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    workers: int = 1,
    max_body_bytes: int = 64 * 2**20,
    log_level: str = "warning",
) -> int:
    """Serve ``path`` until SIGTERM / SIGINT (requests in flight are finished); returns 0.

    Port 0 picks a free port; the line ``fitkit serve: listening on http://HOST:PORT`` is
    printed (and flushed) once requests are accepted.
    """
    require("fastapi", "serve")
    uvicorn = require("uvicorn", "serve")
    from .app import CONFIG_ENV, create_app, freeze_startup_heap, load_for_serving

    model = load_for_serving(path)
    if workers > 1:
        os.environ[CONFIG_ENV] = json.dumps(
            {
                "path": os.path.abspath(path),
                "max_batch_size": max_batch_size,
                "max_wait_ms": max_wait_ms,
                "max_body_bytes": max_body_bytes,
            }
        )
        app: Any = "fitkit.serving.app:app_from_env"
    else:
        app = create_app(
            model,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_body_bytes=max_body_bytes,
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # uvicorn formats an access-log call per request even where the level hides it
        access_log=log_level in ("info", "debug", "trace"),
        workers=workers,
        factory=workers > 1,
        timeout_graceful_shutdown=None,
    )
    sock = config.bind_socket()
    sock.listen(config.backlog)  # connections wait in the backlog from here on
    bound = sock.getsockname()
    where = f"http://{bound[0]}:{bound[1]}"
    info = f"{model.format} {model.input_names} -> {model.output_names}"

    def announce() -> None:
        print(f"{READY} {where} ({info})", flush=True)

    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        announce()
        Multiprocess(config, sockets=[sock]).run()
        return 0

    class AnnouncingServer(uvicorn.Server):  # type: ignore[name-defined]
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                freeze_startup_heap()  # (a worker process freezes its own in app_from_env)
                announce()

    # uvicorn drains on SIGTERM / SIGINT, then raises the signal again for the handler that
    # was there before: a no-op one here, so a drained shutdown exits 0
    before = {sig: signal.signal(sig, _drained) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        AnnouncingServer(config).run(sockets=[sock])
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    return 0


def _drained(signum: int, frame: Any) -> None:
    """The signal that stopped the server, raised again once its requests were answered."""


__all__ = ["READY", "serve"]
