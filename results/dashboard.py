"""`nas dashboard`: optuna-dashboard on a study's own storage, for live inspection."""

from __future__ import annotations

import optuna

OBJECTIVE_NAMES = {2: ["accuracy", "latency_ms"], 1: ["mnasnet_reward"]}


def prepare(study: optuna.Study) -> None:
    """Name the objectives (stored in the study, so every dashboard shows them)."""
    import warnings

    with warnings.catch_warnings():  # stable in practice since Optuna 3.2, still flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(OBJECTIVE_NAMES[len(study.directions)])


def serve(storage_url: str, *, host: str, port: int, on_ready=None) -> None:
    """Serve optuna-dashboard's WSGI app until Ctrl-C or SIGTERM; OSError if the port is taken,
    else `on_ready()` once the port is bound.

    Why not `optuna_dashboard.run_server`: its wsgiref handler catches *everything* raised while
    a request is being answered, so a Ctrl-C that lands then is swallowed and the server runs on
    (the test that interrupts under load failed 2 of 3 runs). Here the server runs in a thread,
    the signal only sets an event, and the main thread shuts the server down between requests."""
    import signal
    import threading
    from wsgiref.simple_server import make_server

    from optuna_dashboard import wsgi

    server = make_server(host, port, wsgi(storage_url))
    if on_ready:
        on_ready()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
