"""Server-sent events from raw bytes, with bounded lines and events. Pure.

The event-stream format (WHATWG HTML, "Server-sent events", §9.2.5–9.2.6) read from bytes as
they arrive, for answers from workers that may be hostile:

- lines end at CR, LF or CRLF and nowhere else (never at U+2028 or other Unicode breaks); a CR
  ending one chunk and an LF starting the next are one line end, and the CR ends the line at
  once (nothing waits for the next chunk to find out);
- a line may be at most ``max_line`` bytes and an event's data (its ``data:`` lines, each with
  its newline) at most ``max_event`` bytes, checked as the bytes arrive, so a line with no end
  or ``data:`` lines with no blank line cannot buffer without bound (:class:`LineTooLong`,
  :class:`EventTooLarge`);
- fields: ``data``, ``event``, ``id`` (ignored if it holds NUL; kept across events),
  ``retry`` (ASCII digits only); one space after the colon is dropped; lines starting with a
  colon are comments; other fields are ignored; a leading UTF-8 BOM is dropped. Text is UTF-8,
  undecodable bytes become U+FFFD.
- each :meth:`EventDecoder.feed` reports the complete events and whether anything counted as
  *progress*: a complete event that carried a field. Comments, partial lines and blank lines
  alone are not progress, so a driver can bound "silence" as time without progress, and
  keep-alive comments or a trickle of bytes cannot hold a call open.

Which events are dispatched matches httpx-sse (tests compare the two on the shared stream
vectors split at every byte, and on generated streams): an event is dispatched at a blank line
when it has data, an event type or a retry, or when an id was ever set (httpx-sse keeps the
last id and dispatches on it; such events alone are not progress). Differences, all outside
valid worker streams: the BOM is dropped (as the spec says; httpx-sse keeps it in the first
field name), ``retry`` takes ASCII digits only (httpx-sse uses ``int()``), the text is always
UTF-8 (httpx-sse follows a ``charset`` parameter), and a trailing CR ends its line at once.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "MAX_EVENT",
    "MAX_LINE",
    "Event",
    "EventDecoder",
    "EventTooLarge",
    "Fed",
    "LineTooLong",
    "StreamError",
]

# A TGI stream's last event repeats the whole answer (``generated_text``), so one event can be
# as large as the answer itself: the defaults leave room for very long answers.
MAX_LINE = 16 << 20
MAX_EVENT = 16 << 20

_BOM = b"\xef\xbb\xbf"


class StreamError(Exception):
    """The event stream broke a bound (internal; drivers map it to WorkerStreamError)."""


class LineTooLong(StreamError):
    """A line grew past ``max_line`` bytes without ending."""


class EventTooLarge(StreamError):
    """An event's data grew past ``max_event`` bytes before the blank line that ends it."""


