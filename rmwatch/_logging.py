"""How every rmwatch module logs: structlog events on top of the standard ``logging`` module.

A library must not decide where its logs go. Each component logs structured events through a
stdlib logger named ``rmwatch.<component>`` (``rmwatch.replica``, ``rmwatch.writer``, ...), so an
application's own ``logging`` configuration (levels, handlers, formatters) applies to them, and
an application that configured nothing sees warnings on stderr only (Python's last-resort
handler), never anything on stdout. The ``rmwatch`` CLIs configure output themselves
(``rmwatch.cli.logs``): JSON lines for machines, structlog's console rendering for people.

Conventions, so that one ``grep`` finds a kind of event in every component:
- the event is ``snake_case``, a noun then a past participle or a state: ``snapshot_loaded``,
  ``watch_resumed``, ``leader_elected``, ``write_refused``;
- every line carries ``component`` (``writer``, ``replica``, ``sidecar``, ``dev``, ...);
- values are fields (``revision=12``), never formatted into the event.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

ROOT = "rmwatch"
# The attribute of a LogRecord that carries the structured event (for rmwatch.cli.logs).
EVENT_ATTR = "rmwatch_event"

# The library's loggers hand records to whatever the application configured; with no handler
# at all Python would print WARNING and above to stderr ("last resort"), which is what we want.
logging.getLogger(ROOT).addHandler(logging.NullHandler())


class _Message:
    """A record's readable message, ``event key=value ...``, formatted only when a handler asks
    (``str``): our own JSON and console formatters render the structured event instead, and
    formatting every field's repr up front cost ~8 us a line. A handler that reads
    ``record.msg`` itself, not ``getMessage()``, gets this object; its ``str`` is the text."""

    __slots__ = ("_event",)

    def __init__(self, event: dict[str, Any]) -> None:
        self._event = event

    def __str__(self) -> str:
        event = self._event
        fields = " ".join(f"{key}={value!r}" for key, value in event.items() if key != "event")
        return f"{event.get('event', '')} {fields}".rstrip()


def _to_stdlib(
    _logger: Any, _method: str, event_dict: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The stdlib call: a readable ``event key=value ...`` message for plain ``logging`` setups,
    and the whole event on the record (``EVENT_ATTR``) for formatters that render structure."""
    event = dict(event_dict)
    exc_info = event.pop("exc_info", None)
    return (_Message(event),), {"extra": {EVENT_ATTR: event}, "exc_info": exc_info}


def get_logger(component: str, **context: Any) -> Any:
    """A structlog logger for ``component`` that writes through ``logging.getLogger(
    "rmwatch.<component>")``; ``context`` is bound to every event it logs."""
    stdlib = logging.getLogger(f"{ROOT}.{component}")
    logger = structlog.wrap_logger(
        stdlib,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.StackInfoRenderer(),
            _to_stdlib,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger.bind(component=component, **context)
