"""Event mode against the emulators: runs named by approval events, and the hourly runs beside them."""

from __future__ import annotations

from datetime import timedelta

from dk_emulators.dingtalk.seed import SeedClaim

from dingtalk_kingdee import pipeline
from dingtalk_kingdee.china_time import CHINA
from dingtalk_kingdee.dag_factory import plan_run
from dingtalk_kingdee.pipeline.call_budget import metered
from dingtalk_kingdee.scheme import EventsSpec, Scheme
from dingtalk_kingdee.staging import ReadSchedule

PARAMS = {"dry_run": False, "window_start": None, "window_end": None, "instance_ids": [], "replay_rejected": False}
GET = "processinstance/get"


def with_events(scheme: Scheme, **settings) -> Scheme:
    return scheme.model_copy(update={"events": EventsSpec(enabled=True, **settings)})


def payload(claim, kind: str = "finish") -> dict:
    instance = claim.instance
    return {"instance_id": claim.instance_id, "business_id": claim.business_id, "type": kind,
            "result": instance.get("result") or None, "event_id": f"ev-{claim.instance_id}-{kind}",
            "process_code": instance["process_code"], "finish_time": None}


def event_run(world, scheme: Scheme, payloads: list[dict], recent: list[dict] = ()) -> tuple[dict, dict]:
    """One event-triggered run of the whole pipeline, ``recent``: the scheme's asset events of the
    catch-up span; (report summary, metered DingTalk calls by API)."""
    world.runs += 1
    run = plan_run(scheme, f"asset_triggered__{world.runs}", PARAMS, None, world.now, "asset_triggered",
                   event_payloads=payloads, caught_up_payloads=recent)
    dingtalk, kingdee = world.hooks()
    summary = pipeline.run_all(scheme, dingtalk, kingdee, world.engine, run)
    return summary, {api: n for api, n in dingtalk.call_counts().items() if api != "gettoken"}


def payable(world) -> list:
    return [c for c in world.seed if c.truth.payable and c.truth.late_approval_at is None]


def test_an_event_run_pays_exactly_the_claims_its_events_name(world):
    scheme = with_events(world.scheme)
    chosen = payable(world)[:3]
    assert len(chosen) == 3
    summary, calls = event_run(world, scheme, [payload(c) for c in chosen])
    assert sorted(world.bills_by_business_id()) == sorted(c.business_id for c in chosen)
    assert calls == {GET: 3, "process/instance/comment/add": 3}  # no listing: one read per claim
    assert summary["events"] == {"trigger": "asset_triggered", "received": 3, "claims": 3, "withdrawn": 0,
                                 "caught_up": 0}
    assert summary["scope"] == "claims named by the run: 3"


def test_a_duplicated_or_redelivered_event_pays_once_and_costs_no_second_read(world):
    scheme = with_events(world.scheme)
    claim = payable(world)[0]
    _, calls = event_run(world, scheme, [payload(claim), payload(claim)])
    assert calls[GET] == 1
    _, again = event_run(world, scheme, [payload(claim)])
    assert metered(again) == 0  # staging holds it final and billed: nothing to read, nothing to post
    assert list(world.bills_by_business_id()) == [claim.business_id]
    world.assert_no_duplicates()


def test_a_refused_claim_gives_no_bill_and_a_withdrawn_one_is_not_even_read(world):
    scheme = with_events(world.scheme)
    refused = next(c for c in world.seed if c.truth.final_status == "COMPLETED" and c.truth.final_result == "refuse")
    withdrawn = next(c for c in world.seed if c.truth.final_status in ("TERMINATED", "CANCELED"))
    summary, calls = event_run(world, scheme, [payload(refused), payload(withdrawn, "terminate")])
    assert world.bills() == []
    assert calls == {GET: 1}
    assert summary["rejected_by_reason"] == {"not_approved": 1}
    assert summary["events"]["withdrawn"] == 1
    # The withdrawn claim is known to the schedule and never due: a later listing does not read it.
    schedule = ReadSchedule(world.engine, scheme.id)
    assert schedule.unknown_among([withdrawn.instance_id]) == []
    assert withdrawn.instance_id not in {d.instance_id for d in schedule.due(world.now + timedelta(days=400))}


def test_an_event_run_naming_only_withdrawn_claims_lists_nothing_and_reads_nothing(world):
    scheme = with_events(world.scheme)
    withdrawn = next(c for c in world.seed if c.truth.final_status in ("TERMINATED", "CANCELED"))
    summary, calls = event_run(world, scheme, [payload(withdrawn, "delete")])
    assert calls == {}
    assert summary["claims_seen"] == 0


