"""The ``vast-llm`` command: run the emulator, inspect routing, generate, and the demo.

User mistakes end as one clear ``error:`` line and a non-zero exit, never a traceback. The API
key is read from ``VAST_API_KEY`` only (a key on the command line would show in ``ps``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._errors import VastError
from ._progress import Progress

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["main"]


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url", help="the autoscaler (default: VAST_BASE_URL or https://run.vast.ai)"
    )
    parser.add_argument(
        "--signature-policy", choices=("strict", "warn", "off"), help="default: strict"
    )
    parser.add_argument("--public-key", help="pin the autoscaler's key (a PEM file)")
    parser.add_argument(
        "--format",
        dest="payload_format",
        choices=("wrapped", "flat"),
        default="wrapped",
        help="worker payload format",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds until a worker starts answering, cold starts and retries "
        "included (default: 900)",
    )
    parser.add_argument(
        "--worker-ca",
        help="the CA workers' certificates chain to (a PEM "
        "file; default: VAST_WORKER_CA, else Vast's bundled root)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="do not print progress (waiting for a worker, retries)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vast-llm",
        description="Vast.ai Serverless endpoints as LLMs: a verified, retrying client, a local "
        "emulator of the autoscaler and its workers, and a demo.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emu = commands.add_parser(
        "emulator",
        help="serve a local emulator of the autoscaler and its workers",
        description="Serve the Vast.ai autoscaler and workers on 127.0.0.1 until interrupted.",
    )
    emu.add_argument("--port", type=int, default=0, help="router port (default: any free port)")
    emu.add_argument("--workers", type=int, default=1, help="number of workers (default: 1)")
    emu.add_argument(
        "--api",
        choices=("tgi", "openai", "both"),
        default="tgi",
        help="worker model API (both: TGI and OpenAI-compatible routes)",
    )
    emu.add_argument(
        "--model",
        choices=("fake", "smollm2"),
        default="fake",
        help="fake: deterministic words; smollm2: the real small model",
    )
    emu.add_argument(
        "--recipe",
        choices=("g3", "g2", "g1"),
        default="g3",
        help="how assignments are signed (default: g3, current)",
    )
    emu.add_argument(
        "--format",
        dest="payload_format",
        choices=("wrapped", "flat"),
        default="wrapped",
        help="payload format workers accept",
    )
    emu.add_argument(
        "--cold-start",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds before the workers are ready",
    )
    emu.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[:COUNT]",
        help="inject a fault (repeatable); COUNT is a number or *; see --list-faults",
    )
    emu.add_argument("--list-faults", action="store_true", help="list the faults and exit")
    emu.add_argument("--endpoint", default="emulated-endpoint", help="the endpoint's name")
    emu.add_argument(
        "--token-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds between the fake model's tokens",
    )
    emu.add_argument(
        "--tls",
        action="store_true",
        help="workers serve HTTPS under an emulator CA built like Vast's root "
        "(prints VAST_WORKER_CA)",
    )
    emu.add_argument(
        "--cold-workers",
        action="store_true",
        help="workers sit Stopped (cold) until a request wakes one",
    )
    emu.add_argument(
        "--activation-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds a woken cold worker takes to be ready (default: 2)",
    )
    emu.add_argument(
        "--router-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="latency added to each router answer",
    )
    emu.add_argument(
        "--worker-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="latency added before each worker answer's headers",
    )
    emu.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="each delay varies by up to this fraction (0.1: +-10%%)",
    )
    emu.add_argument(
        "--script",
        metavar="FILE",
        help="the fake model's scripted turns, a .json file (or .yaml, with PyYAML installed)",
    )
    emu.add_argument(
        "--reasoning",
        choices=("reasoning_content", "reasoning", "think"),
        help="the fake model thinks first, in vLLM's format: this field of chat "
        "answers, or <think> text",
    )
    emu.add_argument(
        "--no-embeddings",
        dest="embeddings",
        action="store_false",
        help="OpenAI workers answer 404 on /v1/embeddings, /v1/rerank and "
        "/v1/score (served by default)",
    )
    emu.add_argument(
        "--embedding-max-batch",
        type=int,
        default=None,
        metavar="N",
        help="more inputs than this in one embeddings/rerank/score request are refused with 413",
    )

    route = commands.add_parser(
        "route",
        help="print one verified worker assignment (a debugging tool)",
        description="Call /route/ until a worker is assigned, verify its signature, print it. "
        "Reads VAST_API_KEY.",
    )
    route.add_argument("endpoint", help="endpoint name")
    route.add_argument("--cost", type=float, default=256.0, help="load estimate (default: 256)")
    _add_client_options(route)

    gen = commands.add_parser(
        "generate",
        help="generate text with an endpoint",
        description="Send one prompt through a verified worker and print the answer. "
        "Reads VAST_API_KEY.",
    )
    gen.add_argument("endpoint", help="endpoint name")
    gen.add_argument("prompt", help="the prompt")
    gen.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    gen.add_argument("--api", choices=("tgi", "openai"), default="tgi", help="worker model API")
    gen.add_argument(
        "--chat",
        action="store_true",
        help="send the prompt as a chat message (chat template for tgi)",
    )
    gen.add_argument("--max-tokens", type=int, default=256, help="default: 256")
    gen.add_argument("--temperature", type=float, default=None)
    _add_client_options(gen)

    demo = commands.add_parser(
        "demo",
        help="show the whole product working (on the emulator by default)",
        description="Run the demo: a LangChain chain through a cold start, a reasoning answer, "
        "a LlamaIndex RAG query, route facts, a tampered assignment rejected and a worker "
        "failure recovered, on the local emulator with HTTPS workers. With --endpoint (and "
        "VAST_API_KEY) it runs against Vast.ai instead. Needs the demo extra: "
        'pip install "vast-llm[demo]".',
    )
    demo.add_argument("--endpoint", help="a real endpoint (needs VAST_API_KEY)")
    demo.add_argument(
        "--api",
        choices=("tgi", "openai"),
        default="openai",
        help="the real endpoint's worker API (with --endpoint)",
    )
    demo.add_argument(
        "--model",
        choices=("auto", "smollm2", "fake"),
        default="auto",
        help="the emulator's model (auto: smollm2 when installed)",
    )
    return parser


def _client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "base_url": args.base_url,
        "signature_policy": args.signature_policy,
        "public_key": args.public_key,
        "payload_format": args.payload_format,
        "deadline": args.deadline,
        "worker_ca": args.worker_ca,
    }
    if not args.quiet:
        kwargs["on_progress"] = _print_progress
    if getattr(args, "api", None):
        kwargs["api"] = args.api
    return kwargs


def _emulator(args: argparse.Namespace) -> Emulator:
    """The emulator the ``emulator`` command's options describe (not started)."""
    from .emulator import Emulator, Script

    return Emulator(
        api=args.api,
        workers=args.workers,
        model=args.model,
        recipe=args.recipe,
        payload_format=args.payload_format,
        cold_start=args.cold_start,
        faults=args.fault,
        endpoint=args.endpoint,
        api_key=os.environ.get("VAST_EMULATOR_API_KEY") or None,
        token_delay=args.token_delay,
        port=args.port,
        tls=args.tls,
        cold_workers=args.cold_workers,
        activation_delay=args.activation_delay,
        router_delay=args.router_delay,
        worker_delay=args.worker_delay,
        jitter=args.jitter,
        script=Script.load(args.script) if args.script else None,
        reasoning=args.reasoning,
        embeddings=args.embeddings,
        embedding_max_batch=args.embedding_max_batch,
    )


