"""Where the ``rmwatch`` commands send their logs, and how each line looks.

This is the only module that configures output: the library (``rmwatch._logging``) only hands
structured events to stdlib loggers named ``rmwatch.<component>``. ``configure(fmt)`` puts one
handler on the root logger, so our records, uvicorn's and any other library's come out the same
way on stderr:

- ``json``: one JSON object per line (``timestamp``, ``level``, ``component``, ``event`` and the
  event's fields; a record from another library carries its message as ``event`` and its
  logger's first name, e.g. ``uvicorn``, as ``component``), for log shippers;
- ``console``: structlog's ``ConsoleRenderer``, one aligned line per event with the component
  in brackets, for a person;
- ``auto``: ``console`` when stderr is a terminal, else ``json``.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Literal, get_args

import structlog
from structlog.typing import EventDict, Processor

from rmwatch._logging import EVENT_ATTR, ROOT

LogFormat = Literal["auto", "json", "console"]
FORMATS: tuple[str, ...] = get_args(LogFormat)


_LEADING = ("timestamp", "level", "component", "event")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our handler, told apart from an application's so a second ``configure`` replaces it."""


def resolve(fmt: LogFormat, stream: IO[str]) -> Literal["json", "console"]:
    """``fmt`` with ``auto`` decided: console on a terminal, JSON everywhere else."""
    if fmt == "auto":
        return "console" if stream.isatty() else "json"
    return fmt


def _structured_event(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Replace a record's flat message with the event ``rmwatch._logging`` attached to it."""
    structured = getattr(event_dict["_record"], EVENT_ATTR, None)
    if not isinstance(structured, dict):
        return event_dict  # another library's record: its message is the event
    rebuilt: EventDict = dict(structured)
    for meta in ("_record", "_from_structlog", "exc_info", "stack_info"):
        if meta in event_dict:
            rebuilt[meta] = event_dict[meta]
    return rebuilt


def _add_component(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Name the component of a record that carries none: ``rmwatch.X`` is ``X``, any other
    logger its first name (``uvicorn.error`` is ``uvicorn``)."""
    if "component" not in event_dict:
        name: str = event_dict["_record"].name
        prefix = f"{ROOT}."
        event_dict["component"] = (
            name[len(prefix) :] if name.startswith(prefix) else name.partition(".")[0]
        )
    return event_dict


def _leading_keys(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """For JSON: timestamp, level, component and event first, then the event's fields."""
    first = {k: event_dict.pop(k) for k in _LEADING if k in event_dict}
    return {**first, **event_dict}


def _component_as_logger(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """For the console: the component goes where ConsoleRenderer shows a logger, ``[writer]``."""
    event_dict["logger"] = event_dict.pop("component", None)
    return event_dict


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter, with a shorter way for rmwatch's own records.

    ``ProcessorFormatter.format`` copies every record (a second ``LogRecord``, ~25 us) and
    renders its message before the chain replaces it with the structured event; for a record
    that carries that event (``EVENT_ATTR``) this builds the same event dict directly and runs
    the same processors, so the line is byte-for-byte the same, for about half the cost (the
    writer logs one line per write). Any other record takes structlog's way.
    """

    def format(self, record: logging.LogRecord) -> str:
        structured = getattr(record, EVENT_ATTR, None)
        if not isinstance(structured, dict):
            return super().format(record)
        event_dict: EventDict = dict(structured)
        event_dict["_record"] = record
        event_dict["_from_structlog"] = False
        if record.exc_info:
            event_dict["exc_info"] = record.exc_info
        if record.stack_info:
            event_dict["stack_info"] = record.stack_info
        method = record.levelname.lower()
        rendered: Any = event_dict
        for processor in self.processors:
            rendered = processor(self.logger, method, rendered)
        return str(rendered)


def _formatter(fmt: Literal["json", "console"], colors: bool) -> logging.Formatter:
    shared: list[Processor] = [
        _add_component,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
    ]
    final: list[Processor]
    if fmt == "json":
        final = [
            structlog.processors.format_exc_info,
            _leading_keys,
            structlog.processors.JSONRenderer(),
        ]
    else:
        final = [_component_as_logger, structlog.dev.ConsoleRenderer(colors=colors)]
    # Records of structlog.get_logger() carry their event as the message (a dict); ours and
    # other libraries' are "foreign" to structlog and pass foreign_pre_chain first.
    return _Formatter(foreign_pre_chain=[_structured_event], processors=[*shared, *final])


_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure(
    fmt: LogFormat = "auto", *, stream: IO[str] | None = None
) -> Literal["json", "console"]:
    """Send every log record to ``stream`` (stderr) in ``fmt``; return the format used.

    INFO and above from ``rmwatch.*``, WARNING and above from everything else (so a
    request log at INFO from a client library does not drown ours). Calling it again
    replaces the previous setup instead of doubling every line.
    """
    stream = stream if stream is not None else sys.stderr
    chosen = resolve(fmt, stream)
    handler = _Handler(stream)
    handler.setFormatter(_formatter(chosen, colors=stream.isatty()))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger(ROOT).setLevel(logging.INFO)
    # uvicorn's own logging config (applied by anything that ran uvicorn with its defaults in
    # this process) gives its loggers private handlers and stops them propagating: undo that,
    # so its records reach the one handler above instead of a second, differently shaped one.
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    # Anything logging through structlog's own global logger (``structlog.get_logger()``)
    # is routed into the same stdlib handler, instead of structlog's default print to stdout.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return chosen


__all__ = ["FORMATS", "LogFormat", "configure", "resolve"]
