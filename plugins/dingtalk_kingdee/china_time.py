"""China time: the zone DingTalk's users, its listing windows and its monthly quota live in."""

from __future__ import annotations

from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")
