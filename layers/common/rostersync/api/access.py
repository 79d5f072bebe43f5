"""Who may call the API for which district (tenant isolation).

On AWS the API takes IAM auth (SigV4): API Gateway authenticates the caller
and passes its ARN to the function as `requestContext.identity.userArn`
(`arn:aws:iam::ACCT:user/NAME` for an IAM user,
`arn:aws:sts::ACCT:assumed-role/ROLE/SESSION` for a role session). IAM decides
whether the caller may invoke the API at all; this module decides which
districts it may see:

- the operator principal(s) of the deployment (`OperatorPrincipalArn`, env
  `OPERATOR_PRINCIPAL_ARN`, comma-separated) reach every district;
- a district's settings name its own callers in `apiCallers`: IAM role ARNs
  (any session of the role), IAM user ARNs, or one exact role-session ARN.

Everyone else, a caller without an identity included, is refused with 403,
and the answer is the same whether the district exists or not: a caller
learns nothing about a district it may not see.

Pure: no I/O. The API's middleware (`rostersync.api.app`) loads the
district's last good settings and asks `is_allowed`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rostersync.errors import RostersyncError

# IAM names: letters, digits and `+=,.@_-`; paths are `/`-separated.
_NAME = r"[\w+=,.@-]{1,128}"
_PARTITION = r"aws(?:-[a-z]+)*"
_ACCOUNT = r"\d{12}"
_IAM_ENTITY = re.compile(rf"arn:({_PARTITION}):iam::({_ACCOUNT}):(role|user)/(?:{_NAME}/)*({_NAME})")
_ROLE_SESSION = re.compile(rf"arn:({_PARTITION}):sts::({_ACCOUNT}):assumed-role/({_NAME})/({_NAME})")

PRINCIPAL_FORMS = (
    "arn:aws:iam::ACCOUNT:role/NAME (any session of the role), arn:aws:iam::ACCOUNT:user/NAME, "
    "or arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION (that session only)"
)


class ForbiddenError(RostersyncError):
    code = "forbidden"
    http_status = 403


@dataclass(frozen=True)
class Principal:
    partition: str
    account: str
    kind: str  # "role" or "user"
    name: str  # role or user name (unique in its account, whatever its path)
    session: str | None = None  # set for a role session

    def allows(self, caller: Principal) -> bool:
        """Does this allowed entry admit `caller`? A role admits every session
        of it (role names are unique in an account, so the path does not
        matter); a session entry admits that session only; a user admits itself."""
        same = (self.partition, self.account, self.kind, self.name) == (
            caller.partition,
            caller.account,
            caller.kind,
            caller.name,
        )
        return same and (self.session is None or self.session == caller.session)


def parse_principal(arn: str) -> Principal | None:
    """The principal an ARN names, or None when it is not an IAM role, user or
    role session (wildcards, account roots and other services included)."""
    if match := _IAM_ENTITY.fullmatch(arn):
        partition, account, kind, name = match.groups()
        return Principal(partition, account, kind, name)
    if match := _ROLE_SESSION.fullmatch(arn):
        partition, account, name, session = match.groups()
        return Principal(partition, account, "role", name, session)
    return None


def check_principal_arn(value: str) -> str:
    """Settings validator of one `apiCallers` entry."""
    if parse_principal(value) is None:
        raise ValueError(f"{value!r} is not an IAM principal ARN: expected {PRINCIPAL_FORMS}")
    return value


def caller_arn(event: dict[str, Any]) -> str | None:
    """The authenticated caller of an API Gateway REST proxy event
    (`requestContext.identity.userArn`), or None when there is none."""
    context = event.get("requestContext") or {}
    identity = context.get("identity") or {}
    value = identity.get("userArn")
    return value if isinstance(value, str) and value else None


def operator_principals(setting: str) -> tuple[Principal, ...]:
    """The operator entries of `OPERATOR_PRINCIPAL_ARN` (comma-separated);
    an entry that is not a principal ARN is ignored, never widened."""
    parsed = (parse_principal(part.strip()) for part in setting.split(","))
    return tuple(p for p in parsed if p is not None)


def is_allowed(
    caller: str | None, *, operators: Iterable[Principal], district_callers: Iterable[str]
) -> bool:
    """May `caller` use the API of a district whose settings list
    `district_callers` (empty when the district has no settings)?"""
    principal = parse_principal(caller) if caller else None
    if principal is None:
        return False
    entries = [*operators, *(p for p in map(parse_principal, district_callers) if p is not None)]
    return any(entry.allows(principal) for entry in entries)


def for_log(caller: str | None) -> str:
    """The caller as the audit log names it: account, kind and name. A role
    session's name is left out: identity centers often name sessions after
    the person (an email)."""
    principal = parse_principal(caller) if caller else None
    if principal is None:
        return "none" if not caller else "unrecognised principal"
    return f"arn:{principal.partition}:iam::{principal.account}:{principal.kind}/{principal.name}"


def forbidden(district_id: str) -> ForbiddenError:
    # One message for "no such district" and "not yours": no existence oracle.
    return ForbiddenError(f"the caller may not access district {district_id}")
