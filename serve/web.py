"""Build and start `ragtune serve`: the service (serve/server.py) with its routes and app (serve/routes.py).
The top of the serve layer, so the service below it never imports the routes that wrap it.

    service, app = build(ServeConfig(workspace=Path("ws")))          # tests: a ready generator and embedder
    run(ServeConfig(workspace=Path("ws")), on_ready=print_banner)   # blocks
"""

from __future__ import annotations

from serve.routes import create_server
from serve.server import Ragtune, ServeConfig, check_host


def build(config: ServeConfig, generator=None, embedder=None, job_runners=None):
    """(service, FastAPI app) for `config`; tests pass a ready generator and embedder. `job_runners` adds admin
    jobs from layers above serve: {"eval": evals.app_job.run_eval_job} (serve/jobs.py)."""
    service = Ragtune(config, generator=generator, embedder=embedder, job_runners=job_runners)
    app = create_server(service)
    return service, app


def run(config: ServeConfig, *, on_ready=None, job_runners=None) -> None:
    """Start the server and block (used by `ragtune serve`)."""
    import uvicorn

    check_host(config.host, config.users_file)
    service, app = build(config, job_runners=job_runners)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=5))
    if on_ready is not None:
        original = server.startup

        async def startup(sockets=None):
            await original(sockets=sockets)
            port = server.servers[0].sockets[0].getsockname()[1] if server.servers else config.port
            on_ready(service, port)

        server.startup = startup
    server.run()
