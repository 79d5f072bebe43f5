"""Settings function: a district's settings parameter changed in SSM.

Validates the new settings and creates, updates or deletes the district's
schedule; a refused change leaves the last good settings in force.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from rostersync import aws
from rostersync.config import get_config
from rostersync.pipeline.settings_change import ParameterChangeEvent, handle_parameter_change

logger = Logger(service="rostersync")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    change = parse(event=event, model=ParameterChangeEvent)
    outcome = handle_parameter_change(
        change.detail.name,
        change.detail.operation,
        ssm=aws.client("ssm"),
        scheduler=aws.client("scheduler"),
        config=get_config(),
    )
    return outcome.model_dump(by_alias=True)