class Event(NamedTuple):
    """One dispatched event (the fields httpx-sse's ``ServerSentEvent`` has)."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class Fed(NamedTuple):
    """What one chunk of bytes gave: the events it completed, and whether that was progress."""

    events: list[Event]
    progress: bool


_NOTHING = Fed([], False)  # shared: callers never change a Fed's list
# Tuples built without the generated ``__new__`` of a NamedTuple (a Python-level call): one
# of each per streamed token.
_new = tuple.__new__


class EventDecoder:
    """Turns the bytes of an event stream into :class:`Event` objects, chunk by chunk.

    Args:
        max_line: the longest line accepted, in bytes, line end excluded.
        max_event: the most data one event may carry, in bytes (each ``data:`` line counts
            its value plus one for the newline that joins it to the next).
    """

    __slots__ = (
        "_data",
        "_data_size",
        "_event",
        "_fields",
        "_head",
        "_id",
        "_partial",
        "_partial_size",
        "_retry",
        "_skip_lf",
        "max_event",
        "max_line",
    )

    def __init__(self, max_line: int = MAX_LINE, max_event: int = MAX_EVENT) -> None:
        if max_line < 1 or max_event < 0:
            raise ValueError("max_line must be >= 1 and max_event >= 0")
        self.max_line = max_line
        self.max_event = max_event
        self._head: bytes | None = b""  # the stream's first bytes, until the BOM is settled
        self._partial: list[bytes] = []  # pieces of a line not ended yet
        self._partial_size = 0
        self._skip_lf = False  # the last chunk ended in CR: an LF first in the next is its pair
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = b""
        self._id = ""
        self._retry: int | None = None
        self._fields = False  # the event being read has a field (data, event, id or retry)

    @property
    def pending(self) -> bool:
        """True while a line or an event has started and not ended."""
        return bool(self._partial or self._data or self._event or self._fields)

    def feed(self, chunk: bytes) -> Fed:
        """Take the next bytes of the stream; the events they complete, and if that is progress.

        Raises:
            LineTooLong: a line passed ``max_line`` bytes.
            EventTooLarge: an event's data passed ``max_event`` bytes.
        """
        if self._head is not None:
            head = self._head + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._head = head  # maybe a BOM: wait for the rest of it
                return _NOTHING
            self._head = None
            chunk = head[len(_BOM) :] if head.startswith(_BOM) else head
        if not chunk:
            return _NOTHING
        if (
            # The usual chunk, one whole event of one data line ("data: ...\n\n") between
            # events: read directly (what the loop below would do, in a fraction of the time).
            not self._fields
            and not self._partial
            and not self._skip_lf
            and chunk.startswith(b"data:")
            and chunk.endswith(b"\n\n")
            and chunk.count(b"\n") == 2
            and b"\r" not in chunk
        ):
            line = chunk[:-2]
            if len(line) > self.max_line:
                raise LineTooLong(f"an event-stream line passed {self.max_line} bytes")
            value = line[6:] if line[5:6] == b" " else line[5:]
            if len(value) > self.max_event:
                raise EventTooLarge(f"an event's data passed {self.max_event} bytes")
            text = value.decode("utf-8", "replace")
            return _new(Fed, ([_new(Event, ("message", text, self._id, None))], True))
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._skip_lf = chunk[-1] == 13
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        rest = lines.pop()  # what follows the last line end (b"" if the chunk ended with one)
        events: list[Event] = []
        progress = False
        if lines:
            if self._partial:
                self._partial.append(lines[0])
                lines[0] = b"".join(self._partial)
                self._partial, self._partial_size = [], 0
            max_line = self.max_line
            for line in lines:
                if not line:
                    if self._data or self._event or self._id or self._retry is not None:
                        events.append(self._dispatch())
                        progress = progress or self._fields
                    self._data, self._data_size = [], 0
                    self._event, self._retry, self._fields = b"", None, False
                elif len(line) > max_line:
                    raise LineTooLong(f"an event-stream line passed {max_line} bytes")
                elif line[0] != 58:  # a colon first: a comment
                    self._field(line)
        if rest:
            self._partial.append(rest)
            self._partial_size += len(rest)
            if self._partial_size > self.max_line:
                raise LineTooLong(
                    f"an event-stream line passed {self.max_line} bytes without ending"
                )
        return _new(Fed, (events, progress)) if events else _NOTHING

    def _field(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._add_data(value)
        elif name == b"event":
            self._event = value
            self._fields = True
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
                self._fields = True
        elif name == b"retry" and value.isdigit():  # bytes.isdigit is ASCII digits only
            try:
                self._retry = int(value)
            except ValueError:  # more digits than int() converts; ignored, like httpx-sse
                return
            self._fields = True

    def _add_data(self, value: bytes) -> None:
        self._data_size += len(value) + 1
        if self._data_size > self.max_event + 1:  # the last newline is not part of the data
            raise EventTooLarge(f"an event's data passed {self.max_event} bytes")
        self._data.append(value)
        self._fields = True

    def _dispatch(self) -> Event:
        data = self._data
        text = (data[0] if len(data) == 1 else b"\n".join(data)).decode("utf-8", "replace")
        event = self._event.decode("utf-8", "replace") if self._event else "message"
        return _new(Event, (event, text, self._id, self._retry))
