"""The template's Lambda handlers, loaded in-process (moto cannot run Lambda without Docker)."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# layers/common/rostersync/local/functions.py → the repository root.
REPO_ROOT = Path(__file__).resolve().parents[4]

Handler = Callable[[dict[str, Any], Any], Any]


class LocalContext:
    """What powertools and the handlers read of a Lambda context."""

    def __init__(self, function_name: str, timeout_s: int = 900) -> None:
        import time

        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 1024
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def load_handler(function_dir: str, root: Path = REPO_ROOT) -> Handler:
    """Import functions/<dir>/app.py under a unique module name and return its lambda_handler."""
    path = root / "functions" / function_dir / "app.py"
    spec = importlib.util.spec_from_file_location(f"rostersync_fn_{function_dir}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler  # type: ignore[no-any-return]
