"""District settings: defaults, every accepted form, and every refusal naming its key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rostersync.errors import BadRequestError, SettingsError
from rostersync.settings.model import (
    DirectSource,
    DistrictSettings,
    OneRosterCsvSource,
    OneRosterSource,
    PowerSchoolSource,
    RegexRule,
    SettingsRejectedError,
    apply_regex,
    district_from_parameter_name,
    parse_settings,
    settings_parameter_name,
    validate_district_id,
)
from rostersync.settings.schedule import schedule_expression, schedule_name

ONEROSTER = {
    "type": "oneroster",
    "baseUrl": "https://sis.example.org/ims/oneroster/v1p1",
    "version": "1.1",
    "auth": "oauth2",
    "tokenUrl": "https://sis.example.org/oauth/token",
    "credentialsParameter": "/rostersync/districts/lincoln/credentials",
}
SFTP = {
    "host": "sftp.example.org",
    "path": "/exports/oneroster",
    "username": "rostersync",
    "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
}


def doc(**overrides: Any) -> str:
    """A settings document: the SPEC 3 oneroster source plus `overrides`."""
    return json.dumps({"source": ONEROSTER, **overrides})


def rejected(text: str | bytes) -> SettingsRejectedError:
    with pytest.raises(SettingsRejectedError) as caught:
        parse_settings(text)
    return caught.value


def keys_of(error: SettingsRejectedError) -> list[str]:
    return [issue["key"] for issue in error.errors]


# ------------------------------------------------------------------ defaults


def test_every_key_but_source_has_the_spec_default() -> None:
    settings = parse_settings(json.dumps({"source": {"type": "direct"}}))

    assert settings.model_dump(by_alias=True, exclude={"source"}) == {
        "usernameSource": False,
        "usernameRules": [],
        "autoCreateSchools": True,
        "classNameFields": [],
        "dailySyncStart": "02:00",
        "timezone": "America/Chicago",
        "importAdmins": False,
        "roleMapping": {"teacher": "Teacher 1", "aide": "Teacher 2", "administrator": "School Admin"},
        "syncMode": "incremental",
        "maxDeletePercent": 10,
        "futureClassLeadDays": 15,
        # Not in SPEC 3: tenant isolation (README "Security"); none by default.
        "apiCallers": [],
    }


def test_the_spec_example_is_valid_and_round_trips() -> None:
    spec_example = {
        "source": ONEROSTER,
        "usernameSource": False,
        "usernameRules": [],
        "autoCreateSchools": True,
        "classNameFields": [],
        "dailySyncStart": "02:00",
        "timezone": "America/Chicago",
        "importAdmins": False,
        "roleMapping": {"teacher": "Teacher 1", "aide": "Teacher 2", "administrator": "School Admin"},
        "syncMode": "incremental",
        "maxDeletePercent": 10,
        "futureClassLeadDays": 15,
    }

    settings = parse_settings(json.dumps(spec_example))

    assert isinstance(settings.source, OneRosterSource)
    assert settings.source.credentials_parameter == "/rostersync/districts/lincoln/credentials"
    assert parse_settings(settings.to_json()) == settings


def test_source_is_required() -> None:
    error = rejected("{}")
    assert error.errors == [{"key": "source", "message": "required"}]


def test_settings_can_be_built_in_python_by_field_name() -> None:
    settings = DistrictSettings(source=DirectSource(type="direct"), daily_sync_start="06:15")
    assert settings.daily_sync_start == "06:15"


# ------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("source", "model"),
    [
        (ONEROSTER, OneRosterSource),
        ({**ONEROSTER, "version": "1.2"}, OneRosterSource),
        ({**ONEROSTER, "auth": "oauth1", "tokenUrl": None}, OneRosterSource),
        ({k: v for k, v in ONEROSTER.items() if k != "tokenUrl"} | {"auth": "oauth1"}, OneRosterSource),
        ({**ONEROSTER, "pageSize": 1, "maxRequestsPerMinute": 1}, OneRosterSource),
        ({**ONEROSTER, "pageSize": 10_000, "maxRequestsPerMinute": 6000}, OneRosterSource),
        ({"type": "oneroster-csv"}, OneRosterCsvSource),
        ({"type": "oneroster-csv", "sftp": SFTP, "credentialsParameter": "/d/creds"}, OneRosterCsvSource),
        (
            {"type": "oneroster-csv", "sftp": {**SFTP, "port": 2222}, "credentialsParameter": "creds"},
            OneRosterCsvSource,
        ),
        (
            {"type": "powerschool", "baseUrl": "https://ps.example.org", "credentialsParameter": "/p/c"},
            PowerSchoolSource,
        ),
        ({"type": "direct"}, DirectSource),
        ({"type": "direct", "pageSize": 500}, DirectSource),
    ],
)
def test_each_source_form_is_accepted(source: dict[str, Any], model: type) -> None:
    settings = parse_settings(json.dumps({"source": source}))
    assert isinstance(settings.source, model)


def test_sftp_port_defaults_to_22() -> None:
    settings = parse_settings(
        json.dumps({"source": {"type": "oneroster-csv", "sftp": SFTP, "credentialsParameter": "/c"}})
    )
    assert isinstance(settings.source, OneRosterCsvSource)
    assert settings.source.sftp is not None
    assert settings.source.sftp.port == 22
    assert settings.source.sftp.host_key.startswith("ssh-ed25519 ")


def test_oneroster_version_given_as_a_number_is_read_as_text() -> None:
    settings = parse_settings(doc(source={**ONEROSTER, "version": 1.2}))
    assert isinstance(settings.source, OneRosterSource)
    assert settings.source.version == "1.2"


def test_base_url_loses_its_trailing_slash() -> None:
    settings = parse_settings(doc(source={**ONEROSTER, "baseUrl": "https://sis.example.org/ims/"}))
    assert isinstance(settings.source, OneRosterSource)
    assert settings.source.base_url == "https://sis.example.org/ims"


@pytest.mark.parametrize(
    ("source", "key", "words"),
    [
        ({**ONEROSTER, "colour": "red"}, "source.colour", "unknown key"),
        ({"type": "sis"}, "source.type", "unknown source type 'sis'"),
        ({"baseUrl": "https://x"}, "source.type", "required"),
        ({k: v for k, v in ONEROSTER.items() if k != "tokenUrl"}, "source.tokenUrl", "required when auth"),
        ({**ONEROSTER, "tokenUrl": None}, "source.tokenUrl", "required when auth is 'oauth2'"),
        ({**ONEROSTER, "version": "1.3"}, "source.version", "'1.3' is not allowed"),
        ({**ONEROSTER, "auth": "basic"}, "source.auth", "'basic' is not allowed"),
        ({**ONEROSTER, "baseUrl": "ftp://sis.example.org"}, "source.baseUrl", "not an http(s) URL"),
        ({**ONEROSTER, "baseUrl": "sis.example.org"}, "source.baseUrl", "not an http(s) URL"),
        ({**ONEROSTER, "credentialsParameter": "my creds!"}, "source.credentialsParameter", "SSM parameter"),
        ({k: v for k, v in ONEROSTER.items() if k != "baseUrl"}, "source.baseUrl", "required"),
        ({**ONEROSTER, "pageSize": 0}, "source.pageSize", "greater than or equal to 1"),
        ({**ONEROSTER, "pageSize": 10_001}, "source.pageSize", "less than or equal to 10000"),
        ({**ONEROSTER, "maxRequestsPerMinute": 0}, "source.maxRequestsPerMinute", "greater than or equal"),
        ({"type": "oneroster-csv", "sftp": SFTP}, "source.credentialsParameter", "required when sftp"),
        (
            {"type": "oneroster-csv", "sftp": {**SFTP, "password": "x"}, "credentialsParameter": "/c"},
            "source.sftp.password",
            "unknown key",
        ),
        (
            {"type": "oneroster-csv", "sftp": {**SFTP, "port": 70_000}, "credentialsParameter": "/c"},
            "source.sftp.port",
            "less than or equal to 65535",
        ),
        (
            {"type": "oneroster-csv", "sftp": {**SFTP, "hostKey": "yes"}, "credentialsParameter": "/c"},
            "source.sftp.hostKey",
            "public key",
        ),
        (
            {"type": "oneroster-csv", "sftp": {"host": "h"}, "credentialsParameter": "/c"},
            "source.sftp.path",
            "required",
        ),
        ({"type": "powerschool", "credentialsParameter": "/c"}, "source.baseUrl", "required"),
        ({"type": "direct", "baseUrl": "https://x"}, "source.baseUrl", "unknown key"),
        ("oneroster", "source", "expected a JSON object"),
    ],
)
def test_a_bad_source_is_refused_naming_the_key(source: Any, key: str, words: str) -> None:
    error = rejected(json.dumps({"source": source}))

    messages = {issue["key"]: issue["message"] for issue in error.errors}
    assert key in messages, error.errors
    assert words in messages[key]
    assert f"{key}: " in str(error)


# ------------------------------------------------------------ username rules


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "lowercase"},
        {"op": "uppercase"},
        {"op": "stripDomain"},
        {"op": "prefix", "value": "s-"},
        {"op": "suffix", "value": "@students"},
        {"op": "replace", "find": ".", "with": "_"},
        {"op": "truncate", "length": 1},
        {"op": "truncate", "length": 20},
        {"op": "regex", "pattern": "^(\\w+)\\.(\\w+)$", "replacement": "\\2\\1"},
        {"op": "regex", "pattern": "(?P<first>\\w)\\w*", "replacement": "\\g<first>"},
        {"op": "regex", "pattern": "[0-9]+", "replacement": ""},
    ],
)
def test_each_username_rule_is_accepted_and_round_trips(rule: dict[str, Any]) -> None:
    settings = parse_settings(doc(usernameRules=[rule]))

    assert settings.username_rules[0].op == rule["op"]
    assert json.loads(settings.to_json())["usernameRules"] == [rule]


def test_rules_keep_their_order() -> None:
    rules = [{"op": "stripDomain"}, {"op": "lowercase"}, {"op": "truncate", "length": 8}]
    settings = parse_settings(doc(usernameRules=rules))
    assert [rule.op for rule in settings.username_rules] == ["stripDomain", "lowercase", "truncate"]


def test_replace_rule_reads_with_into_with_() -> None:
    settings = parse_settings(doc(usernameRules=[{"op": "replace", "find": ".", "with": "_"}]))
    rule = settings.username_rules[0]
    assert rule.op == "replace"
    assert (rule.find, rule.with_) == (".", "_")


@pytest.mark.parametrize(
    ("pattern", "replacement", "value", "expected"),
    [
        ("^(\\w+)\\.(\\w+)$", "\\2.\\1", "ada.lovelace", "lovelace.ada"),
        ("(?P<first>\\w)\\w*\\.(\\w+)", "\\g<first>\\2", "ada.lovelace", "alovelace"),
        ("[0-9]+", "", "student42x7", "studentx"),
        ("@.*", "", "ada@school.org", "ada"),
        ("a", "é日\\\\", "bab", "bé日\\b"),
        ("(x)?y", "[\\1]", "y", "[]"),
        ("\\d", "#", "٣7", "٣#"),
    ],
)
def test_regex_rule_applies_with_re2_and_expands_groups(
    pattern: str, replacement: str, value: str, expected: str
) -> None:
    rule = RegexRule(op="regex", pattern=pattern, replacement=replacement)

    assert rule.apply(value) == expected
    assert apply_regex(pattern, replacement, value) == expected
    assert rule.compiled.pattern == pattern


def test_regex_rule_compiles_once() -> None:
    rule = RegexRule(op="regex", pattern="ab+c", replacement="")
    assert rule.compiled is RegexRule(op="regex", pattern="ab+c", replacement="x").compiled


@pytest.mark.parametrize(
    ("rule", "key", "words"),
    [
        (
            {"op": "titlecase"},
            "usernameRules[0].op",
            "unknown rule op 'titlecase' (expected one of lowercase",
        ),
        ({"value": "x"}, "usernameRules[0].op", "required (one of lowercase"),
        ({"op": "lowercase", "value": "x"}, "usernameRules[0].value", "unknown key"),
        ({"op": "prefix"}, "usernameRules[0].value", "required"),
        ({"op": "replace", "find": "", "with": "x"}, "usernameRules[0].find", "at least 1 character"),
        ({"op": "replace", "find": "a"}, "usernameRules[0].with", "required"),
        ({"op": "truncate", "length": 0}, "usernameRules[0].length", "greater than or equal to 1"),
        ({"op": "truncate", "length": -3}, "usernameRules[0].length", "greater than or equal to 1"),
        ({"op": "truncate"}, "usernameRules[0].length", "required"),
        ({"op": "regex", "pattern": "(a", "replacement": ""}, "usernameRules[0].pattern", "missing )"),
        ({"op": "regex", "pattern": "[z-a]", "replacement": ""}, "usernameRules[0].pattern", "not a valid"),
        # Backreferences and lookaround need backtracking: RE2 refuses them.
        ({"op": "regex", "pattern": "(a)\\1", "replacement": ""}, "usernameRules[0].pattern", "not a valid"),
        ({"op": "regex", "pattern": "(?=a)", "replacement": ""}, "usernameRules[0].pattern", "not a valid"),
        ({"op": "regex", "pattern": "(a)", "replacement": "\\2"}, "usernameRules[0].replacement", "group 2"),
        (
            {"op": "regex", "pattern": "(a)", "replacement": "\\g<name>"},
            "usernameRules[0].replacement",
            "group 'name'",
        ),
        ({"op": "regex", "pattern": "a", "replacement": "\\n"}, "usernameRules[0].replacement", "escape"),
        ({"op": "regex", "replacement": ""}, "usernameRules[0].pattern", "required"),
        ("lowercase", "usernameRules[0]", "expected a JSON object"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_key(rule: Any, key: str, words: str) -> None:
    error = rejected(doc(usernameRules=[rule]))

    messages = {issue["key"]: issue["message"] for issue in error.errors}
    assert key in messages, error.errors
    assert words in messages[key]


def test_a_bad_rule_is_named_by_its_position() -> None:
    error = rejected(doc(usernameRules=[{"op": "lowercase"}, {"op": "lowercase"}, {"op": "shout"}]))
    assert keys_of(error) == ["usernameRules[2].op"]


def test_rules_must_be_a_list() -> None:
    error = rejected(doc(usernameRules={"op": "lowercase"}))
    assert error.errors == [{"key": "usernameRules", "message": "expected a JSON list"}]


# ------------------------------------------------------- scalar options, good


@pytest.mark.parametrize(
    ("given", "stored"),
    [("00:00", "00:00"), ("02:00", "02:00"), ("23:59", "23:59"), ("7:05", "07:05"), ("12:30", "12:30")],
)
def test_daily_sync_start_accepts_24_hour_times(given: str, stored: str) -> None:
    assert parse_settings(doc(dailySyncStart=given)).daily_sync_start == stored


@pytest.mark.parametrize(
    "zone", ["America/Chicago", "America/New_York", "Europe/London", "Asia/Kolkata", "UTC", "Pacific/Chatham"]
)
def test_timezone_accepts_iana_zones(zone: str) -> None:
    settings = parse_settings(doc(timezone=zone))
    assert settings.timezone == zone
    assert settings.zone.key == zone


@pytest.mark.parametrize(
    "fields",
    [[], ["period"], ["term", "period"], ["period", "term", "classCode", "sourcedId"], ["sourcedId"]],
)
def test_class_name_fields_accepts_ordered_unique_subsets(fields: list[str]) -> None:
    assert parse_settings(doc(classNameFields=fields)).class_name_fields == fields


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {"teacher": "Teacher 1", "aide": "Teacher 2", "administrator": "School Admin"}),
        (
            {"aide": "Teacher 3"},
            {"teacher": "Teacher 1", "aide": "Teacher 3", "administrator": "School Admin"},
        ),
        (
            {"teacher": "Teacher 2", "administrator": "District Admin"},
            {"teacher": "Teacher 2", "aide": "Teacher 2", "administrator": "District Admin"},
        ),
        ({"aide": "Student"}, {"teacher": "Teacher 1", "aide": "Student", "administrator": "School Admin"}),
    ],
)
def test_role_mapping_merges_with_the_defaults(given: dict[str, str], expected: dict[str, str]) -> None:
    settings = parse_settings(doc(roleMapping=given))

    assert settings.role_mapping.model_dump() == expected
    assert settings.role_mapping.for_role("aide") == expected["aide"]


@pytest.mark.parametrize(
    "options",
    [
        {"usernameSource": True},
        {"autoCreateSchools": False},
        {"importAdmins": True},
        {"syncMode": "full"},
        {"syncMode": "incremental"},
        {"maxDeletePercent": 0},
        {"maxDeletePercent": 100},
        {"maxDeletePercent": 2.5},
        {"futureClassLeadDays": 0},
        {"futureClassLeadDays": 365},
    ],
)
def test_scalar_options_are_accepted(options: dict[str, Any]) -> None:
    settings = parse_settings(doc(**options))
    dumped = settings.model_dump(by_alias=True)
    for key, value in options.items():
        assert dumped[key] == value


# -------------------------------------------------------- scalar options, bad


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"daily_sync_start_time": "02:00"}, "daily_sync_start_time", "unknown key"),
        ({"dailySyncStart": "25:00"}, "dailySyncStart", "'25:00' is not a 24-hour time HH:MM"),
        ({"dailySyncStart": "24:00"}, "dailySyncStart", "not a 24-hour time"),
        ({"dailySyncStart": "2:00am"}, "dailySyncStart", "not a 24-hour time"),
        ({"dailySyncStart": "02:60"}, "dailySyncStart", "not a 24-hour time"),
        ({"dailySyncStart": "0200"}, "dailySyncStart", "not a 24-hour time"),
        ({"dailySyncStart": ""}, "dailySyncStart", "not a 24-hour time"),
        ({"dailySyncStart": 2}, "dailySyncStart", "valid string"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone 'Mars/Olympus'"),
        ({"timezone": "america/chicago"}, "timezone", "did you mean 'America/Chicago'"),
        ({"timezone": "CST"}, "timezone", "unknown time zone"),
        ({"timezone": "../../etc/passwd"}, "timezone", "unknown time zone"),
        ({"timezone": ""}, "timezone", "unknown time zone"),
        ({"roleMapping": {"principal": "School Admin"}}, "roleMapping.principal", "unknown role 'principal'"),
        ({"roleMapping": {"teacher": "Teacher 4"}}, "roleMapping.teacher", "unknown role 'Teacher 4'"),
        ({"roleMapping": {"aide": "teacher 1"}}, "roleMapping.aide", "expected one of Student, Teacher 1"),
        ({"classNameFields": ["room"]}, "classNameFields[0]", "'room' is not allowed"),
        ({"classNameFields": ["period", "Term"]}, "classNameFields[1]", "'Term' is not allowed"),
        ({"classNameFields": ["period", "term", "period"]}, "classNameFields", "'period' is listed more"),
        ({"classNameFields": "period"}, "classNameFields", "expected a JSON list"),
        ({"syncMode": "partial"}, "syncMode", "'partial' is not allowed (expected 'incremental' or 'full')"),
        ({"maxDeletePercent": -1}, "maxDeletePercent", "greater than or equal to 0"),
        ({"maxDeletePercent": 101}, "maxDeletePercent", "less than or equal to 100 (got 101)"),
        ({"futureClassLeadDays": 366}, "futureClassLeadDays", "less than or equal to 365"),
        ({"futureClassLeadDays": -1}, "futureClassLeadDays", "greater than or equal to 0"),
        ({"futureClassLeadDays": 1.5}, "futureClassLeadDays", "integer"),
        ({"importAdmins": "maybe"}, "importAdmins", "valid boolean"),
        ({"usernameSource": []}, "usernameSource", "valid boolean"),
    ],
)
def test_a_bad_option_is_refused_naming_the_key(options: dict[str, Any], key: str, words: str) -> None:
    error = rejected(doc(**options))

    assert keys_of(error) == [key]
    assert words in error.errors[0]["message"]
    assert str(error).startswith(f"settings rejected: {key}: ")


# ---------------------------------------------------------- JSON and messages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"source": ', "settings rejected: not valid JSON (line 1, column 12): Expecting value"),
        ("{'source': 1}", "settings rejected: not valid JSON (line 1, column 2)"),
        ('{\n  "source": {"type": "direct"},\n}', "settings rejected: not valid JSON (line 3, column 1)"),
        ("", "settings rejected: not valid JSON (line 1, column 1)"),
        ("[]", "settings rejected: expected a JSON object"),
        ('"settings"', "settings rejected: expected a JSON object"),
        (
            '{"source": {"type": "direct"}, "timezone": "UTC", "timezone": "UTC"}',
            "settings rejected: timezone: given",
        ),
    ],
)
def test_text_that_is_not_a_settings_object_is_refused(text: str, message: str) -> None:
    assert str(rejected(text)).startswith(message)


def test_bytes_are_read_as_utf8_with_or_without_bom() -> None:
    text = doc(timezone="UTC").encode()
    assert parse_settings(text).timezone == "UTC"
    assert parse_settings(b"\xef\xbb\xbf" + text).timezone == "UTC"
    assert str(rejected(b"\xff\xfe")) == "settings rejected: not valid UTF-8 text"


def test_the_message_lists_every_bad_key_in_document_order() -> None:
    text = json.dumps(
        {
            "source": {"type": "direct", "colour": "x"},
            "usernameRules": [{"op": "lowercase"}, {"op": "titlecase"}],
            "dailySyncStart": "25:00",
            "timezone": "Mars/Olympus",
            "colour": "red",
        }
    )

    error = rejected(text)

    assert keys_of(error) == [
        "source.colour",
        "usernameRules[1].op",
        "dailySyncStart",
        "timezone",
        "colour",
    ]
    assert str(error) == (
        "settings rejected: source.colour: unknown key; "
        "usernameRules[1].op: unknown rule op 'titlecase' (expected one of lowercase, uppercase, "
        "stripDomain, prefix, suffix, replace, truncate, regex); "
        "dailySyncStart: '25:00' is not a 24-hour time HH:MM (for example '02:00' or '17:30'); "
        "timezone: unknown time zone 'Mars/Olympus' (expected an IANA name such as 'America/Chicago'); "
        "colour: unknown key"
    )


def test_the_refusal_is_a_settings_error_with_structured_errors() -> None:
    error = rejected(doc(timezone="Mars/Olympus"))

    assert isinstance(error, SettingsError)
    assert error.code == "invalid_settings"
    assert error.errors == [
        {
            "key": "timezone",
            "message": "unknown time zone 'Mars/Olympus' (expected an IANA name such as 'America/Chicago')",
        }
    ]


def test_an_unknown_key_is_named_but_its_value_never_shown() -> None:
    error = rejected(doc(password="hunter2"))
    assert "hunter2" not in str(error)


def test_a_regex_with_braces_is_reported_verbatim() -> None:
    error = rejected(doc(usernameRules=[{"op": "regex", "pattern": "a{2}(", "replacement": ""}]))
    assert error.errors[0]["key"] == "usernameRules[0].pattern"
    assert "{reason}" not in str(error)


# -------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("start", "expression"),
    [
        ("02:00", "cron(0 2 * * ? *)"),
        ("00:00", "cron(0 0 * * ? *)"),
        ("23:59", "cron(59 23 * * ? *)"),
        ("06:30", "cron(30 6 * * ? *)"),
        ("7:05", "cron(5 7 * * ? *)"),
        ("17:45", "cron(45 17 * * ? *)"),
    ],
)
def test_schedule_expression_runs_daily_at_the_sync_start(start: str, expression: str) -> None:
    assert schedule_expression(parse_settings(doc(dailySyncStart=start))) == expression


def test_schedule_name_is_prefixed_district_id() -> None:
    assert schedule_name("lincoln") == "rostersync-lincoln"


# ---------------------------------------------------------- parameter names


@pytest.mark.parametrize(
    ("name", "district"),
    [
        ("/rostersync/districts/lincoln/settings", "lincoln"),
        ("/rostersync/districts/D-42_x/settings", "D-42_x"),
        ("/rostersync/districts/lincoln/credentials", None),
        ("/rostersync/districts/lincoln/settings/old", None),
        ("/rostersync/districts/lincoln", None),
        ("/rostersync/districts//settings", None),
        ("/rostersync/districts/-bad/settings", None),
        ("/rostersync/districts/a b/settings", None),
        ("/other/districts/lincoln/settings", None),
        ("rostersync/districts/lincoln/settings", None),
        ("/rostersync/districts/lincoln/settings\n", None),
        ("", None),
    ],
)
def test_district_from_parameter_name(name: str, district: str | None) -> None:
    assert district_from_parameter_name(name) == district


def test_parameter_name_round_trips() -> None:
    name = settings_parameter_name("lincoln")
    assert name == "/rostersync/districts/lincoln/settings"
    assert district_from_parameter_name(name) == "lincoln"


def test_parameter_names_follow_a_configured_prefix() -> None:
    assert settings_parameter_name("lincoln", prefix="/test/") == "/test/lincoln/settings"
    assert district_from_parameter_name("/test/lincoln/settings", prefix="/test/") == "lincoln"
    assert district_from_parameter_name("/rostersync/districts/lincoln/settings", prefix="/test/") is None


@pytest.mark.parametrize("district_id", ["lincoln", "L", "9", "d-1_2", "a" * 53])
def test_valid_district_ids(district_id: str) -> None:
    assert validate_district_id(district_id) == district_id


@pytest.mark.parametrize(
    "district_id",
    # 54 characters would make `rostersync-{id}` longer than Scheduler's 64-character limit.
    ["", "-lincoln", "_x", "a b", "lincoln/x", "lincoln\n", "é", "a" * 54, "../x"],
)
def test_invalid_district_ids(district_id: str) -> None:
    with pytest.raises(BadRequestError, match="invalid district id"):
        validate_district_id(district_id)
