"""Client settings, declared once: name, type, default, environment variable and doc.

:class:`ClientOptions` is the one declaration. Each of its annotations carries a :class:`Doc`
(the default, the environment variable, the text users read); :data:`SETTINGS` is derived from
it and everything else derives from that: the clients' and transports' keyword arguments (typed
through ``Unpack[ClientOptions]``, so mypy checks names and ``Literal`` values), the framework
models' fields (:func:`vast_llm.integration.settings_fields`), the README's configuration table
(:func:`settings_table`, checked by a test), and the CLI.

Each setting comes from the argument, else the environment, else the default. The environment
is read when a client is constructed, never at import.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict, get_args

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from ._apis import ChatTemplate, chatml
from ._errors import ConfigError, VastSecurityWarning
from ._progress import ProgressListener
from ._retry import Backoff
from ._signing import RECIPES, Recipe, check_key_size, load_public_key
from ._tls import WorkerCA, load_worker_ca

if typing.TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "PER_CALL",
    "SETTINGS",
    "Api",
    "ClientOptions",
    "Cost",
    "Doc",
    "PayloadFormat",
    "PublicKeySource",
    "Setting",
    "Settings",
    "SignaturePolicy",
    "resolve_settings",
    "settings_table",
]

Api = Literal["tgi", "openai"]
PayloadFormat = Literal["wrapped", "flat"]
SignaturePolicy = Literal["strict", "warn", "off"]
Cost = float | Callable[[Mapping[str, Any]], float] | None
PublicKeySource = str | bytes | os.PathLike[str] | rsa.RSAPublicKey | None

DEFAULT_BASE_URL = "https://run.vast.ai"
DEFAULT_CONNECT_TIMEOUT = 10.0
# httpcore visits every pooled connection on every request event, so idle connections cost
# throughput (docs/benchmarks.md); 20 kept alive is httpx's own default, and 30 s keeps TLS to
# the autoscaler warm between calls.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=256, max_keepalive_connections=20, keepalive_expiry=30
)
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True, slots=True)
class Doc:
    """What users read about one setting, and where its value comes from."""

    text: str
    default: Any = None
    env: str | None = None
    shown: str | None = None  # the default as the docs show it, when ``default`` says little
    per_call: bool = False  # may also be given to one call (``generate(..., timeout=5)``)
    secret: bool = False


class ClientOptions(TypedDict, total=False):
    """Every client setting (all optional; see :data:`SETTINGS` for defaults)."""

    api_key: Annotated[
        str | None,
        Doc(
            "Vast.ai API key; sent to the autoscaler only, never to a worker",
            env="VAST_API_KEY",
            shown="required",
            secret=True,
        ),
    ]
    base_url: Annotated[
        str | None,
        Doc("the autoscaler", env="VAST_BASE_URL", shown=f"`{DEFAULT_BASE_URL}`"),
    ]
    api: Annotated[
        Api,
        Doc(
            "the worker template's model API: `tgi` (`/generate`) or `openai` (vLLM, `/v1/...`)",
            default="tgi",
            shown="`tgi` (`ChatVast`: `openai`)",
        ),
    ]
    payload_format: Annotated[
        PayloadFormat,
        Doc("`wrapped` for current workers, `flat` for legacy ones", default="wrapped"),
    ]
    signature_policy: Annotated[
        SignaturePolicy | None,
        Doc(
            "what to do when an assignment's signature does not verify: `strict` (raise), "
            "`warn` (log once and go on) or `off`",
            env="VAST_SIGNATURE_POLICY",
            shown="`strict`",
        ),
    ]
    public_key: Annotated[
        PublicKeySource,
        Doc(
            "pin the autoscaler's key (PEM text, bytes or a file path) instead of fetching it",
            env="VAST_PUBLIC_KEY",
            shown="fetched once from `/pubkey/`",
        ),
    ]
    worker_ca: Annotated[
        WorkerCA,
        Doc(
            "the CA that workers' HTTPS certificates must chain to (PEM text, bytes or a file "
            "path); only it is trusted for workers",
            env="VAST_WORKER_CA",
            shown="Vast's root, bundled and pinned",
        ),
    ]
    timeout: Annotated[
        float | httpx.Timeout,
        Doc(
            "seconds a worker may stay silent (connect: at most 10 s), or an `httpx.Timeout`; "
            "600 s is the worker's own queue limit, which a whole answer may spend waiting",
            default=600.0,
            per_call=True,
        ),
    ]
    route_timeout: Annotated[
        float, Doc("seconds for one `/route/` or `/pubkey/` call", default=10.0)
    ]
    deadline: Annotated[
        float,
        Doc(
            "seconds until a worker starts answering: route waits (a cold start takes "
            "minutes), retries and the worker's queue included",
            default=900.0,
            per_call=True,
        ),
    ]
    max_retries: Annotated[
        int,
        Doc(
            "retries of a failed attempt (route or worker), each on a fresh route, before the "
            "answer starts",
            default=3,
            per_call=True,
        ),
    ]
    backoff: Annotated[
        Backoff | None,
        Doc("waits between attempts and re-polls (`vast_llm.Backoff`)", shown="`Backoff()`"),
    ]
    cost: Annotated[
        Cost,
        Doc(
            "the load estimate sent to `/route/`: a number, or a callable of the request body",
            shown="the request's max tokens",
            per_call=True,
        ),
    ]
    chat_template: Annotated[
        ChatTemplate | None,
        Doc("renders chat messages into a prompt for TGI workers", shown="ChatML"),
    ]
    recipes: Annotated[
        tuple[Recipe, ...],
        Doc(
            "the signing recipes accepted, newest first",
            default=RECIPES,
            shown="`('g3', 'g2', 'g1')`",
        ),
    ]
    limits: Annotated[
        httpx.Limits | None,
        Doc(
            "connection pool limits of the client's own HTTP pools",
            shown="256 connections, 20 kept alive for 30 s",
        ),
    ]
    max_concurrency: Annotated[
        int | None,
        Doc(
            "requests in flight per client; more wait their turn (their deadline starts after)",
            shown="the pool size, 256",
        ),
    ]
    embed_batch_size: Annotated[
        int,
        Doc(
            "texts (or documents) per `/v1/embeddings`, `/v1/rerank` or `/v1/score` request; "
            "longer inputs go in batches of this size, and a batch a worker refuses as too large "
            "is halved",
            default=64,
        ),
    ]
    max_answer_bytes: Annotated[
        int,
        Doc(
            "the most bytes (decoded) one answer may have, a stream's included; more is a "
            "typed error",
            default=32 << 20,
            shown="32 MiB",
        ),
    ]
    max_event_bytes: Annotated[
        int,
        Doc(
            "the most bytes one line or one event of a stream may have",
            default=8 << 20,
            shown="8 MiB",
        ),
    ]
    on_progress: Annotated[
        ProgressListener | None,
        Doc(
            "called with each `vast_llm.Progress` event of the client's requests (waiting for "
            "a worker, routed, verified, retrying, answering); see also `vast_llm.observe`",
            shown="none",
        ),
    ]


@dataclass(frozen=True, slots=True)
class Setting:
    """One client setting as declared in :class:`ClientOptions` (derived, read-only)."""

    name: str
    type: Any
    default: Any
    env: str | None
    doc: str
    shown: str
    per_call: bool
    secret: bool


def _derive() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(ClientOptions, include_extras=True)
    endpoint = Setting(
        "endpoint",
        str | None,
        None,
        "VAST_ENDPOINT",
        "the endpoint's name in the Vast.ai console",
        "required",
        per_call=False,
        secret=False,
    )
    specs = [endpoint]
    for name, hint in hints.items():
        base, doc = get_args(hint)
        assert isinstance(doc, Doc), name
        shown = doc.shown or f"`{doc.default}`"
        specs.append(
            Setting(name, base, doc.default, doc.env, doc.text, shown, doc.per_call, doc.secret)
        )
    return tuple(specs)


SETTINGS: tuple[Setting, ...] = _derive()
"""Every client setting, ``endpoint`` first, in declaration order."""
_BY_NAME = {s.name: s for s in SETTINGS}
PER_CALL = frozenset(s.name for s in SETTINGS if s.per_call)
"""Settings one call may override (``client.generate(prompt, timeout=5)``)."""


def settings_table() -> str:
    """The README's configuration table (Markdown), derived from :data:`SETTINGS`."""
    rows = ["| argument | environment variable | default | what it is |", "|---|---|---|---|"]
    for s in SETTINGS:
        env = f"`{s.env}`" if s.env else "—"
        text = s.doc.replace("|", "\\|") + (" (also per call)" if s.per_call else "")
        rows.append(f"| `{s.name}` | {env} | {s.shown} | {text} |")
    return "\n".join(rows)


