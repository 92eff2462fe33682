"""The service's requests and responses, exactly as they go over the wire.

Request bodies are validated against these models (unknown fields are errors). The routes
build their JSON directly, for speed, in the shape of the response models here; the tests
check every response they receive against its route's model, and the OpenAPI page is made
from them. Every model forbids extra fields, so a field the routes add but the schema lacks
fails those checks.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

MAX_K = 1000
SESSION_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"


def _json_integer(value: Any) -> Any:
    # JSON Schema's integers include 201.0 but neither true nor "201"; pydantic's lax int
    # takes all three, its strict int only the first.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected an integer")
    return value


JSON_INT = BeforeValidator(_json_integer)  # 201 or 201.0; not true, not "201"


def _one_message(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:  # one message for the union, not one per member
        raise ValueError(
            "expected an item id: an integer (below 2^53 in size; larger ones as strings) "
            "or a string of at most 256 characters"
        ) from None


#: A raw item id: an integer that JSON numbers hold exactly (|id| < 2^53; larger ones can
#: be sent as strings of digits) or a string; how it finds an item is ItemIndex's rule.
ItemId = Annotated[
    Annotated[int, Field(ge=-(2**53 - 1), le=2**53 - 1), JSON_INT]
    | Annotated[StrictStr, Field(max_length=256)],
    WrapValidator(_one_message),
]
K = Annotated[int, Field(ge=1, le=MAX_K, description="length of the list"), JSON_INT]
Prefix = Annotated[list[ItemId], Field(max_length=1000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -----------------------------------------------------------------------------------


class ClickBody(Strict):
    item_id: ItemId
    k: K = 20
    exclude_seen: StrictBool = False
    exclude: list[ItemId] = Field(default_factory=list, max_length=1000)
    event_id: Annotated[str, Field(pattern=SESSION_ID)] | None = Field(
        default=None,
        description="the client's id of this click: a retry with the same id is recorded "
        "once (the session remembers its last 50)",
    )


class RecommendBody(Strict):
    """One prefix (``items``) or several (``prefixes``), not both."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["items"]}, {"required": ["prefixes"]}]}
    )

    items: Prefix | SkipJsonSchema[None] = None
    prefixes: Annotated[list[Prefix], Field(max_length=256)] | SkipJsonSchema[None] = None
    k: K = 20
    exclude_seen: StrictBool = False

    @model_validator(mode="after")
    def _one_of(self) -> RecommendBody:
        if (self.items is None) == (self.prefixes is None):
            raise ValueError("give either items (one prefix) or prefixes (a list)")
        return self


class ReloadBody(Strict):
    model_dir: str | None = None


# -- responses ----------------------------------------------------------------------------------


class ScoredItem(Strict):
    item_id: ItemId
    score: float


class Recommendations(Strict):
    items: list[ScoredItem] = Field(
        description="best first, ties by the model's item order; never an item the model "
        "has no evidence for, so the list may be shorter than k"
    )
    model_version: str


class SessionAnswer(Recommendations):
    session_id: str
    clicks: int = Field(description="clicks recorded in the session")


class ClickAnswer(SessionAnswer):
    unknown_item: bool = Field(description="the item is not in the model: state not advanced")
    duplicate: bool = Field(description="a retry of a recorded event_id: nothing recorded")


class PrefixAnswer(Recommendations):
    unknown_items: list[ItemId]


class PrefixesAnswer(Strict):
    results: list[PrefixAnswer]
    model_version: str


class SessionView(Strict):
    session_id: str
    clicks: int
    items: list[ItemId] = Field(description="the recent clicks' item ids, oldest first")
    state_version: str = Field(description="model version of the stored state ('' for none)")


class Deleted(Strict):
    session_id: str
    deleted: bool


class PopularItem(Strict):
    item_id: ItemId
    clicks: int


class PopularItems(Strict):
    items: list[PopularItem]
    n_items: int
    model: str
    model_version: str


class Reloaded(Strict):
    previous_version: str
    model_version: str
    model_dir: str
    announced: bool | None = Field(
        default=None, description="with Redis: whether the other replicas were told"
    )
    warning: str | None = None


class Health(Strict):
    status: str


class Ready(Strict):
    status: str
    model_version: str
    state: str
    pid: int


class ErrorBody(Strict):
    error: str
