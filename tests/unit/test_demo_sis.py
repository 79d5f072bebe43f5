"""The demo district and the demo SIS, driven over real HTTP with `requests`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests

from rostersync.local.demo_data import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DemoDistrict,
    generate_district,
)
from rostersync.local.demo_sis import DemoSis, parse_filter

TODAY = date(2026, 9, 1)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def district() -> DemoDistrict:
    return generate_district(today=TODAY)


@pytest.fixture(scope="module")
def sis(district: DemoDistrict) -> Iterator[DemoSis]:
    with DemoSis(district) as server:
        yield server


@pytest.fixture()
def fresh_sis() -> Iterator[DemoSis]:
    """A server over its own district, for tests that change data or settings.

    Dated from the real today so that every generated stamp is in the past and
    only touched records pass an incremental filter.
    """
    with DemoSis(generate_district(), page_cap=50) as server:
        yield server


TIMEOUT = 5


def post(url: str, **kwargs: Any) -> requests.Response:
    return requests.post(url, timeout=TIMEOUT, **kwargs)


def get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=TIMEOUT, **kwargs)


def token_for(server: DemoSis) -> str:
    answer = post(
        server.token_url,
        data={"grant_type": "client_credentials"},
        auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def session_for(server: DemoSis) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token_for(server)}"
    return session


@pytest.fixture(scope="module")
def http(sis: DemoSis) -> Iterator[requests.Session]:
    with session_for(sis) as session:
        yield session


def fetch_all(session: requests.Session, url: str, envelope: str, **params: str) -> list[dict]:
    """Follow Link rel="next" to the end, as a connector does."""
    records: list[dict] = []
    next_url: str | None = url
    query: dict[str, str] | None = params
    while next_url:
        answer = session.get(next_url, params=query, timeout=5)
        assert answer.status_code == 200, answer.text
        records.extend(answer.json()[envelope])
        next_url = answer.links.get("next", {}).get("url")
        query = None  # the Link URL carries every parameter
    return records


# -- token flow ---------------------------------------------------------------


def test_token_with_basic_auth(sis: DemoSis) -> None:
    answer = post(
        sis.token_url, data={"grant_type": "client_credentials"}, auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    )

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"]


def test_token_with_form_fields_and_scope(sis: DemoSis) -> None:
    scope = "https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly"
    form = {
        "grant_type": "client_credentials",
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "scope": scope,
    }

    answer = post(sis.token_url, data=form)

    assert answer.status_code == 200
    assert answer.json()["scope"] == scope


@pytest.mark.parametrize(
    ("auth", "form"),
    [
        ((DEMO_CLIENT_ID, "wrong"), {}),
        (("someone-else", DEMO_CLIENT_SECRET), {}),
        (None, {"client_id": DEMO_CLIENT_ID, "client_secret": "wrong"}),
        (None, {}),
    ],
)
def test_token_refuses_wrong_credentials(sis: DemoSis, auth: tuple[str, str] | None, form: dict) -> None:
    answer = post(sis.token_url, data={"grant_type": "client_credentials", **form}, auth=auth)

    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_client"}


def test_token_needs_client_credentials_grant(sis: DemoSis) -> None:
    answer = post(sis.token_url, data={"grant_type": "password"}, auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET))

    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic ZGVtbzpkZW1v"])
def test_api_answers_401_without_a_valid_token(sis: DemoSis, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    for url in (sis.v1p1_url, sis.v1p2_url):
        answer = get(f"{url}/users", headers=headers)

        assert answer.status_code == 401
        assert answer.json()["imsx_codeMajor"] == "failure"
        assert "Bearer" in answer.headers["WWW-Authenticate"]


def test_expired_tokens_are_refused(fresh_sis: DemoSis) -> None:
    session = session_for(fresh_sis)
    assert session.get(f"{fresh_sis.v1p1_url}/orgs").status_code == 200

    fresh_sis.expire_tokens()

    assert session.get(f"{fresh_sis.v1p1_url}/orgs").status_code == 401


# -- paging -------------------------------------------------------------------


def test_default_page_has_100_records_and_the_total(
    sis: DemoSis, http: requests.Session, district: DemoDistrict
) -> None:
    answer = http.get(f"{sis.v1p1_url}/users")

    assert answer.status_code == 200
    assert len(answer.json()["users"]) == 100
    assert answer.headers["X-Total-Count"] == str(len(district.users))
    assert answer.links["next"]["url"].endswith("limit=100&offset=100")
    assert "last" in answer.links


def test_following_next_links_yields_every_record_once(
    sis: DemoSis, http: requests.Session, district: DemoDistrict
) -> None:
    records = fetch_all(http, f"{sis.v1p1_url}/enrollments", "enrollments", limit="70")

    assert [record["sourcedId"] for record in records] == [
        record["sourcedId"] for record in district.enrollments
    ]


def test_last_page_has_no_next_link(sis: DemoSis, http: requests.Session, district: DemoDistrict) -> None:
    total = len(district.classes)

    answer = http.get(f"{sis.v1p1_url}/classes", params={"limit": 10, "offset": total - 3})

    assert len(answer.json()["classes"]) == 3
    assert "next" not in answer.links
    assert answer.links["last"]["url"].endswith(f"offset={(total - 1) // 10 * 10}")


def test_offset_past_the_end_answers_an_empty_page(sis: DemoSis, http: requests.Session) -> None:
    answer = http.get(f"{sis.v1p1_url}/orgs", params={"offset": 1000})

    assert answer.status_code == 200
    assert answer.json() == {"orgs": []}
    assert answer.headers["X-Total-Count"] == "3"


def test_limit_is_capped_at_page_cap(fresh_sis: DemoSis) -> None:
    session = session_for(fresh_sis)

    answer = session.get(f"{fresh_sis.v1p1_url}/users", params={"limit": 1000})

    assert len(answer.json()["users"]) == 50  # the fixture's page_cap
    assert answer.links["next"]["url"].endswith("limit=50&offset=50")


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "ten"}, {"offset": "-1"}])
def test_bad_paging_parameters_answer_400(sis: DemoSis, http: requests.Session, params: dict) -> None:
    answer = http.get(f"{sis.v1p1_url}/users", params=params)

    assert answer.status_code == 400
    assert answer.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == (
        "invalid_selection_field"
    )


# -- filters ------------------------------------------------------------------


def test_filter_on_date_last_modified(sis: DemoSis, http: requests.Session, district: DemoDistrict) -> None:
    cutoff = "2026-08-25T00:00:00Z"
    expected = [
        user["sourcedId"] for user in district.users if parse_z(user["dateLastModified"]) > parse_z(cutoff)
    ]

    records = fetch_all(http, f"{sis.v1p1_url}/users", "users", filter=f"dateLastModified>'{cutoff}'")

    assert 0 < len(records) < len(district.users)
    assert [record["sourcedId"] for record in records] == expected


def test_filter_greater_or_equal_includes_the_boundary(
    sis: DemoSis, http: requests.Session, district: DemoDistrict
) -> None:
    stamp = district.find("users", "u-tch-multi")["dateLastModified"]

    strict = fetch_all(http, f"{sis.v1p1_url}/users", "users", filter=f"dateLastModified>'{stamp}'")
    inclusive = fetch_all(http, f"{sis.v1p1_url}/users", "users", filter=f"dateLastModified>='{stamp}'")

    assert "u-tch-multi" not in {record["sourcedId"] for record in strict}
    assert "u-tch-multi" in {record["sourcedId"] for record in inclusive}


def test_filter_sent_url_encoded_by_hand(sis: DemoSis, http: requests.Session) -> None:
    raw = "filter=dateLastModified%3E%272000-01-01T00%3A00%3A00Z%27%20AND%20status%3D%27tobedeleted%27"

    answer = http.get(f"{sis.v1p1_url}/users?{raw}")

    assert answer.status_code == 200
    assert [user["sourcedId"] for user in answer.json()["users"]] == ["u-stu-left"]
    assert "filter=dateLastModified%3E" in answer.links["last"]["url"]


def test_touched_record_is_picked_up_by_an_incremental_filter(fresh_sis: DemoSis) -> None:
    session = session_for(fresh_sis)
    since = datetime.now(UTC) - timedelta(seconds=1)
    query = {"filter": f"dateLastModified>'{since.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z'"}
    assert session.get(f"{fresh_sis.v1p1_url}/users", params=query).json()["users"] == []

    fresh_sis.district.touch("users", "stu-1-00003", givenName="Renamed")

    changed = session.get(f"{fresh_sis.v1p1_url}/users", params=query).json()["users"]
    assert [(user["sourcedId"], user["givenName"]) for user in changed] == [("stu-1-00003", "Renamed")]


@pytest.mark.parametrize(
    "text",
    [
        "foo='x'",
        "dateLastModified>2026-01-01",
        "dateLastModified>'yesterday'",
        "dateLastModified>'2026-01-01T00:00:00'",  # no time zone
        "status='active' AND role='student' OR role='teacher'",
        "status='active' XOR role='student'",
    ],
)
def test_unsupported_filters_answer_400(sis: DemoSis, http: requests.Session, text: str) -> None:
    answer = http.get(f"{sis.v1p1_url}/users", params={"filter": text})

    assert answer.status_code == 400
    body = answer.json()
    assert body["imsx_codeMajor"] == "failure"
    assert (
        body["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == "invalid_filter_field"
    )


def test_a_server_without_filters_refuses_every_filter(district: DemoDistrict) -> None:
    with DemoSis(district, filters=False) as server:
        answer = session_for(server).get(
            f"{server.v1p1_url}/users", params={"filter": "dateLastModified>'2026-01-01T00:00:00Z'"}
        )

    assert answer.status_code == 400


def test_parse_filter_reads_logic_and_predicates() -> None:
    logic, predicates = parse_filter("role='teacher' OR role = 'aide'")

    assert logic == "OR"
    assert [(p.name, p.op, p.value) for p in predicates] == [("role", "=", "teacher"), ("role", "=", "aide")]


# -- endpoints and envelopes --------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "envelope", "selects"),
    [
        ("schools", "orgs", lambda r: r["type"] == "school"),
        ("terms", "academicSessions", lambda r: r["type"] == "term"),
        ("students", "users", lambda r: r["role"] == "student"),
        ("teachers", "users", lambda r: r["role"] == "teacher"),
    ],
)
def test_variant_endpoints_select_and_use_spec_envelopes(
    sis: DemoSis,
    http: requests.Session,
    district: DemoDistrict,
    endpoint: str,
    envelope: str,
    selects: object,
) -> None:
    entity = {"orgs": "orgs", "academicSessions": "academicSessions", "users": "users"}[envelope]
    expected = [r["sourcedId"] for r in district.records(entity) if selects(r)]  # type: ignore[operator]

    records = fetch_all(http, f"{sis.v1p1_url}/{endpoint}", envelope, limit="1000")

    assert [r["sourcedId"] for r in records] == expected


def test_vendor_envelopes_use_the_endpoint_name(district: DemoDistrict) -> None:
    with DemoSis(district, vendor_envelopes=True) as server:
        session = session_for(server)
        students = session.get(f"{server.v1p2_url}/students").json()
        terms = session.get(f"{server.v1p1_url}/terms").json()
        users = session.get(f"{server.v1p1_url}/users").json()

    assert set(students) == {"students"}
    assert set(terms) == {"terms"}
    assert set(users) == {"users"}


def test_single_records(sis: DemoSis, http: requests.Session) -> None:
    assert http.get(f"{sis.v1p1_url}/users/u-tch-multi").json()["user"]["role"] == "teacher"
    assert http.get(f"{sis.v1p1_url}/classes/cls-future").json()["class"]["title"] == "Robotics"
    assert (
        http.get(f"{sis.v1p1_url}/schools/org-school-2").json()["org"]["name"] == "Washington Middle School"
    )
    assert http.get(f"{sis.v1p1_url}/terms/as-fall").json()["academicSession"]["type"] == "term"
    assert (
        http.get(f"{sis.v1p2_url}/enrollments/enr-cls-future-u-tch-multi").json()["enrollment"]["primary"]
        is True
    )


@pytest.mark.parametrize(
    "path",
    ["users/nobody", "students/u-tch-multi", "schools/org-district", "terms/as-year", "courses", "users/a/b"],
)
def test_unknown_records_and_endpoints_answer_404(sis: DemoSis, http: requests.Session, path: str) -> None:
    answer = http.get(f"{sis.v1p1_url}/{path}")

    assert answer.status_code == 404
    assert answer.json()["imsx_codeMajor"] == "failure"


# -- 1.1 and 1.2 shapes -------------------------------------------------------


def test_v1p1_shapes_keep_strings_and_role(sis: DemoSis, http: requests.Session) -> None:
    user = http.get(f"{sis.v1p1_url}/users/u-stu-disabled").json()["user"]
    enrollment = http.get(f"{sis.v1p1_url}/enrollments/enr-cls-alg1-p1-u-tch-multi").json()["enrollment"]

    assert user["enabledUser"] == "false"
    assert user["role"] == "student"
    assert user["orgs"][0] == {
        "href": "/ims/oneroster/v1p1/orgs/org-school-1",
        "sourcedId": "org-school-1",
        "type": "org",
    }
    assert enrollment["primary"] == "true"


def test_v1p2_users_have_roles_and_json_booleans(sis: DemoSis, http: requests.Session) -> None:
    users = {u["sourcedId"]: u for u in fetch_all(http, f"{sis.v1p2_url}/users", "users", limit="1000")}

    assert all("role" not in user and "orgs" not in user for user in users.values())
    assert all(isinstance(user["enabledUser"], bool) for user in users.values())
    assert users["u-stu-disabled"]["enabledUser"] is False
    assert users["u-tch-multi"]["roles"] == [
        {
            "roleType": "primary",
            "role": "teacher",
            "org": {
                "href": "/ims/oneroster/rostering/v1p2/orgs/org-school-1",
                "sourcedId": "org-school-1",
                "type": "org",
            },
        }
    ]
    two_schools = users["u-stu-twoschools"]["roles"]
    assert [(r["roleType"], r["org"]["sourcedId"]) for r in two_schools] == [
        ("primary", "org-school-1"),
        ("secondary", "org-school-2"),
    ]
    assert users["u-admin-district"]["roles"][0]["role"] == "districtAdministrator"
    assert users["u-admin-principal"]["roles"][0]["role"] == "principal"
    assert users["u-aide-teaching"]["roles"][0]["role"] == "aide"


def test_v1p2_enrollments_and_sessions(sis: DemoSis, http: requests.Session) -> None:
    enrollments = http.get(f"{sis.v1p2_url}/enrollments", params={"limit": 500}).json()["enrollments"]
    session = http.get(f"{sis.v1p2_url}/academicSessions/as-fall").json()["academicSession"]

    assert {type(e["primary"]) for e in enrollments} == {bool}
    assert all(e["class"]["href"].startswith("/ims/oneroster/rostering/v1p2/classes/") for e in enrollments)
    assert session["org"]["sourcedId"] == "org-district"
    assert session["parent"]["href"] == "/ims/oneroster/rostering/v1p2/academicSessions/as-year"


def test_v1p2_conversion_leaves_the_stored_records_alone(
    sis: DemoSis, http: requests.Session, district: DemoDistrict
) -> None:
    http.get(f"{sis.v1p2_url}/users", params={"limit": 1000})

    stored = district.find("users", "u-tch-multi")
    assert stored["role"] == "teacher"
    assert stored["enabledUser"] == "true"
    assert stored["orgs"][0]["href"].startswith("/ims/oneroster/v1p1/")


# -- faults, log, latency -----------------------------------------------------


def test_fail_next_injects_faults_with_retry_after(fresh_sis: DemoSis) -> None:
    session = session_for(fresh_sis)
    fresh_sis.fail_next(503, count=2, retry_after=1.5)

    first = session.get(f"{fresh_sis.v1p1_url}/orgs")
    token_in_between = post(
        fresh_sis.token_url,
        data={"grant_type": "client_credentials"},
        auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
    )
    second = session.get(f"{fresh_sis.v1p2_url}/orgs")
    third = session.get(f"{fresh_sis.v1p1_url}/orgs")

    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Retry-After"] == "1.5"
    assert token_in_between.status_code == 200


def test_fail_next_429_without_retry_after(fresh_sis: DemoSis) -> None:
    session = session_for(fresh_sis)
    fresh_sis.fail_next(429)

    answer = session.get(f"{fresh_sis.v1p1_url}/users")

    assert answer.status_code == 429
    assert "Retry-After" not in answer.headers
    assert (
        answer.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == "server_busy"
    )


def test_requests_are_logged_with_decoded_query(fresh_sis: DemoSis) -> None:
    session = session_for(fresh_sis)
    fresh_sis.requests.clear()

    session.get(f"{fresh_sis.v1p1_url}/users", params={"limit": "5", "filter": "status='active'"})

    assert list(fresh_sis.requests) == [
        ("GET", "/ims/oneroster/v1p1/users", {"limit": "5", "filter": "status='active'"})
    ]
    assert len(fresh_sis.requests) == 1


def test_latency_is_added_per_request(district: DemoDistrict) -> None:
    with DemoSis(district, latency_s=0.05) as server:
        started = time.monotonic()
        post(server.token_url, data={"grant_type": "client_credentials"}, auth=(DEMO_CLIENT_ID, "x"))
        assert time.monotonic() - started >= 0.05


def test_replacing_the_district_serves_the_new_data(fresh_sis: DemoSis) -> None:
    session = session_for(fresh_sis)
    before = session.get(f"{fresh_sis.v1p1_url}/students", params={"limit": 1}).headers["X-Total-Count"]

    fresh_sis.district = generate_district(today=TODAY, students_per_school=20)

    after = session.get(f"{fresh_sis.v1p1_url}/students", params={"limit": 1}).headers["X-Total-Count"]
    assert int(after) < int(before)


def test_url_needs_a_started_server(district: DemoDistrict) -> None:
    server = DemoSis(district)

    with pytest.raises(RuntimeError):
        _ = server.url


# -- the generated district ---------------------------------------------------


def parse_z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def by_id(records: list[dict]) -> dict[str, dict]:
    return {record["sourcedId"]: record for record in records}


def enrollments_of(district: DemoDistrict, class_id: str) -> dict[str, dict]:
    return {e["user"]["sourcedId"]: e for e in district.enrollments if e["class"]["sourcedId"] == class_id}


def test_orgs_are_one_district_and_two_schools(district: DemoDistrict) -> None:
    orgs = by_id(district.orgs)

    assert sorted((sid, org["type"]) for sid, org in orgs.items()) == [
        ("org-district", "district"),
        ("org-school-1", "school"),
        ("org-school-2", "school"),
    ]
    assert orgs["org-school-1"]["parent"]["sourcedId"] == "org-district"
    assert [child["sourcedId"] for child in orgs["org-district"]["children"]] == [
        "org-school-1",
        "org-school-2",
    ]


def test_terms_follow_today(district: DemoDistrict) -> None:
    sessions = by_id(district.academic_sessions)
    fall, spring, year = sessions["as-fall"], sessions["as-spring"], sessions["as-year"]

    assert date.fromisoformat(fall["startDate"]) <= TODAY <= date.fromisoformat(fall["endDate"])
    assert spring["startDate"] == (TODAY + timedelta(days=40)).isoformat()
    assert (year["startDate"], year["endDate"]) == (fall["startDate"], spring["endDate"])
    assert (fall["title"], spring["title"], year["title"]) == ("Fall 2026", "Spring 2027", "2026-2027")
    assert {s["type"] for s in sessions.values()} == {"schoolYear", "term", "gradingPeriod"}


def test_duplicate_titles_across_periods_and_terms(district: DemoDistrict) -> None:
    classes = by_id(district.classes)
    algebra = [classes[sid] for sid in ("cls-alg1-p1", "cls-alg1-p3", "cls-alg1-spring")]

    assert {c["title"] for c in algebra} == {"Algebra I"}
    assert {c["school"]["sourcedId"] for c in algebra} == {"org-school-1"}
    assert [c["periods"] for c in algebra] == [["1"], ["3"], ["1"]]
    assert [c["terms"][0]["sourcedId"] for c in algebra] == ["as-fall", "as-fall", "as-spring"]


def test_future_class_starts_in_40_days(district: DemoDistrict) -> None:
    start = (TODAY + timedelta(days=40)).isoformat()
    future = district.find("classes", "cls-future")
    spring = district.find("academicSessions", future["terms"][0]["sourcedId"])

    assert spring["startDate"] == start
    assert {e["beginDate"] for e in enrollments_of(district, "cls-future").values()} == {start}


def test_users_without_email(district: DemoDistrict) -> None:
    assert district.find("users", "u-stu-noemail")["email"] == ""
    assert district.find("users", "u-tch-noemail")["email"] is None
    assert district.find("users", "u-tch-noemail")["role"] == "teacher"
    assert enrollments_of(district, "cls-art-noemail")["u-tch-noemail"]["role"] == "teacher"


def test_two_users_share_an_email_up_to_case(district: DemoDistrict) -> None:
    first, second = district.find("users", "u-dup-a"), district.find("users", "u-dup-b")

    assert first["email"] != second["email"]
    assert first["email"].lower() == second["email"].lower() == "pat.lee@lincoln.k12.us"
    assert first["sourcedId"] < second["sourcedId"]
    emails = [u["email"].lower() for u in district.users if u["email"]]
    assert emails.count("pat.lee@lincoln.k12.us") == 2
    assert len(emails) - len(set(emails)) == 1  # the only duplicate in the district


def test_aides(district: DemoDistrict) -> None:
    teaching, idle = district.find("users", "u-aide-teaching"), district.find("users", "u-aide-noclass")

    assert teaching["role"] == idle["role"] == "aide"
    assert enrollments_of(district, "cls-aide-study")["u-aide-teaching"]["role"] == "teacher"
    assert not [e for e in district.enrollments if e["user"]["sourcedId"] == "u-aide-noclass"]


def test_administrators_parents_guardians_relatives(district: DemoDistrict) -> None:
    roles = {sid: district.find("users", sid)["role"] for sid in ("u-admin-district", "u-admin-principal")}
    assert roles == {"u-admin-district": "administrator", "u-admin-principal": "administrator"}
    assert district.find("users", "u-admin-district")["orgs"][0]["sourcedId"] == "org-district"
    for sid, role in (("u-parent", "parent"), ("u-guardian", "guardian"), ("u-relative", "relative")):
        user = district.find("users", sid)
        assert user["role"] == role
        assert user["agents"][0]["sourcedId"] == "stu-1-00001"


def test_usernames(district: DemoDistrict) -> None:
    assert district.find("users", "u-tch-multi")["username"] == "JSmith@Lincoln.K12.US"
    assert district.find("users", "u-stu-nouser")["username"] == ""
    collide = [district.find("users", sid)["username"] for sid in ("u-ucoll-1", "u-ucoll-2")]
    assert len({name.lower().split("@")[0] for name in collide}) == 1
    assert [u["sourcedId"] for u in district.users if u["username"] == ""] == ["u-stu-nouser"]


def test_disabled_and_deleted_users(district: DemoDistrict) -> None:
    assert district.find("users", "u-stu-disabled")["enabledUser"] == "false"
    assert [u["sourcedId"] for u in district.users if u["enabledUser"] == "false"] == ["u-stu-disabled"]
    assert district.find("users", "u-stu-left")["status"] == "tobedeleted"
    assert district.find("enrollments", "enr-cls-alg1-p3-u-stu-left")["status"] == "tobedeleted"


def test_enrollment_that_has_ended(district: DemoDistrict) -> None:
    ended = district.find("enrollments", "enr-cls-alg1-p1-u-stu-dropped")

    assert date.fromisoformat(ended["endDate"]) < TODAY
    assert ended["status"] == "active"
    still = enrollments_of(district, "cls-alg1-p3")["u-stu-dropped"]
    assert date.fromisoformat(still["endDate"]) > TODAY
    past = [e["sourcedId"] for e in district.enrollments if date.fromisoformat(e["endDate"]) < TODAY]
    assert past == ["enr-cls-alg1-p1-u-stu-dropped"]


def test_teacher_with_several_classes(district: DemoDistrict) -> None:
    taught = {
        e["class"]["sourcedId"]
        for e in district.enrollments
        if e["user"]["sourcedId"] == "u-tch-multi" and e["role"] == "teacher"
    }

    assert taught == {"cls-alg1-p1", "cls-alg1-p3", "cls-alg1-spring", "cls-future"}


def test_student_in_two_schools(district: DemoDistrict) -> None:
    student = district.find("users", "u-stu-twoschools")
    schools = {
        e["school"]["sourcedId"] for e in district.enrollments if e["user"]["sourcedId"] == "u-stu-twoschools"
    }

    assert [org["sourcedId"] for org in student["orgs"]] == ["org-school-1", "org-school-2"]
    assert schools == {"org-school-1", "org-school-2"}


def test_records_are_well_formed_and_refer_to_existing_records(district: DemoDistrict) -> None:
    ids = {
        entity: {r["sourcedId"] for r in district.records(entity)} for entity in ("orgs", "classes", "users")
    }
    session_ids = {s["sourcedId"] for s in district.academic_sessions}

    for entity in ("orgs", "academicSessions", "classes", "users", "enrollments"):
        records = district.records(entity)
        assert len({r["sourcedId"] for r in records}) == len(records), entity
        assert all(r["status"] in {"active", "tobedeleted"} for r in records)
        assert all(ISO_Z.match(r["dateLastModified"]) for r in records)
    for cls in district.classes:
        assert cls["school"]["sourcedId"] in ids["orgs"]
        assert {t["sourcedId"] for t in cls["terms"]} <= session_ids
    for user in district.users:
        assert user["enabledUser"] in {"true", "false"}
        assert {o["sourcedId"] for o in user["orgs"]} <= ids["orgs"]
    for enrollment in district.enrollments:
        assert enrollment["user"]["sourcedId"] in ids["users"]
        assert enrollment["class"]["sourcedId"] in ids["classes"]
        assert enrollment["primary"] in {"true", "false"}
    assert len(district.users) == 147


def test_same_seed_same_district() -> None:
    first = generate_district(seed=11, today=TODAY)
    second = generate_district(seed=11, today=TODAY)
    other = generate_district(seed=12, today=TODAY)

    assert first == second
    assert [u["sourcedId"] for u in first.users] == [u["sourcedId"] for u in other.users]
    assert [u["givenName"] for u in first.users] != [u["givenName"] for u in other.users]


def test_today_defaults_to_the_current_date() -> None:
    fall = generate_district().find("academicSessions", "as-fall")

    assert (
        date.fromisoformat(fall["startDate"])
        <= datetime.now(UTC).date()
        <= date.fromisoformat(fall["endDate"])
    )


def test_touch_changes_fields_and_stamps_now(fresh_sis: DemoSis) -> None:
    district = fresh_sis.district
    before = district.version

    record = district.touch("classes", "cls-alg1-p1", title="Algebra I (Honors)")

    assert record["title"] == "Algebra I (Honors)"
    stamped = parse_z(record["dateLastModified"])
    assert abs(stamped - datetime.now(UTC)) < timedelta(seconds=5)
    assert district.version == before + 1
    with pytest.raises(KeyError):
        district.touch("classes", "cls-alg1-p1", titel="typo")
    with pytest.raises(KeyError):
        district.find("classes", "no-such-class")


def test_benchmark_size_generates_the_asked_counts() -> None:
    big = generate_district(schools=20, students_per_school=2400, periods=7)

    assert len(big.orgs) == 21
    assert len(big.users) == 50_719
    assert len(big.enrollments) == 349_485
    assert sum(1 for u in big.users if u["role"] == "student") == 20 * 2400 + 10
    assert len({e["sourcedId"] for e in big.enrollments}) == len(big.enrollments)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        generate_district(schools=1)


def test_add_appends_a_new_record_stamped_now(fresh_sis: DemoSis) -> None:
    district = fresh_sis.district
    session = session_for(fresh_sis)
    new_org = {**district.find("orgs", "org-school-2"), "sourcedId": "org-school-new", "name": "New School"}

    district.add("orgs", new_org)

    schools = session.get(f"{fresh_sis.v1p1_url}/schools").json()["orgs"]
    assert schools[-1]["sourcedId"] == "org-school-new"
    assert parse_z(schools[-1]["dateLastModified"]) > datetime.now(UTC) - timedelta(seconds=5)
    with pytest.raises(ValueError):
        district.add("orgs", new_org)
