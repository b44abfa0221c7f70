"""The signature headers equal the reference test vector and the official SDK's own computation."""

from __future__ import annotations

import base64
import string
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from k3cloud_webapi_sdk.main import K3CloudApiSdk

from dingtalk_kingdee.hooks.kingdee_signature import (
    SignatureIdentity,
    decode_client_secret,
    signature_headers,
    signed_path,
)

SAVE_URL = "http://erp.example.com/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc"
VECTOR_IDENTITY = SignatureIdentity(
    acct_id="6500a1b2c3d4e5", user_name="apiuser", app_id="123456_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
    app_secret="0123456789abcdef0123456789abcdef", lcid=2052, org_num=100,
)
SIGNATURE_HEADER_NAMES = ("X-Api-ClientID", "X-Api-Auth-Version", "x-api-timestamp", "x-api-nonce",
                          "x-api-signheaders", "X-Api-Signature", "X-Kd-Appkey", "X-Kd-Appdata",
                          "X-Kd-Signature")


def sdk_headers(identity: SignatureIdentity, server_url: str, service: str, unix_time: int) -> dict:
    """Headers built by the official SDK's ``BuildHeader`` with its clock fixed at ``unix_time``."""
    sdk = K3CloudApiSdk(server_url)
    sdk.InitConfig(identity.acct_id, identity.user_name, identity.app_id, identity.app_secret,
                   server_url, lcid=identity.lcid, org_num=int(identity.org_num))
    url = server_url + service + ".common.kdsvc"
    with mock.patch("k3cloud_webapi_sdk.core.webapi_client.time.time", return_value=float(unix_time)):
        built = sdk.BuildHeader(url)
    return {name: built[name] for name in SIGNATURE_HEADER_NAMES}


def test_reference_test_vector() -> None:
    headers = signature_headers(VECTOR_IDENTITY, SAVE_URL, 1700000000)
    assert headers["X-Api-Signature"] == (
        "YzQ1YjFmZTY4MmNmMTU5ZjlkMTY1ZGE5ZmUwZWUwZTQ1ZmM3YjI5M2VkMTgzNWZjYTQzNTgxMTQxYjI0MmE2MQ==")
    assert headers["X-Kd-Appdata"] == "NjUwMGExYjJjM2Q0ZTUsYXBpdXNlciwyMDUyLDEwMA=="
    assert headers["X-Kd-Signature"] == (
        "MjZkYzExYzEwMzAzMzE3MWMzMzQyYjdmNDBjNzdkYTdiYTdlNzc5MGEzNTg4YzIxYWRhMmFkNzg5MDU1OTRlOQ==")
    assert headers["X-Api-ClientID"] == "123456"
    assert headers["x-api-timestamp"] == headers["x-api-nonce"] == "1700000000"
    assert headers["x-api-signheaders"] == "x-api-timestamp,x-api-nonce"
    assert headers["X-Api-Auth-Version"] == "2.0"
    assert headers["X-Kd-Appkey"] == VECTOR_IDENTITY.app_id


def test_vector_equals_sdk() -> None:
    ours = signature_headers(VECTOR_IDENTITY, SAVE_URL, 1700000000)
    theirs = sdk_headers(VECTOR_IDENTITY, "http://erp.example.com/k3cloud/",
                         "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save", 1700000000)
    assert ours == theirs


def test_signed_path_encodes_slashes() -> None:
    assert signed_path(SAVE_URL) == (
        "%2Fk3cloud%2FKingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc")


def test_client_secret_is_xor_of_decoded_part() -> None:
    part = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    decoded = base64.b64decode(decode_client_secret(part))
    expected = bytes(a ^ b for a, b in zip(base64.b64decode(part), b"0054f397c6234378b09ca7d3e5debce7",
                                           strict=False))
    assert decoded == expected


@pytest.mark.parametrize(
    "bad_part", ["short", "QUJDREVGR0hJSktMTU5PUFFSU1RVVl==", "QUJD*EVGR0hJSktMTU5PUFFSU1RVVldY"])
def test_malformed_secret_part_gives_empty_key_like_the_sdk(bad_part: str) -> None:
    assert decode_client_secret(bad_part) == ""
    identity = SignatureIdentity("a", "u", f"1_{bad_part}", "s")
    service = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.View"
    url = "http://erp.example.com/k3cloud/" + service + ".common.kdsvc"
    assert signature_headers(identity, url, 1) == sdk_headers(
        identity, "http://erp.example.com/k3cloud/", service, 1)


def test_repr_hides_app_secret() -> None:
    assert VECTOR_IDENTITY.app_secret not in repr(VECTOR_IDENTITY)


_b64_part = st.text(alphabet=string.ascii_letters + string.digits + "+/", min_size=32, max_size=32)
_words = st.text(alphabet=string.ascii_letters + string.digits + "中文用户-.", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    acct=_words, user=_words, client_id=st.text(alphabet=string.digits, min_size=1, max_size=8),
    part=_b64_part, secret=st.text(alphabet=string.hexdigits, min_size=1, max_size=40),
    lcid=st.sampled_from([2052, 1033, 3076]), org=st.integers(min_value=0, max_value=100000),
    host=st.sampled_from(["http://erp.example.com/k3cloud/", "https://10.1.2.3:8443/k3cloud/",
                          "http://127.0.0.1:50123/k3cloud/"]),
    service=st.sampled_from(["Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.BatchSave",
                             "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.ExecuteBillQuery",
                             "Kingdee.BOS.WebApi.ServicesStub.AuthService.ValidateUser"]),
    unix_time=st.integers(min_value=1_500_000_000, max_value=2_200_000_000),
)
def test_equals_sdk_for_any_inputs(acct, user, client_id, part, secret, lcid, org, host, service,
                                   unix_time) -> None:
    identity = SignatureIdentity(acct, user, f"{client_id}_{part}", secret, lcid, org)
    url = host + service + ".common.kdsvc"
    assert signature_headers(identity, url, unix_time) == sdk_headers(identity, host, service, unix_time)
