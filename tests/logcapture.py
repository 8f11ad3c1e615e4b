"""Captures the gateway's access log (``infergate.access``) into a string, with a chosen formatter."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.logs import ACCESS_LOGGER


@contextmanager
def captured_access_log(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """Yields a stream that receives every access-log record at INFO and above, formatted by
    ``formatter``; the logger's handlers and level are restored afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
