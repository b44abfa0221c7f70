"""The DingTalk monthly quota and call budget across whole runs: comments, the report, the alert."""

from __future__ import annotations

from dingtalk_kingdee import pipeline


def test_quota_spent_during_comments_leaves_them_pending_and_a_later_month_posts_each_once(world):
    dingtalk, kingdee = world.hooks()
    run = world.make_run(run_id="run_1")
    pipeline.extract(world.scheme, dingtalk, world.engine, run)
    pipeline.transform(world.scheme, world.engine, run)
    pipeline.load(world.scheme, kingdee, world.engine, run)
    loaded = len(world.bills())
    assert loaded > 5
    world.dingtalk.monthly_quota = world.dingtalk.usage()["used"] + 3  # three comments, then 90020

    counts = pipeline.write_back(world.scheme, dingtalk, world.engine, run)
    assert counts["quota_exhausted"] is True
    assert counts["comments_sent"] == 3 and counts["comments_failed"] == 0
    assert len(world.dingtalk.comments) == 3
    sent_calls = counts["dingtalk_calls"]["process/instance/comment/add"]
    assert sent_calls <= 3 + 8  # the refusal stops the hook: at most one round of workers in flight
    summary = pipeline.report(world.scheme, world.engine, run, {"write_back": counts}, alert=lambda t, m: True)
    calls = summary["dingtalk_calls"]
    assert calls["state"] == "quota_exhausted" and calls["alert"] == "quota_exhausted"
    assert calls["run"]["process/instance/comment/add"] == sent_calls

    # The next run of the month: one probe (the listing) refused, nothing else sent.
    dingtalk, kingdee = world.hooks()
    again = pipeline.run_all(world.scheme, dingtalk, kingdee, world.engine, world.make_run(run_id="run_2"))
    assert again["dingtalk_calls"]["state"] == "quota_exhausted" and again["dingtalk_calls"]["alert"] is None
    assert {k: v for k, v in dingtalk.call_counts().items() if k != "gettoken"} == {"processinstance/listids": 1}

    world.dingtalk.monthly_quota = None  # the quota is back (a new month, or a pack bought)
    dingtalk, kingdee = world.hooks()
    pipeline.run_all(world.scheme, dingtalk, kingdee, world.engine, world.make_run(run_id="run_3"))
    posted = [c["process_instance_id"] for c in world.dingtalk.comments]
    assert len(posted) == len(set(posted)) == loaded
