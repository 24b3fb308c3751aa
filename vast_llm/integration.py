"""What framework integrations build on: the settings registry, shared clients, call parameters.

``langchain_vast`` and ``llamaindex_vast`` use only public names (this module and
``vast_llm``); a third-party integration can do the same:

- :data:`SETTINGS`: every client setting (name, type, default, environment variable, doc);
  :class:`vast_llm.fields.ClientFields` has them as pydantic fields;
- :func:`clients_for`: the :class:`ClientPair` (a sync and an async client, each built on first
  use) for a model's *current* settings. Models with equal settings share one pair, as
  LangChain's OpenAI models share their HTTP client, so copies, ``configurable_fields`` and
  per-call models do not each open a connection pool; edit a model's settings and its next call
  gets the pair for the new ones;
- :func:`call_params`: one call's generation parameters (model fields, then extra kwargs, then
  the call's), with per-call settings (``timeout``...) kept apart and client settings refused;
- :func:`common_finish_reason`: a finish reason in OpenAI's vocabulary whatever the worker;
- :class:`ThinkSplitter`: a chat answer's leading ``<think>...</think>`` as reasoning, for
  text that did not come through the client's chat calls (which split it themselves);
- :class:`ModelSession`: ``with model.session() as pinned:`` for a framework model: a worker
  session (:class:`SessionPair`, seen from both clients of the model's pair) and a copy of the
  model whose calls go to it.
- :func:`observing`, :func:`observed`, :func:`aobserved`, :func:`progress_data`: hand a call's
  :class:`~vast_llm.Progress` events to a framework's own event system (LangChain custom
  events, LlamaIndex instrumentation) without a context variable outliving the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from ._apis import chatml
from ._client import AsyncVastClient, VastClient
from ._config import PER_CALL, SETTINGS, Setting, resolve_settings
from ._decoders import ThinkSplitter
from ._errors import ConfigError
from ._progress import Progress, ProgressListener, observe
from ._session import ModelSession, SessionPair
from ._types import common_finish_reason

__all__ = [
    "PER_CALL",
    "SETTINGS",
    "ClientPair",
    "ModelSession",
    "ProgressListener",
    "SessionPair",
    "Setting",
    "ThinkSplitter",
    "aobserved",
    "call_params",
    "chatml",
    "clients_for",
    "common_finish_reason",
    "config_error",
    "observed",
    "observing",
    "progress_data",
    "settings_of",
]

_NAMES = tuple(s.name for s in SETTINGS)
_CLIENT_ONLY = frozenset(_NAMES) - PER_CALL


def config_error(exc: Exception) -> Exception:
    """The :class:`ConfigError` inside a pydantic ``ValidationError`` raised while a model was
    built (so a bad setting raises the documented error), else ``exc`` itself."""
    errors = getattr(exc, "errors", None)
    for error in errors() if callable(errors) else ():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):
            return cause
    return exc


def settings_of(model: Any) -> dict[str, Any]:
    """A model's client settings (attributes named as in :data:`SETTINGS`), secrets unwrapped."""
    values = {name: getattr(model, name, None) for name in _NAMES}
    key: Any = values.get("api_key")
    if hasattr(key, "get_secret_value"):
        values["api_key"] = key.get_secret_value()
    return values


class ClientPair:
    """A :class:`VastClient` and an :class:`AsyncVastClient` for one set of settings, each built
    on first use (no network and no connection pool until a call needs one)."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        *,
        http_client: Any = None,
        http_async_client: Any = None,
    ) -> None:
        given = {k: v for k, v in settings.items() if v is not None}
        self._endpoint = given.pop("endpoint", None)
        self._options = given
        resolve_settings(self._endpoint, **given)  # ConfigError now, not at the first call
        self._http_client = http_client
        self._http_async_client = http_async_client
        self._lock = threading.Lock()
        self._sync: VastClient | None = None
        self._async: AsyncVastClient | None = None
        self.closed = False

    @property
    def sync(self) -> VastClient:
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = VastClient(
                        self._endpoint, http_client=self._http_client, **self._options
                    )
                client = self._sync
        return client

    @property
    def async_(self) -> AsyncVastClient:
        client = self._async
        if client is None:
            with self._lock:
                if self._async is None:
                    self._async = AsyncVastClient(
                        self._endpoint, http_client=self._http_async_client, **self._options
                    )
                client = self._async
        return client

    def close(self) -> None:
        """Close the sync pool and drop the async ones (they close with their loops)."""
        self.closed = True
        if self._sync is not None:
            self._sync.close()
        if self._async is not None:
            self._async._closed = True
            self._async._loops.forget_all()

    async def aclose(self) -> None:
        """Close the sync pool and this loop's async pool."""
        self.closed = True
        if self._sync is not None:
            self._sync.close()
        if self._async is not None:
            await self._async.aclose()

    # A pair is never copied or pickled: copies of a model find theirs through clients_for.
    def __copy__(self) -> ClientPair:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ClientPair:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with a model, a pair comes back as None: the model finds or builds its own.
        return (_no_pair, ())


def _no_pair() -> None:
    return None


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a setting's value, equal for equal settings."""
    if value is None or isinstance(value, (str, bytes, int, float, bool)):
        return value
    if isinstance(value, httpx.Timeout):
        return ("timeout", tuple(sorted(value.as_dict().items())))
    if isinstance(value, httpx.Limits):
        return (
            "limits",
            value.max_connections,
            value.max_keepalive_connections,
            value.keepalive_expiry,
        )
    if isinstance(value, (tuple, list)):
        return tuple(_frozen(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))  # kept alive by the pair's settings while the pair lives
    return value


