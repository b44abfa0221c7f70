"""Both ways a K/3Cloud client authenticates, as the emulator checks them.

Session mode: ``AuthService.ValidateUser`` / ``LoginByAppSecret`` answer a login context and set
the ``kdservice-sessionid`` and ``ASP.NET_SessionId`` cookies; later calls carry either, and the
session slides like an ASP.NET one. Signature mode: every call carries the SDK's headers
(``X-Api-Signature`` over the percent-encoded path, ``X-Kd-Signature`` over app id and app data);
``signature_headers`` computes them the way the official SDK does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import Response

from dk_emulators.kingdee.wire import MSG_SESSION, PASSPORT_FAILED, SESSION_LOST, error_result, json_response

# The SDK's fixed XOR key (rot13 of the obfuscated constant in k3cloud_webapi_sdk.util.encode_util).
APP_SECRET_XOR_KEY = "0054f397c6234378b09ca7d3e5debce7"
DEMO_APP_ID = "300001_ZGluZ3RhbGsta2luZ2RlZS1kZW1vLWFw"
DEMO_APP_SECRET = "5f0c3a7e9b2d4c6e8a1b3d5f7e9c0a2b"

_CHINA_TIME_ZONE = {"OffsetTicks": 288000000000, "StandardName": "(UTC+08:00)北京，重庆，香港特别行政区，乌鲁木齐",
                    "Id": 230, "Number": "1078_SYS", "CanBeUsed": True}


# ------------------------------------------------------------------------------------- signature

def hmac_b64(message: str, key: str) -> str:
    """Base64 of the lower-case hex HMAC-SHA256 text (what K/3Cloud calls the signature)."""
    digest_hex = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
    return base64.b64encode(digest_hex.encode("ascii")).decode("ascii")


def client_secret(app_id: str) -> str:
    """``client_sec`` for an app id ``<clientId>_<32-char part>``: base64(b64decode(part) XOR key)."""
    _, _, part = app_id.partition("_")
    if len(part) != 32:
        return ""  # the SDK signs with an empty key in that case; so must the server
    try:
        raw = base64.b64decode(part, validate=True)
    except (binascii.Error, ValueError):
        return ""
    key = APP_SECRET_XOR_KEY.encode("ascii")
    return base64.b64encode(bytes(b ^ key[i] for i, b in enumerate(raw))).decode("ascii")


def encode_path(path: str) -> str:
    """The signed path: percent-encoded, ``/`` included (``%2Fk3cloud%2F...``)."""
    return quote(path, safe="", encoding="utf-8")


def signature_headers(url_path: str, acct_id: str, user_name: str, app_id: str, app_secret: str,
                      lcid: int | str, org_num: int | str, timestamp: int | str) -> dict[str, str]:
    """The signature headers a client sends for ``url_path`` (path after the host) at ``timestamp``."""
    ts = str(timestamp)
    api_sign = f"POST\n{encode_path(url_path)}\n\nx-api-nonce:{ts}\nx-api-timestamp:{ts}\n"
    app_data = f"{acct_id},{user_name},{lcid},{org_num}"
    return {
        "X-Api-ClientID": app_id.split("_", 1)[0],
        "X-Api-Auth-Version": "2.0",
        "x-api-timestamp": ts,
        "x-api-nonce": ts,
        "x-api-signheaders": "x-api-timestamp,x-api-nonce",
        "X-Api-Signature": hmac_b64(api_sign, client_secret(app_id)),
        "X-Kd-Appkey": app_id,
        "X-Kd-Appdata": base64.b64encode(app_data.encode("utf-8")).decode("ascii"),
        "X-Kd-Signature": hmac_b64(app_id + app_data, app_secret),
    }


# -------------------------------------------------------------------------------------- sessions

@dataclass
class Session:
    user: str
    asp_id: str
    expires_at: float


class Authenticator:
    """The data center's users and signature apps, and the sessions handed out to them.

    ``organization`` is the base-data record the login context names as the current organization.
    """

    def __init__(self, acct_id: str, users: dict[str, str], apps: dict[str, str], session_ttl: float,
                 max_clock_skew_s: float | None, organization: dict[str, Any]) -> None:
        self.acct_id = acct_id
        self.users = users
        self.apps = apps
        self.session_ttl = session_ttl
        self.max_clock_skew_s = max_clock_skew_s
        self.organization = organization
        self._sessions: dict[str, Session] = {}
        self._asp_sessions: dict[str, str] = {}
        self._lock = threading.RLock()

    @property
    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def drop_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._asp_sessions.clear()

    # --------------------------------------------------------------------------------- login
    def validate_user(self, payload: Any) -> Response:
        """``AuthService.ValidateUser``: data center, user name and password."""
        if isinstance(payload, dict) and isinstance(payload.get("parameters"), list):
            params = [*payload["parameters"], None, None, None, None][:4]
            acct, user, password = params[0], params[1], params[2]
        elif isinstance(payload, dict):
            lowered = {str(k).lower(): v for k, v in payload.items()}
            acct, user, password = lowered.get("acctid"), lowered.get("username"), lowered.get("password")
        else:
            acct = user = password = None
        if str(acct) != self.acct_id:
            return self._login_failure(-1, f"数据中心“{acct}”不存在或已停用")
        if user is None or self.users.get(str(user)) != password:
            return self._login_failure(0, "用户名或密码错误！")
        return self._login_answer(str(user))

    def login_by_app_secret(self, payload: Any) -> Response:
        """``AuthService.LoginByAppSecret``: data center, user, app id and app secret."""
        params = payload.get("parameters") if isinstance(payload, dict) else None
        if not isinstance(params, list) or len(params) < 4:
            lowered = {str(k).lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
            params = [lowered.get("acctid"), lowered.get("username"), lowered.get("appid"),
                      lowered.get("appsecret"), lowered.get("lcid")]
        acct, user, app_id, app_secret = params[0], params[1], params[2], params[3]
        if str(acct) != self.acct_id:
            return self._login_failure(-1, f"数据中心“{acct}”不存在或已停用")
        if app_id not in self.apps or not hmac.compare_digest(str(self.apps[app_id]), str(app_secret)):
            return self._login_failure(0, "第三方系统登录授权验证失败：应用ID或应用密钥错误")
        if str(user) not in self.users:
            return self._login_failure(0, f"用户“{user}”不存在")
        return self._login_answer(str(user))

    def _new_session(self, user: str) -> tuple[str, str]:
        kd_id, asp_id = str(uuid.uuid4()), uuid.uuid4().hex[:24]
        with self._lock:
            self._sessions[kd_id] = Session(user, asp_id, time.monotonic() + self.session_ttl)
            self._asp_sessions[asp_id] = kd_id
        return kd_id, asp_id

    def _login_answer(self, user: str) -> Response:
        kd_id, asp_id = self._new_session(user)
        org = self.organization
        user_id = 100000 + sorted(self.users).index(user) if user in self.users else 100000
        answer = {
            "Message": None, "MessageCode": "CheckPasswordPolicy", "LoginResultType": 1,
            "Context": {
                "UserLocale": "zh-CN", "LogLocale": "zh-CN", "DBid": self.acct_id, "DatabaseType": 3,
                "SessionId": asp_id, "UseLanguages": [{"LocaleId": 2052, "LocaleName": "中文(简体)",
                                                       "Alias": "CN"}],
                "UserId": user_id, "UserName": user, "CustomName": "K/3Cloud emulator",
                "DisplayVersion": "8.2.0.emulator", "DataCenterName": self.acct_id,
                "UserToken": str(uuid.uuid4()),
                "CurrentOrganizationInfo": {"ID": org["id"], "AcctOrgType": "1", "Name": org["name"],
                                            "FunctionIds": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 101]},
                "IsCH_ZH_AutoTrans": False, "ClientType": 32, "WeiboAuthInfo": None,
                "UTimeZone": dict(_CHINA_TIME_ZONE), "STimeZone": dict(_CHINA_TIME_ZONE),
                "GDCID": "", "Gsid": None, "TRLevel": 0, "ProductEdition": 0, "DataCenterNumber": None,
                "ContextResultType": 0,
            },
            "KDSVCSessionId": kd_id, "FormId": None, "RedirectFormParam": None, "FormInputObject": None,
            "ErrorStackTrace": None, "Lcid": 0, "AccessToken": None, "CustomParam": {},
            "KdAccessResult": None, "IsSuccessByAPI": True,
        }
        response = json_response(answer)
        response.set_cookie("kdservice-sessionid", kd_id, path="/")
        response.set_cookie("ASP.NET_SessionId", asp_id, path="/", httponly=True)
        return response

    @staticmethod
    def _login_failure(result_type: int, message: str) -> Response:
        return json_response({"Message": message, "MessageCode": None, "LoginResultType": result_type,
                              "Context": None, "KDSVCSessionId": None, "FormId": None,
                              "RedirectFormParam": None, "FormInputObject": None, "ErrorStackTrace": None,
                              "Lcid": 0, "AccessToken": None, "CustomParam": {}, "KdAccessResult": None,
                              "IsSuccessByAPI": False})

    # ------------------------------------------------------------------------ every other call
    def authenticate(self, request: Request) -> tuple[int, Any] | None:
        """None when the call may proceed; else (HTTP status, body) of the refusal."""
        headers = request.headers
        if headers.get("x-kd-appkey"):
            return self._verify_signature(request)
        session_id = (headers.get("kdservice-sessionid") or request.cookies.get("kdservice-sessionid"))
        with self._lock:
            if not session_id or session_id not in self._sessions:
                asp = request.cookies.get("ASP.NET_SessionId")
                session_id = self._asp_sessions.get(asp or "")
            session = self._sessions.get(session_id or "")
            now = time.monotonic()
            if session is None:
                return 200, error_result(SESSION_LOST, MSG_SESSION)
            if session.expires_at <= now:
                self._sessions.pop(session_id, None)
                self._asp_sessions.pop(session.asp_id, None)
                return 200, error_result(SESSION_LOST, MSG_SESSION)
            session.expires_at = now + self.session_ttl  # sliding, like an ASP.NET session
        return None

    def _verify_signature(self, request: Request) -> tuple[int, Any] | None:
        headers = request.headers
        lost = (200, error_result(SESSION_LOST, MSG_SESSION))
        app_id = headers.get("x-kd-appkey", "")
        secret = self.apps.get(app_id)
        if secret is None or headers.get("x-api-clientid") != app_id.split("_", 1)[0]:
            return lost
        try:
            app_data = base64.b64decode(headers.get("x-kd-appdata", ""), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return lost
        if not hmac.compare_digest(headers.get("x-kd-signature", ""), hmac_b64(app_id + app_data, secret)):
            return lost
        signed = {h.strip().lower() for h in headers.get("x-api-signheaders", "").split(",")}
        if signed != {"x-api-timestamp", "x-api-nonce"}:
            return lost
        timestamp, nonce = headers.get("x-api-timestamp", ""), headers.get("x-api-nonce", "")
        path = unquote(request.scope.get("raw_path", b"").decode("latin-1") or request.url.path)
        query = request.scope.get("query_string", b"").decode("latin-1")
        if query:
            path = f"{path}?{query}"
        api_sign = f"POST\n{encode_path(path)}\n\nx-api-nonce:{nonce}\nx-api-timestamp:{timestamp}\n"
        if not hmac.compare_digest(headers.get("x-api-signature", ""), hmac_b64(api_sign, client_secret(app_id))):
            return lost
        if self.max_clock_skew_s is not None:
            try:
                skew = abs(time.time() - int(timestamp))
            except ValueError:
                return lost
            if skew > self.max_clock_skew_s:
                return lost
        parts = app_data.split(",")
        if len(parts) < 2 or parts[0] != self.acct_id:
            return 500, PASSPORT_FAILED
        if parts[1] not in self.users:
            return lost
        return None
