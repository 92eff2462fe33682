"""The service's requests and responses, exactly as they go over the wire.

Request bodies are validated against these models (unknown fields are errors). The routes
build their JSON directly, for speed, in the shape of the response models here; the tests
check every response they receive against its route's model, and the OpenAPI page is made
from them. Every model forbids extra fields, so a field the routes add but the schema lacks
fails those checks.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

MAX_K = 1000
SESSION_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"

#: A raw item id: an integer (64-bit) or a string; how it finds an item is ItemIndex's rule.
ItemId = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] | Annotated[
    StrictStr, Field(max_length=256)
]
K = Annotated[int, Field(ge=1, le=MAX_K, description="length of the list")]


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
    items: list[ItemId] | None = Field(default=None, max_length=1000)
    prefixes: list[Annotated[list[ItemId], Field(max_length=1000)]] | None = Field(
        default=None, max_length=256
    )
    k: K = 20
    exclude_seen: StrictBool = False


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