@dataclass(frozen=True)
class Settings:
    """Resolved, validated settings of one client (the API key never shows in its repr)."""

    endpoint: str
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    api: Api = "tgi"
    payload_format: PayloadFormat = "wrapped"
    signature_policy: SignaturePolicy = "strict"
    public_key: rsa.RSAPublicKey | None = field(default=None, repr=False)
    worker_ca: bytes | None = field(default=None, repr=False)  # PEM; None: Vast's bundled root
    timeout: httpx.Timeout = field(default_factory=lambda: _worker_timeout(600.0))
    route_timeout: float = 10.0
    deadline: float = 900.0
    max_retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    recipes: tuple[Recipe, ...] = RECIPES
    cost: Cost = field(default=None, repr=False)
    chat_template: ChatTemplate = field(default=chatml, repr=False)
    limits: httpx.Limits = field(default_factory=lambda: DEFAULT_LIMITS, repr=False)
    max_concurrency: int = 256
    embed_batch_size: int = 64
    max_answer_bytes: int = 32 << 20
    max_event_bytes: int = 8 << 20
    on_progress: ProgressListener | None = field(default=None, repr=False)

    def cost_of(self, payload: Mapping[str, Any], max_tokens: int) -> float:
        """The cost sent to ``/route/``: the ``cost`` setting, else the request's max tokens."""
        if self.cost is None:
            return float(max_tokens)
        value = self.cost(payload) if callable(self.cost) else self.cost
        if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            raise ConfigError(f"cost must be a number >= 0, got {value!r}")
        return float(value)

    def for_call(self, overrides: Mapping[str, Any]) -> Settings:
        """These settings with one call's overrides (``timeout``, ``deadline``...) applied."""
        if not overrides:
            return self
        _reject_unknown(overrides, PER_CALL, "per-call setting")
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            if value is not None:
                changes[name] = _check_one(name, value)
        return dataclasses.replace(self, **changes) if changes else self


