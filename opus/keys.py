"""Every object the app shares, reached through one typed key declared here."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from opus.auth import Signer
from opus.catalog import Catalog
from opus.config import Settings
from opus.db import Database
from opus.hub import Hub
from opus.identity import ClientAddresses, IdentityLimits
from opus.ingest import Ingest
from opus.ledger import Ledger
from opus.live import Broadcaster
from opus.metrics import Metrics
from opus.notifications import Notifier
from opus.queue import VoteQueue
from opus.replication import Replication
from opus.rooms import Rooms
from opus.venue import Box, Venue
from opus.views.templates import Templates

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
NODE_ID = web.AppKey("node_id", str)
ADMIN_TOKEN = web.AppKey("admin_token", str)
SIGNER = web.AppKey("signer", Signer)
DB = web.AppKey("db", Database)
QUEUE = web.AppKey("queue", VoteQueue)
HUB = web.AppKey("hub", Hub)
CATALOG = web.AppKey("catalog", Catalog)
LEDGER = web.AppKey("ledger", Ledger)
ROOMS = web.AppKey("rooms", Rooms)
ADDRESSES = web.AppKey("addresses", ClientAddresses)  # who a request comes from
IDENTITIES = web.AppKey("identities", IdentityLimits)
INGEST = web.AppKey("ingest", Ingest)
BROADCASTER = web.AppKey("broadcaster", Broadcaster)
NOTIFIER = web.AppKey("notifier", Notifier)
TEMPLATES = web.AppKey("templates", Templates)
PAGE_SECRET = web.AppKey("page_secret", bytes)  # signs host sessions and CSRF tokens
SOURCE = web.AppKey("source", str)  # the `source` of this box's events: its venue name, or NODE_ID
VENUE = web.AppKey("venue", Venue)  # only in a venue of several boxes
BOX = web.AppKey("box", Box)
REPLICATION = web.AppKey("replication", Replication)
# Called after every commit that wrote events: wakes the relay (and the venue's publisher).
COMMITTED = web.AppKey[Callable[[], None]]("committed")
ON_COMMIT = web.AppKey[list[Callable[[], None]]]("on_commit")
# Votes committed: {(room id, poll id): how many}, for the screens (live.Broadcaster).
ON_VOTES = web.AppKey[Callable[[dict[tuple[str, str], int]], None]]("on_votes")