def scheduled(world, scheme: Scheme, end, recent: list[dict] = ()) -> dict:
    """One hourly run of the whole pipeline ending at ``end``; ``recent``: the scheme's asset events of the
    catch-up span."""
    dingtalk, kingdee = world.hooks()
    run = plan_run(scheme, f"scheduled__{end.isoformat()}", PARAMS, end, end, "scheduled",
                   caught_up_payloads=recent)
    summary = pipeline.run_all(scheme, dingtalk, kingdee, world.engine, run)
    return {"extract": summary["steps"]["extract"], "calls": {a: n for a, n in dingtalk.call_counts().items()
                                                              if a != "gettoken"}, "summary": summary}


def test_the_hourly_run_in_event_mode_leaves_a_new_claims_first_read_to_its_event(world):
    scheme = with_events(world.scheme, listing_every_hours=1, safety_reread_hours=48)
    first_hour = world.now - timedelta(hours=30)
    scheduled(world, scheme, first_hour)  # the first run reads the history before it
    new = started_running(world, payable(world)[:3], first_hour + timedelta(minutes=20))
    hours = [scheduled(world, scheme, first_hour + timedelta(hours=h)) for h in (1, 2, 3)]
    assert hours[0]["extract"]["new"] >= 3  # with the seed's claims of that hour
    # Listed, but not read after an hour (nor two): the safety read waits 48 h.
    assert [h["calls"].get(GET, 0) for h in hours] == [0, 0, 0]
    schedule = ReadSchedule(world.engine, scheme.id)
    listed_at = first_hour + timedelta(hours=1)
    ids = {c.instance_id for c in new}
    assert {d.instance_id for d in schedule.due(listed_at + timedelta(hours=47))} & ids == set()
    assert {d.instance_id for d in schedule.due(listed_at + timedelta(hours=48))} >= ids

    # A finish event brings two of them: read once, they leave the schedule; only the third keeps its
    # safety read (its event was lost, say).
    for claim in new[:2]:
        world.dingtalk.set_outcome(claim.instance_id, "COMPLETED", "agree", finish_time=world.now)
    _, calls = event_run(world, scheme, [payload(c) for c in new[:2]])
    assert calls[GET] == 2
    due_later = {d.instance_id for d in schedule.due(listed_at + timedelta(hours=48))}
    assert due_later & ids == {new[2].instance_id}
    billed = set(world.bills_by_business_id())
    assert {c.business_id for c in new} & billed == {c.business_id for c in new[:2]}
    world.assert_no_duplicates()


def started_running(world, models: list, started) -> list:
    """Copies of ``models`` started at ``started`` and still running, added to the emulator."""
    copies = []
    for n, model in enumerate(models):
        instance = {**model.instance, "process_instance_id": f"ev-new-{n}", "business_id": f"2026112900000{n}",
                    "create_time": started.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S"),
                    "status": "RUNNING", "result": ""}
        instance.pop("finish_time", None)
        copies.append(SeedClaim(instance=instance, truth=model.truth))
    world.dingtalk.add_instances([c.instance for c in copies])
    return copies


def test_past_the_months_budget_an_event_run_reads_what_it_allows_and_the_rest_wait_due_at_once(world):
    scheme = with_events(world.scheme)
    scheme = scheme.model_copy(update={"source": scheme.source.model_copy(update={"monthly_call_budget": 1})})
    chosen = payable(world)[:3]
    summary, calls = event_run(world, scheme, [payload(c) for c in chosen])
    assert calls.get(GET) == 1
    assert summary["steps"]["extract"]["deferred_by_budget"] == 2
    due = {d.instance_id: d.reads for d in ReadSchedule(world.engine, scheme.id).due(world.now)}
    assert {c.instance_id for c in chosen[1:]} <= set(due) and all(due[c.instance_id] == 0 for c in chosen[1:])