def _worker_timeout(value: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(value, connect=min(DEFAULT_CONNECT_TIMEOUT, value))


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
    if math.isinf(value) and name != "timeout":
        raise ConfigError(f"{name} must be finite: every call ends within a bounded time")
    return float(value)


def _choice(name: str, value: Any, allowed: Any) -> Any:
    options = get_args(allowed)
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_cost(value: Any) -> Cost:
    if value is not None and not callable(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"cost must be a number >= 0 or a callable, got {value!r}")
        if math.isinf(value):
            raise ConfigError("cost must be finite")
    return value  # type: ignore[no-any-return]


def _check_one(name: str, value: Any) -> Any:
    """Validate a per-call setting and return it in its resolved form."""
    if name == "timeout":
        if not isinstance(value, httpx.Timeout):
            _positive("timeout", value)
        return _worker_timeout(value)
    if name == "deadline":
        return _positive("deadline", value)
    if name == "max_retries":
        return _count("max_retries", value, 0)
    if name == "cost":
        return _check_cost(value)
    raise AssertionError(name)  # pragma: no cover - PER_CALL lists exactly these


def _reject_unknown(given: Mapping[str, Any], known: Any, what: str) -> None:
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"unknown {what} {name!r}{hint} (known: {', '.join(sorted(known))}). Generation "
        "parameters such as temperature go to each call, not to the client."
    )


def _is_loopback(url: httpx.URL) -> bool:
    # RFC 6761 reserves *.localhost for the local machine.
    host = url.host
    return host in _LOOPBACK or host.startswith("127.") or host.endswith(".localhost")


def _base_url(raw: str) -> str:
    try:
        parsed = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError):
        raise ConfigError(f"base_url is not a URL: {raw!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {raw!r}"
        )
    if parsed.scheme == "http" and not _is_loopback(parsed):
        warnings.warn(
            f"base_url {raw!r} is plain HTTP to a remote host: the API key crosses the "
            "network unencrypted. Use https:// (the production router is https://run.vast.ai).",
            VastSecurityWarning,
            stacklevel=4,
        )
    return str(parsed).rstrip("/")


