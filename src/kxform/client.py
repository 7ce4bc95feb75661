"""``kxform infer``: a V1 request from files, sent to a running transformer with the standard library."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kxform.errors import RequestError

__all__ = ["predict_files", "request_from_files"]


def request_from_files(files: Sequence[Path]) -> dict[str, Any]:
    """One JSON file is the request body itself; otherwise each file is an image instance."""
    if len(files) == 1 and files[0].suffix.lower() == ".json":
        body = json.loads(files[0].read_text())
        if not isinstance(body, dict):
            raise RequestError(f"{files[0]} holds {type(body).__name__}; a request body is a JSON object")
        return body
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise RequestError(f"no such file: {', '.join(missing)}")
    return {"instances": [{"image_bytes": {"b64": base64.b64encode(f.read_bytes()).decode()}} for f in files]}


def predict_files(url: str, model: str, files: Sequence[Path], timeout: float = 60.0) -> tuple[int, str]:
    """POST the request to ``{url}/v1/models/{model}:predict``; the status and the pretty-printed reply."""
    body = json.dumps(request_from_files(files)).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/models/{model}:predict", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        raise RequestError(f"no transformer answers at {url}: {exc.reason}; is `kxform serve` running?") from exc
    try:
        return status, json.dumps(json.loads(text), indent=2)
    except json.JSONDecodeError:
        return status, text
