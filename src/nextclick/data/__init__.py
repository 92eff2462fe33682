"""Event data: reading files, item indices, session arrays and dataset recipes."""

from nextclick.data.io import EventColumns, read_events, write_events
from nextclick.data.items import ItemIndex
from nextclick.data.sessions import Encoded, SessionData, encode_sessions

__all__ = [
    "Encoded",
    "EventColumns",
    "ItemIndex",
    "SessionData",
    "encode_sessions",
    "read_events",
    "write_events",
]