def resolve_settings(endpoint: str | None = None, **options: Unpack[ClientOptions]) -> Settings:
    """Resolve arguments against the environment and validate them (raises ConfigError)."""
    _reject_unknown(options, _BY_NAME, "setting")
    given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    env = os.environ
    endpoint = endpoint or env.get("VAST_ENDPOINT") or None
    if not endpoint:
        raise ConfigError(
            "no endpoint: pass endpoint='<endpoint name>' or set VAST_ENDPOINT "
            "(the name of your Serverless endpoint in the Vast.ai console)"
        )
    if not isinstance(endpoint, str):
        raise ConfigError(f"endpoint must be a str, got {type(endpoint).__name__}")
    api_key = given.get("api_key") or env.get("VAST_API_KEY") or None
    if not api_key:
        raise ConfigError("no API key: pass api_key=... or set VAST_API_KEY (your Vast.ai API key)")
    if not isinstance(api_key, str) or not api_key.isprintable() or " " in api_key:
        raise ConfigError("api_key must be one printable word (check for stray spaces or newlines)")

    base_url = _base_url(given.get("base_url") or env.get("VAST_BASE_URL") or DEFAULT_BASE_URL)

    policy = given.get("signature_policy") or env.get("VAST_SIGNATURE_POLICY") or "strict"
    _choice("signature_policy (VAST_SIGNATURE_POLICY)", policy, SignaturePolicy)
    if policy == "off":
        warnings.warn(
            "signature_policy='off': worker addresses are used without checking the "
            "autoscaler's signature",
            VastSecurityWarning,
            stacklevel=3,
        )
    key_source = given.get("public_key") or env.get("VAST_PUBLIC_KEY") or None
    if isinstance(key_source, rsa.RSAPublicKey):
        key: rsa.RSAPublicKey | None = check_key_size(key_source)
    else:
        key = None if key_source is None else load_public_key(key_source)

    recipes = given.get("recipes", RECIPES)
    if (
        not isinstance(recipes, (tuple, list))
        or not recipes
        or any(r not in RECIPES for r in recipes)
    ):
        raise ConfigError(f"recipes must be a non-empty subset of {RECIPES}, got {recipes!r}")
    backoff = given.get("backoff") or Backoff()
    if not isinstance(backoff, Backoff):
        raise ConfigError(f"backoff must be a vast_llm.Backoff, got {type(backoff).__name__}")
    limits = given.get("limits") or DEFAULT_LIMITS
    if not isinstance(limits, httpx.Limits):
        raise ConfigError(f"limits must be an httpx.Limits, got {type(limits).__name__}")
    max_concurrency = given.get("max_concurrency") or limits.max_connections or 256
    template = given.get("chat_template") or chatml
    if not callable(template):
        raise ConfigError("chat_template must be a callable of the messages")
    listener = given.get("on_progress")
    if listener is not None and not callable(listener):
        raise ConfigError("on_progress must be a callable of a vast_llm.Progress event")
    ca_source = given.get("worker_ca") or env.get("VAST_WORKER_CA") or None
    worker_ca = load_worker_ca(ca_source) if ca_source is not None else None

    return Settings(
        endpoint=endpoint,
        api_key=api_key,
        base_url=base_url,
        api=_choice("api", given.get("api", "tgi"), Api),
        payload_format=_choice(
            "payload_format", given.get("payload_format", "wrapped"), PayloadFormat
        ),
        signature_policy=policy,  # type: ignore[arg-type]  # checked by _choice above
        public_key=key,
        worker_ca=worker_ca,
        timeout=_check_one("timeout", given.get("timeout", _BY_NAME["timeout"].default)),
        route_timeout=_positive(
            "route_timeout", given.get("route_timeout", _BY_NAME["route_timeout"].default)
        ),
        deadline=_check_one("deadline", given.get("deadline", _BY_NAME["deadline"].default)),
        max_retries=_check_one("max_retries", given.get("max_retries", 3)),
        backoff=backoff,
        recipes=tuple(recipes),
        cost=_check_cost(given.get("cost")),
        chat_template=template,
        limits=limits,
        max_concurrency=_count("max_concurrency", max_concurrency, 1),
        embed_batch_size=_count("embed_batch_size", given.get("embed_batch_size", 64), 1),
        max_answer_bytes=_count("max_answer_bytes", given.get("max_answer_bytes", 32 << 20), 1024),
        max_event_bytes=_count("max_event_bytes", given.get("max_event_bytes", 8 << 20), 1024),
        on_progress=listener,
    )
