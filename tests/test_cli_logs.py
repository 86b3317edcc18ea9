"""``rmwatch.cli.logs``: the one place output is configured, JSON or console, every line with
its component; and the ``--log-format`` / ``RMWATCH_LOG_FORMAT`` setting of each command."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from rmwatch._logging import get_logger
from rmwatch.cli import logs
from rmwatch.cli.main import build_parser
from rmwatch.cli.replica import settings_from_args as replica_settings
from rmwatch.cli.writer import settings_from_args as writer_settings


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Leave the root logger and structlog as they were (other tests share the process)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    rmwatch_level = logging.getLogger("rmwatch").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("rmwatch").setLevel(rmwatch_level)
    structlog.reset_defaults()


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestJson:
    def test_library_event_is_one_json_line_with_component_and_fields(self) -> None:
        """An event logged through get_logger renders as JSON: timestamp, level, component,
        event first, then its fields as values (not formatted into the message)."""
        stream = io.StringIO()
        assert logs.configure("json", stream=stream) == "json"
        get_logger("replica").info("snapshot_loaded", revision=12, keys=3)
        (line,) = stream.getvalue().splitlines()
        assert list(json.loads(line))[:4] == ["timestamp", "level", "component", "event"]
        event = json.loads(line)
        assert event["component"] == "replica"
        assert event["event"] == "snapshot_loaded"
        assert event["level"] == "info"
        assert event["revision"] == 12
        assert event["keys"] == 3

    def test_other_libraries_records_carry_their_message_and_logger(self) -> None:
        """uvicorn's records (plain stdlib logging) come out as JSON too, their message as
        the event and their logger's first name as the component."""
        stream = io.StringIO()
        # As uvicorn's default LOGGING_CONFIG leaves them when a server ran in this process.
        uvicorn_logger = logging.getLogger("uvicorn")
        uvicorn_logger.addHandler(logging.StreamHandler(io.StringIO()))
        uvicorn_logger.propagate = False
        logs.configure("json", stream=stream)
        logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
        (event,) = _json_lines(stream)
        assert event["event"] == "Started server process [42]"
        assert event["component"] == "uvicorn"
        assert event["level"] == "warning"

    def test_info_of_other_libraries_is_dropped_debug_of_ours_too(self) -> None:
        """rmwatch logs at INFO, everything else at WARNING: a client library's per-request
        INFO line and our DEBUG do not reach the output."""
        stream = io.StringIO()
        logs.configure("json", stream=stream)
        logging.getLogger("httpx").info("HTTP Request: GET /")
        get_logger("writer").debug("detail")
        get_logger("writer").warning("write_refused", key="k")
        assert [e["event"] for e in _json_lines(stream)] == ["write_refused"]

    def test_structlog_global_loggers_are_routed_to_the_same_handler(self) -> None:
        """A module logging through structlog.get_logger() lands in the same output (not on
        stdout, structlog's default), its component taken from the logger name."""
        stream = io.StringIO()
        logs.configure("json", stream=stream)
        structlog.get_logger("rmwatch.drain").info("drain_finished", writes=2)
        (event,) = _json_lines(stream)
        assert event["component"] == "drain"
        assert event["event"] == "drain_finished"
        assert event["writes"] == 2

    def test_exception_is_rendered_into_the_line(self) -> None:
        """log.exception keeps the traceback, as a field of the one JSON line."""
        stream = io.StringIO()
        logs.configure("json", stream=stream)
        try:
            raise ValueError("bad value")
        except ValueError:
            get_logger("sidecar").exception("request_failed")
        (event,) = _json_lines(stream)
        assert "ValueError: bad value" in event["exception"]

    def test_configure_twice_does_not_double_lines(self) -> None:
        """A second configure replaces the first handler: each event is written once."""
        first, second = io.StringIO(), io.StringIO()
        logs.configure("json", stream=first)
        logs.configure("json", stream=second)
        get_logger("dev").info("etcd_started")
        assert first.getvalue() == ""
        assert len(second.getvalue().splitlines()) == 1


class TestConsole:
    def test_console_line_names_component_event_and_fields(self) -> None:
        """The console format is one readable line: level, event, [component], key=value."""
        stream = io.StringIO()
        logs.configure("console", stream=stream)
        get_logger("writer").info("leader_elected", epoch=2)
        (line,) = stream.getvalue().splitlines()
        assert "leader_elected" in line
        assert "[writer]" in line
        assert "epoch=2" in line
        assert "info" in line
        assert not line.startswith("{")

    def test_auto_is_console_on_a_terminal_and_json_elsewhere(self) -> None:
        """auto: console when the stream is a TTY, JSON when it is a pipe or a file."""
        assert logs.configure("auto", stream=_Tty()) == "console"
        assert logs.configure("auto", stream=io.StringIO()) == "json"


class TestSetting:
    def test_log_format_flag_and_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """--log-format wins over RMWATCH_LOG_FORMAT, which wins over auto."""
        assert writer_settings(build_parser().parse_args(["writer"])).log_format == "auto"
        monkeypatch.setenv("RMWATCH_LOG_FORMAT", "json")
        assert replica_settings(build_parser().parse_args(["replica"])).log_format == "json"
        args = build_parser().parse_args(["writer", "--log-format", "console"])
        assert writer_settings(args).log_format == "console"

    def test_unknown_log_format_is_refused(self) -> None:
        """An unknown --log-format is a usage error, not a silent default."""
        with pytest.raises(SystemExit):
            build_parser().parse_args(["replica", "--log-format", "xml"])
