"""The base class users subclass for a plugin, and the per-request context handed to its hooks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from kxform.errors import KxformError

if TYPE_CHECKING:
    import numpy as np

    from kxform.spec import ModelSpec, TensorSpec
    from kxform.tensors import Outputs

__all__ = ["Context", "Transformer"]

Protocol = Literal["v1", "v2"]


@dataclass(slots=True)
class Context:
    """What a hook knows about the request it serves; ``state`` carries data from preprocess to postprocess."""

    model: ModelSpec  # the predictor model's names, dtypes, shapes, batch size and labels
    protocol: Protocol = "v1"
    request_id: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def labels(self, output: str | int = 0) -> tuple[str, ...]:
        """Class names of a predictor output (by name or ordinal), from the label file in its config."""
        spec = self.model.output(output)
        if spec.name not in self.model.labels:
            raise KxformError(
                f"predictor model '{self.model.name}' declares no label_filename for output '{spec.name}'"
            )
        return self.model.labels[spec.name]


class Transformer:
    """Subclass this, override ``preprocess`` (and usually ``postprocess``), register it as an entry point.

    ``preprocess(instances, ctx)`` receives the request's instances (V1 ``instances`` items, raw
    body bytes, or the elements of the V2 input) and returns one array (the predictor's single
    input), ``{input name or ordinal: array}``, or a ``kxform.Call(args=..., kwargs=...)``: what the
    model's ``forward`` takes, dicts and tuples included, named as the predictor's config names them
    (``ARGS[2][keyA]``, or ``INPUT__2`` by ordinal); the leading axis is the batch. ``postprocess``
    receives ``{output name: array}`` already shaped ``[batch, *dims]`` (a ``kxform.Outputs``:
    with forward-based output names, ``outputs.result`` is the same arrays in the structure the model
    returned, e.g. ``outputs.result["BBB"][0]``) and returns one result per instance (a list) or a
    dict. Either hook may be ``async`` (it then runs on the event loop and must not block it). A sync
    ``preprocess`` runs inline for small requests and on kxform's worker pool for large ones (a large
    body, or a large image or text met by a kxform codec, in which case it is called again on a worker
    thread): it must be thread-safe and free of side effects beyond ``ctx.state``. Sync ``postprocess``
    runs inline unless ``offload_hooks`` is set.
    """

    #: Triton model to call; None means the plugin's own (entry-point) name.
    predictor_model: ClassVar[str | None] = None
    #: What V2 clients send to this transformer (e.g. one BYTES input of encoded images), batch axis left out.
    inputs: ClassVar[tuple[TensorSpec, ...]] = ()
    #: What V2 clients get back, as postprocess returns it (``GET /v2/models/{name}`` shows both).
    outputs: ClassVar[tuple[TensorSpec, ...]] = ()

    #: Always run sync hooks on a worker thread, whatever the request's size: for hooks with heavy CPU
    #: work of their own that kxform's codecs cannot see (small ones are faster inline).
    offload_hooks: ClassVar[bool] = False

    name: str = ""

    def example_request(self) -> dict[str, Any] | None:
        """A V1 request body this plugin answers (``kxform dev`` prints it as a curl line); None: no example."""
        return None

    def setup(self, model: ModelSpec) -> None:
        """Called once the predictor's metadata is known (at start-up, and again after an outage)."""

    def preprocess(self, instances: list[Any], ctx: Context) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement preprocess(instances, ctx)")

    def postprocess(self, outputs: Outputs, ctx: Context) -> Any:
        """Default: per-instance rows (one output) or per-instance dicts (several) for V1; tensors for V2."""
        if ctx.protocol == "v2":
            return outputs
        if len(outputs) == 1:
            return next(iter(outputs.values())).tolist()
        rows: list[dict[str, Any]] = []
        for name, array in outputs.items():
            for index, row in enumerate(_rows(array)):
                if index == len(rows):
                    rows.append({})
                rows[index][name] = row
        return rows


def _rows(array: np.ndarray[Any, Any]) -> list[Any]:
    return list(array.tolist()) if array.ndim else [array.item()]
