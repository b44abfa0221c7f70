"""What the report and the alert say about a claim's problem: the code's rank and the fix named."""

from __future__ import annotations

from pathlib import Path

from dingtalk_kingdee.pipeline.problems import alert_records, bill_currency, claim_problems, value_map_fix
from dingtalk_kingdee.scheme import ValueMapSpec, load_scheme
from dingtalk_kingdee.staging import BillState, ProblemBill, RejectedClaim, Summary

SCHEME_FILE = Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml"
SCHEME = load_scheme(SCHEME_FILE)
CSV = SCHEME_FILE.parent / "expense_to_paybill"


def miss(value: str, map_name: str = "employees", file: str = "employees.csv") -> str:
    return (f'claim 2024: FCONTACTUNIT from instance.originator_userid: "{value}" is not in value map '
            f"{map_name} ({file}); add it there")


def test_a_value_map_gap_names_the_csv_file_and_the_line_to_add():
    assert value_map_fix(SCHEME, miss("newhire9001")) == (
        f"add the line `newhire9001,<value>` to {CSV / 'employees.csv'}; the next run retries")
    # A key a CSV line must quote, and a key the reason had to cut short.
    assert f'the line `"""a, b"" c",<value>` to {CSV / "employees.csv"}' in value_map_fix(SCHEME, miss('"a, b" c'))
    assert "whole value quoted (shortened)" in value_map_fix(SCHEME, miss("x" * 60 + "…"))
    assert value_map_fix(SCHEME, "status TERMINATED is final but not approved") is None


def test_an_inline_value_map_gap_names_the_scheme_file():
    inline = SCHEME.model_copy(update={"value_maps": {**SCHEME.value_maps, "kinds": ValueMapSpec(values={"a": "1"})}})
    assert value_map_fix(inline, miss("b", "kinds", "inline")) == (
        'add `b: <value>` under value_maps.kinds.values in expense_to_paybill.yaml; the next run retries')


def test_problems_come_actionable_first_routine_last_and_alert_once_per_claim_and_code():
    rejected = [RejectedClaim("i1", "b1", "not_approved", "refused"),
                RejectedClaim("i2", "b2", "amount_missing", "row 1 amount is empty"),
                RejectedClaim("i3", "b3", "unmapped_employee", miss("u3")),
                RejectedClaim("i3", "b3", "unmapped_employee", miss("u3", "employee_names", "employee_names.csv"))]
    bills = [ProblemBill("i4", "b4", BillState.FAILED, 0, "FCONTACTUNIT EMP9 does not exist")]
    found = Summary(0, {}, 0, 0, {}, {}, {}, {}, rejected_claims=rejected, problem_bills=bills)
    codes = [p.code for p in claim_problems(SCHEME, found)]
    assert codes == ["kingdee_refused", "unmapped_employee", "unmapped_employee", "amount_missing", "not_approved"]
    records = alert_records(claim_problems(SCHEME, found))
    assert sorted((r.instance_id, r.reason_code) for r in records) == [("i3", "unmapped_employee"),
                                                                     ("i4", "kingdee_refused")]
    assert bill_currency(SCHEME) == "CNY"
