"""Per-request signature headers of the K/3Cloud WebAPI (third-party app authorisation).

Pure functions reproducing what the official Python SDK (``k3cloud_webapi_sdk``,
``WebApiClient.BuildHeader``) computes, for given inputs and a given clock value, so that a real
K/3Cloud server accepts the requests. Nothing here performs I/O or reads the clock by itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

# The SDK's XOR key (``encode_util.generate_code`` with its random digits dropped and ROT13 undone).
APP_SECRET_XOR_KEY = b"0054f397c6234378b09ca7d3e5debce7"
AUTH_VERSION = "2.0"
SIGNED_HEADER_NAMES = "x-api-timestamp,x-api-nonce"
# The SDK's own base64 decoder accepts only these characters (no "=" padding) in a 32-char part.
_SDK_BASE64_PART = re.compile(r"[A-Za-z0-9+/]{32}")


@dataclass(frozen=True)
class SignatureIdentity:
    """What the signature covers: the account set, the user and the third-party app."""

    acct_id: str
    user_name: str
    app_id: str
    app_secret: str
    lcid: int = 2052
    org_num: int | str = 0

    def __repr__(self) -> str:  # the app secret must never reach a log line
        return (f"SignatureIdentity(acct_id={self.acct_id!r}, user_name={self.user_name!r}, "
                f"app_id={self.app_id!r}, app_secret='***', lcid={self.lcid}, org_num={self.org_num!r})")


def hmac_b64(message: str, key: str) -> str:
    """Base64 of the lower-case hex text of HMAC-SHA256(key, message), as the SDK's ``HmacSHA256``."""
    digest_hex = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
    return base64.b64encode(digest_hex.encode("utf-8")).decode("ascii")


def split_app_id(app_id: str) -> tuple[str, str]:
    """``<clientId>_<32-char part>`` → (client id, 32-char part); ("", "") when not exactly two parts."""
    parts = app_id.split("_")
    if len(parts) != 2:
        return "", ""
    return parts[0], parts[1]


def decode_client_secret(app_id_secret_part: str) -> str:
    """The key of ``X-Api-Signature``: base64(base64decode(part) XOR the SDK key), byte by byte.

    Mirrors ``encode_util.DecodeAppSecret``: a part that is not 32 characters, or not valid
    base64, yields an empty key (the SDK then signs with an empty key and the server refuses).
    """
    if not _SDK_BASE64_PART.fullmatch(app_id_secret_part):
        return ""
    raw = base64.b64decode(app_id_secret_part)
    xored = bytes(byte ^ APP_SECRET_XOR_KEY[i] for i, byte in enumerate(raw))
    return base64.b64encode(xored).decode("ascii")


def signed_path(url: str) -> str:
    """The URL path percent-encoded with ``/`` also encoded (``%2Fk3cloud%2F...``).

    The SDK cuts the URL at the first ``/`` from character 10 on; for every real server URL that is
    the start of the path, which is what is taken here.
    """
    split = urlsplit(url)
    path = split.path or "/"
    if split.query:
        path = f"{path}?{split.query}"
    return quote(path, encoding="utf-8").replace("/", "%2F")


def app_data_plain(identity: SignatureIdentity) -> str:
    return f"{identity.acct_id},{identity.user_name},{identity.lcid},{identity.org_num}"


def signature_headers(identity: SignatureIdentity, url: str, unix_time: int) -> dict[str, str]:
    """Every signature header for one POST to ``url`` at ``unix_time`` (seconds since the epoch).

    The SDK uses the same value for timestamp and nonce; so does this.
    """
    timestamp = str(int(unix_time))
    nonce = timestamp
    client_id, secret_part = split_app_id(identity.app_id)
    client_secret = decode_client_secret(secret_part)
    api_sign = f"POST\n{signed_path(url)}\n\nx-api-nonce:{nonce}\nx-api-timestamp:{timestamp}\n"
    app_data = app_data_plain(identity)
    return {
        "X-Api-ClientID": client_id,
        "X-Api-Auth-Version": AUTH_VERSION,
        "x-api-timestamp": timestamp,
        "x-api-nonce": nonce,
        "x-api-signheaders": SIGNED_HEADER_NAMES,
        "X-Api-Signature": hmac_b64(api_sign, client_secret),
        "X-Kd-Appkey": identity.app_id,
        "X-Kd-Appdata": base64.b64encode(app_data.encode("utf-8")).decode("ascii"),
        "X-Kd-Signature": hmac_b64(identity.app_id + app_data, identity.app_secret),
    }