_SHARED: weakref.WeakValueDictionary[Any, ClientPair] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def clients_for(
    settings: Mapping[str, Any], *, http_client: Any = None, http_async_client: Any = None
) -> ClientPair:
    """The shared :class:`ClientPair` for these settings (built if none is alive or it was
    closed). Equal settings and the same HTTP clients give the same pair."""
    fingerprint = (
        tuple((name, _frozen(settings.get(name))) for name in _NAMES),
        id(http_client),
        id(http_async_client),
    )
    with _SHARED_LOCK:
        pair = _SHARED.get(fingerprint)
        if pair is not None and not pair.closed:
            return pair
    pair = ClientPair(settings, http_client=http_client, http_async_client=http_async_client)
    with _SHARED_LOCK:
        known = _SHARED.get(fingerprint)
        if known is not None and not known.closed:
            return known
        _SHARED[fingerprint] = pair
    return pair


_SAMPLING = ("temperature", "top_p", "top_k", "repetition_penalty", "seed")


def call_params(
    model: Any,
    max_tokens: int,
    extra: Mapping[str, Any],
    call: Mapping[str, Any],
    stops: list[str],
    *,
    model_name: str | None,
    openai: bool,
    aliases: Mapping[str, str] | None = None,
    fields: Iterable[str] = _SAMPLING,
    hook: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One call's parameters: the model's sampling fields, then its extra kwargs, then the call's.

    Per-call settings (``timeout``, ``deadline``, ``max_retries``, ``cost``; ``aliases`` maps
    other names onto them, e.g. ``request_timeout``) stay in the result for the client, which
    takes them out before the payload is built; client settings such as ``base_url`` in a call
    are a :class:`ConfigError`. Stop sequences from all three are merged (order kept,
    duplicates dropped); ``model`` is sent to OpenAI-compatible workers only.
    """
    defaults = {"max_tokens": max_tokens, **{n: getattr(model, n, None) for n in fields}}
    params: dict[str, Any] = {**defaults, **extra, **call}
    for alias, name in (aliases or {}).items():
        if alias in params:
            value = params.pop(alias)
            if params.get(name) is None:
                params[name] = value
    misplaced = sorted(name for name in params if name in _CLIENT_ONLY)
    if misplaced:
        raise ConfigError(
            f"{misplaced[0]!r} is a client setting, not a parameter of one call: set it on the "
            "model (it then applies to every call)"
        )
    if "max_new_tokens" in call:
        params["max_tokens"] = params.pop("max_new_tokens")
    else:
        params.pop("max_new_tokens", None)
    merged = [*stops, *(params.pop("stop", None) or [])]
    if merged:
        params["stop"] = list(dict.fromkeys(merged))
    if openai:
        if model_name and "model" not in params:
            params["model"] = model_name
    else:
        params.pop("model", None)
    if hook is not None:
        hook(params)
    return {name: value for name, value in params.items() if value is not None}


# -- progress events for frameworks ---------------------------------------------------------

_T = TypeVar("_T")


def progress_data(event: Progress) -> dict[str, Any]:
    """A :class:`~vast_llm.Progress` event's fields as a plain dict (what the wrappers hand
    their frameworks: LangChain's ``vast_progress`` custom event's data, LlamaIndex's
    ``VastProgressEvent`` fields)."""
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def observing(listener: ProgressListener | None) -> contextlib.AbstractContextManager[None]:
    """:func:`vast_llm.observe` ``listener`` for the calls made in the block; nothing when
    ``listener`` is None (nobody to tell, so no event is even built)."""
    return contextlib.nullcontext() if listener is None else observe(listener)


def observed(stream: Iterator[_T], listener: ProgressListener | None) -> Iterator[_T]:
    """``stream`` (a :class:`~vast_llm.Stream`), with ``listener`` hearing its progress.

    A stream's request runs in its first ``next()`` (routing, waiting, retries, until the first
    byte), so only that step is observed: a framework's generator must not hold
    :func:`~vast_llm.observe` open across its own ``yield`` (the context variable would leak
    into the consumer's code, and could not be reset from another context)."""
    return stream if listener is None else _Observed(stream, listener)


def aobserved(stream: AsyncIterator[_T], listener: ProgressListener | None) -> AsyncIterator[_T]:
    """:func:`observed` for an :class:`~vast_llm.AsyncStream` (``listener`` may be async)."""
    return stream if listener is None else _AObserved(stream, listener)


class _Observed(Iterator[_T]):
    def __init__(self, stream: Iterator[_T], listener: ProgressListener) -> None:
        self._stream = stream
        self._listener: ProgressListener | None = listener

    def __next__(self) -> _T:
        listener, self._listener = self._listener, None
        if listener is None:
            return next(self._stream)
        with observe(listener):
            return next(self._stream)


class _AObserved(AsyncIterator[_T]):
    # A class, not an async generator: nothing is left for the event loop to finalise when a
    # consumer stops early.
    def __init__(self, stream: AsyncIterator[_T], listener: ProgressListener) -> None:
        self._stream = stream
        self._listener: ProgressListener | None = listener

    async def __anext__(self) -> _T:
        listener, self._listener = self._listener, None
        if listener is None:
            return await self._stream.__anext__()
        with observe(listener):
            return await self._stream.__anext__()
