"""Run by the official vastai SDK's own virtualenv (.venv-vastai): serve the REAL Vast worker
(``vastai.serverless.server``, the pyworker framework of vastai 1.9.1) on 127.0.0.1, in front of
a model server given on the command line. Not a test module.

    python vastai_worker.py CONFIG_JSON

CONFIG_JSON holds: ``port`` and ``http_port`` (the worker's two ports), ``model_url`` (the
model server, ``http://127.0.0.1:PORT``), ``report_addr`` (where the worker fetches
``/pubkey/`` and reports its status: the emulator's router), ``api`` (``"tgi"`` or
``"openai"``: which routes to serve), ``max_sessions`` and ``gc_interval`` (seconds between
the worker's session sweeps; 5.0 in the framework). Everything stays on loopback: the worker
never becomes "ready" (nothing writes the model log it waits for), which does not stop it
from serving requests, and its status reports go to the emulator, which ignores them.
"""

import asyncio
import json
import os
import sys
import tempfile

CONFIG = json.loads(sys.argv[1])

# The framework reads its settings from the environment while the Worker is built.
os.environ.update(
    {
        "WORKER_PORT": str(CONFIG["port"]),
        "WORKER_HTTP_PORT": str(CONFIG["http_port"]),
        f"VAST_TCP_PORT_{CONFIG['port']}": str(CONFIG["port"]),
        "PUBLIC_IPADDR": "127.0.0.1",
        "USE_SSL": "false",
        "CONTAINER_ID": "1",
        "REPORT_ADDR": CONFIG["report_addr"],
        "MASTER_TOKEN": "fidelity-test",
        "UNSECURED": "false",
    }
)

from vastai.serverless.server.lib import backend  # noqa: E402
from vastai.serverless.server.lib.data_types import JsonDataException  # noqa: E402
from vastai.serverless.server.worker import (  # noqa: E402
    BenchmarkConfig,
    HandlerConfig,
    Worker,
    WorkerConfig,
)

# The sweep interval is a module constant read on every sweep; tests shorten it.
backend.SESSION_GC_INTERVAL = float(CONFIG["gc_interval"])

# route -> the field its payload must have, and of which type (as Vast's TGI and OpenAI
# workers check: a missing one is a 422 naming it).
ROUTES = {
    "tgi": {"/generate": ("inputs", str), "/generate_stream": ("inputs", str)},
    "openai": {"/v1/completions": ("prompt", str), "/v1/chat/completions": ("messages", list)},
}[CONFIG["api"]]


def requiring(name, kind):
    def parse(payload):
        if not isinstance(payload.get(name), kind):
            raise JsonDataException({name: "missing parameter"})
        return payload

    return parse


handlers = [
    HandlerConfig(
        route=route,
        allow_parallel_requests=True,
        max_queue_time=600.0,
        # The framework wants exactly one handler with a benchmark; it never runs here
        # (the model log that would start it is never written).
        benchmark_config=BenchmarkConfig(dataset=[{"inputs": "x"}]) if i == 0 else None,
        request_parser=requiring(*required),
        workload_calculator=lambda payload: 100.0,
    )
    for i, (route, required) in enumerate(ROUTES.items())
]
host, _, port = CONFIG["model_url"].rpartition(":")
config = WorkerConfig(
    model_server_url=host,
    model_server_port=int(port),
    model_log_file=os.path.join(tempfile.mkdtemp(), "never-written.log"),
    handlers=handlers,
    max_sessions=CONFIG["max_sessions"],
)
asyncio.run(Worker(config).run_async(host="127.0.0.1"))
