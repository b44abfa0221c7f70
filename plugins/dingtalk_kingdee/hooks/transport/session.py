"""A plain ``requests.Session`` as the hooks want it.

No connection extras become headers and no basic auth is set (a DingTalk app secret must never
leave in a header); redirects are refused per request by the hooks. TLS verification is always
on: ``verify`` may only name a CA bundle.
"""

from __future__ import annotations

from collections.abc import Mapping

import requests


def new_session(headers: Mapping[str, str] | None = None, ca_bundle: str | None = None) -> requests.Session:
    session = requests.Session()
    session.verify = ca_bundle or True
    session.headers.update(headers or {})
    return session
