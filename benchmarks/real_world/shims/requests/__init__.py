"""Fake ``requests``: ``get`` serves the scoreboard's local payloads for known dataset URLs."""

from __future__ import annotations

import io

from rw_fakes import archive_for

__version__ = "0.0-fake"


class ConnectionError(OSError):  # noqa: A001 - same name as requests.ConnectionError
    pass


class Response:
    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.content, self.status_code, self.ok = url, body, 200, True
        self.raw = io.BytesIO(body)

    def raise_for_status(self) -> None:
        return None

    def iter_content(self, chunk_size: int = 1024):
        for i in range(0, len(self.content), chunk_size):
            yield self.content[i : i + chunk_size]

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(url: str, *args: object, **kwargs: object) -> Response:
    return Response(url, archive_for(url))
