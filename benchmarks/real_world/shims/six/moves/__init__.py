"""Fake ``six.moves``: ``urllib.request.urlopen`` returns local payloads for known dataset URLs."""

import io
import types
import urllib.parse

from rw_fakes import archive_for


def _urlopen(url, *args, **kwargs):
    return io.BytesIO(archive_for(str(url)))


urllib = types.SimpleNamespace(
    request=types.SimpleNamespace(urlopen=_urlopen), parse=urllib.parse
)
