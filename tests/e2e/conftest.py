"""A whole world for end-to-end runs: both emulators over real HTTP, staging on a real database."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dk_emulators.dingtalk import DingTalkEmulator
from dk_emulators.dingtalk.seed import SeedClaim, SeedConfig, generate_claims
from dk_emulators.kingdee import KingdeeEmulator

from dingtalk_kingdee import pipeline, staging
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook, reset_shared_state
from dingtalk_kingdee.hooks.kingdee import KingdeeHook
from dingtalk_kingdee.scheme import Scheme, load_scheme

ROOT = Path(__file__).resolve().parents[2]
SCHEME_FILE = ROOT / "include" / "schemes" / "expense_to_paybill.yaml"
BASEDATA = ROOT / "include" / "demo" / "kingdee_basedata.json"
# The emulator enforces this limit and the hook paces itself to it; higher than DingTalk's real 20/s
# only to keep the suite short.
TEST_QPS = 200


@dataclass
class World:
    dingtalk: DingTalkEmulator
    kingdee: KingdeeEmulator
    seed: list[SeedClaim]
    scheme: Scheme
    staging_url: str
    now: datetime
    runs: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def engine(self):
        return staging.connect(self.staging_url)

    @property
    def staged(self) -> staging.SchemeStaging:
        """The scheme's staging, to look at what the runs left there."""
        return staging.SchemeStaging(self.engine, self.scheme.id)

    def hooks(self) -> tuple[DingTalkHook, KingdeeHook]:
        return DingTalkHook("dingtalk_default"), KingdeeHook("kingdee_default")

    def make_run(self, **kwargs) -> pipeline.Run:
        self.runs += 1
        kwargs.setdefault("window_start", self.now - timedelta(days=self.scheme.source.lookback_days))
        kwargs.setdefault("window_end", self.now)
        return pipeline.Run(run_id=kwargs.pop("run_id", f"test_run_{self.runs}"), **kwargs)

    def run(self, scheme: Scheme | None = None, alert=None, **kwargs) -> dict:
        dingtalk, kingdee = self.hooks()
        return pipeline.run_all(scheme or self.scheme, dingtalk, kingdee, self.engine, self.make_run(**kwargs),
                                alert=alert)

    def bills(self) -> list[dict]:
        return self.kingdee.bills("AP_PAYBILL")

    def bills_by_business_id(self) -> dict[str, list[dict]]:
        grouped: dict[str, list[dict]] = {}
        for bill in self.bills():
            grouped.setdefault(str(bill["FTHIRDBILLNO"]), []).append(bill)
        return grouped

    def approve_late(self) -> list[SeedClaim]:
        late = [c for c in self.seed if c.truth.late_approval_at is not None]
        for claim in late:
            self.dingtalk.set_outcome(claim.instance["process_instance_id"], "COMPLETED", "agree",
                                      finish_time=datetime.now(UTC))
        return late

    def assert_no_duplicates(self) -> None:
        counts = Counter(str(b["FTHIRDBILLNO"]) for b in self.bills())
        doubled = {k: n for k, n in counts.items() if n > 1}
        assert doubled == {}, f"claims paid more than once: {doubled}"


@pytest.fixture
def world_factory(monkeypatch, staging_url):
    """Build a world with ``count`` generated claims started over the three days before now."""
    started: list = []

    def build(count: int = 60, seed: int = 7, **seed_options) -> World:
        reset_shared_state()
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
        claims = generate_claims(SeedConfig(count=count, seed=seed, start=now - timedelta(days=3), end=now,
                                            **seed_options))
        dingtalk = DingTalkEmulator(instances=[c.instance for c in claims], qps=TEST_QPS)
        kingdee = KingdeeEmulator(basedata=BASEDATA, db_path=":memory:")
        started.extend([dingtalk, kingdee])
        dingtalk.start()
        kingdee.start()
        monkeypatch.setenv("AIRFLOW_CONN_DINGTALK_DEFAULT", json.dumps(dingtalk.connection()))
        monkeypatch.setenv("AIRFLOW_CONN_KINGDEE_DEFAULT", json.dumps(kingdee.connection()))
        monkeypatch.setenv("STAGING_DATABASE_URL", staging_url)
        return World(dingtalk=dingtalk, kingdee=kingdee, seed=claims, scheme=load_scheme(SCHEME_FILE),
                      staging_url=staging_url, now=now)

    yield build
    for emulator in started:
        emulator.stop()
    reset_shared_state()
    staging.get_engine.cache_clear()


@pytest.fixture
def world(world_factory) -> World:
    return world_factory()