def test_in_event_mode_the_nightly_sweep_lists_the_last_days_and_finds_a_claim_indexed_after_the_listing(world):
    scheme = with_events(world.scheme, listing_every_hours=6, sweep_window_days=3, sweep_every_days=7)
    night = (world.now - timedelta(days=2)).astimezone(CHINA).replace(hour=3, minute=0, second=0, microsecond=0)
    first = night - timedelta(hours=20)
    schedule = ReadSchedule(world.engine, scheme.id)
    assert scheduled(world, scheme, first)["extract"]["sweep_window"] is None  # the first run lists it all
    assert scheduled(world, scheme, first + timedelta(hours=6))["extract"]["listing"]
    # DingTalk indexes a claim started before the watermark only now: the watermark listing passed it.
    late = started_running(world, payable(world)[:1], first + timedelta(hours=1))
    assert schedule.unknown_among([late[0].instance_id]) == [late[0].instance_id]
    # And a claim started after the watermark: not missed, only not listed yet.
    world.dingtalk.add_instances([{**late[0].instance, "process_instance_id": "ev-recent",
                                   "business_id": "202611290009",
                                   "create_time": (night - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")}])

    swept = scheduled(world, scheme, night)
    assert swept["extract"]["sweep_window"] == "recent"
    assert swept["extract"]["listing_from"] == (night - timedelta(days=3)).isoformat()
    # The missed claim is read at once; the recent one waits for its event (or its safety read).
    assert swept["extract"]["found_by_sweep"] == 1 and swept["calls"][GET] == 1
    assert schedule.unknown_among([late[0].instance_id, "ev-recent"]) == []
    assert "ev-recent" not in {d.instance_id for d in schedule.due(night + timedelta(hours=47))}
    mark = schedule.watermark()
    assert (mark.swept_at, mark.recent_swept_at, mark.listed_until) == (first, night, night)

    assert scheduled(world, scheme, night + timedelta(hours=1))["extract"]["sweep"] is False  # once a night
    # The next night's 03:00 run did not happen: the 09:00 run makes it up, short again.
    made_up = scheduled(world, scheme, night + timedelta(days=1, hours=6))
    assert made_up["extract"]["sweep_window"] == "recent"
    # A week after the last whole sweep, the night's sweep is the whole look-back.
    whole = scheduled(world, scheme, first + timedelta(days=7))
    assert whole["extract"]["sweep_window"] == "whole"
    assert whole["extract"]["listing_from"] == (first + timedelta(days=7) - timedelta(days=30)).isoformat()
    mark = schedule.watermark()
    assert mark.swept_at == mark.recent_swept_at == first + timedelta(days=7)


# An asset event no run took (Airflow 3.3.2 leaves out an event recorded while it creates the run for the
# one before): every run takes the scheme's recent asset events along and reads the claims not final.

def approved_now(world, models: list, started) -> list:
    """Copies of ``models`` started at ``started`` and approved since, added to the emulator."""
    claims = started_running(world, models, started)
    for claim in claims:
        world.dingtalk.set_outcome(claim.instance_id, "COMPLETED", "agree", finish_time=world.now)
    return claims


def test_an_event_no_run_took_is_billed_by_the_next_hourly_run_and_the_others_cost_no_call(world):
    scheme = with_events(world.scheme)
    first_hour = world.now - timedelta(hours=3)
    scheduled(world, scheme, first_hour)  # the first run reads the history before it
    billed_by_its_run, orphan = approved_now(world, payable(world)[:2], first_hour + timedelta(minutes=10))
    _, calls = event_run(world, scheme, [payload(billed_by_its_run)])
    assert calls[GET] == 1
    # The orphan's event was recorded, but no run took it: the next hourly run takes both recent events.
    hour = scheduled(world, scheme, first_hour + timedelta(hours=1),
                     recent=[payload(billed_by_its_run), payload(orphan), payload(orphan)])
    assert hour["calls"] == {GET: 1, "process/instance/comment/add": 1}  # no listing due; one read
    assert hour["extract"]["caught_up"] == 1 and hour["extract"]["caught_up_final"] == 1
    assert hour["summary"]["events"]["caught_up"] == 1
    bills = world.bills_by_business_id()
    assert len(bills[billed_by_its_run.business_id]) == len(bills[orphan.business_id]) == 1
    # Read final, it leaves the read schedule: no safety read later.
    due = {d.instance_id for d in ReadSchedule(world.engine, scheme.id).due(world.now + timedelta(days=30))}
    assert orphan.instance_id not in due
    again = scheduled(world, scheme, first_hour + timedelta(hours=2), recent=[payload(orphan)])
    assert metered(again["calls"]) == 0
    world.assert_no_duplicates()


def test_an_event_run_takes_along_the_claims_of_recent_events_no_run_took(world):
    scheme = with_events(world.scheme)
    earlier, orphan, own = payable(world)[:3]
    withdrawn = next(c for c in world.seed if c.truth.final_status in ("TERMINATED", "CANCELED"))
    event_run(world, scheme, [payload(earlier)])
    recent = [payload(earlier), payload(orphan), payload(own), payload(withdrawn, "terminate")]
    summary, calls = event_run(world, scheme, [payload(own)], recent=recent)
    assert calls[GET] == 2  # its own claim and the orphan; the earlier one is final in staging
    assert summary["events"] == {"trigger": "asset_triggered", "received": 1, "claims": 4, "withdrawn": 1,
                                 "caught_up": 1}
    assert sorted(world.bills_by_business_id()) == sorted(c.business_id for c in (earlier, orphan, own))
    schedule = ReadSchedule(world.engine, scheme.id)
    assert schedule.unknown_among([withdrawn.instance_id]) == []  # closed, as its own run would have
    world.assert_no_duplicates()