def _print_progress(event: Progress) -> None:
    # Waiting and retries are what a person at a terminal needs to see (a cold start takes
    # minutes); the other steps are one line each in the final summary.
    if event.kind in ("waiting", "retrying"):
        print(event.describe(), file=sys.stderr, flush=True)


def _run_emulator(args: argparse.Namespace) -> int:
    from .emulator import FAULTS

    if args.list_faults:
        for name, what in FAULTS.items():
            print(f"{name:20} {what}")
        return 0
    model = args.model
    emulator = _emulator(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with emulator.serve() as emu:
        extras = "".join(
            [", HTTPS workers" if args.tls else "", ", cold workers" if args.cold_workers else ""]
        )
        print(
            f"Vast emulator serving on {emu.base_url}  ({args.api}, {args.workers} worker(s), "
            f"model {model}, recipe {args.recipe}, {args.payload_format}{extras})"
        )
        if emu.script is not None:
            print(f"script {args.script}: {len(emu.script.turns)} turn(s)")
        print(f"export VAST_BASE_URL={emu.base_url}")
        print(f"export VAST_ENDPOINT={emu.endpoint}")
        print(f"export VAST_API_KEY={emu.api_key}")
        if emu.worker_ca_file is not None:
            print(f"export VAST_WORKER_CA={emu.worker_ca_file}")
        for url in emu.worker_urls():
            print(f"worker {url}")
        print("Ctrl-C to stop.", flush=True)
        stop.wait()
    return 0


def _run_route(args: argparse.Namespace) -> int:
    from ._client import VastClient

    with VastClient(args.endpoint, **_client_kwargs(args)) as client:
        assignment = client.route(args.cost)
    route = assignment.route
    print(f"worker      {route.worker_url}")
    print(f"reqnum      {route.reqnum}")
    print(f"request_idx {route.request_idx}")
    print(f"signature   {route.signature}" + (" (verified)" if route.verified else ""))
    print(f"route calls {route.route_calls} in {route.route_latency * 1000:.0f} ms")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from ._client import VastClient

    params: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    messages = [{"role": "user", "content": args.prompt}]
    with VastClient(args.endpoint, **_client_kwargs(args)) as client:
        if args.stream:
            stream = (
                client.stream_chat(messages, **params)
                if args.chat
                else client.stream(args.prompt, **params)
            )
            with stream:
                for chunk in stream:
                    print(chunk.text, end="", flush=True)
            print()
            route, finish = stream.route, stream.finish_reason
        else:
            answer = (
                client.chat(messages, **params)
                if args.chat
                else client.generate(args.prompt, **params)
            )
            print(answer.text)
            route, finish = answer.route, answer.finish_reason
    if route is not None:
        print(
            f"[worker {route.worker_url}, reqnum {route.reqnum}, signature {route.signature}, "
            f"finish {finish}]",
            file=sys.stderr,
        )
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    # The demo is an application of the core and both wrappers: it lives in its own package
    # (vast_llm_demo, in the same distribution), imported only when asked for, so vast_llm
    # never imports a framework. It names the extras to install when one is missing.
    from vast_llm_demo import run_demo

    return run_demo(endpoint=args.endpoint, api=args.api, model=args.model)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vast-llm`` command."""
    args = _parser().parse_args(argv)
    runners = {
        "emulator": _run_emulator,
        "route": _run_route,
        "generate": _run_generate,
        "demo": _run_demo,
    }
    try:
        return runners[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (VastError, ValueError, ImportError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
