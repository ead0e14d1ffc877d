"""Structured JSON logs to stdout. Callers log event names and ids, never prompt text or PII."""

import logging
import sys

import structlog


def configure_logging(service: str, level: str = "INFO") -> None:
    """Routes structlog and stdlib logging to one JSON line per event on stdout."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper())
    structlog.configure(
        processors=[
            # A static field (not a contextvar) so threads started by libraries carry it too.
            lambda _, __, event: {"service": service, **event},
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
